"""``GET /oidc/auth``: the entry point nginx sends token-less room requests to."""

from __future__ import annotations

from datetime import timedelta

from adapters.base import AuthorizationParams, Identity
from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler
from gateway.idps import ConfiguredIdP
from gateway.jitsi_state import MAX_STATE, JitsiState, parse_state, state_param
from gateway.oidc.pkce import random_token, s256_challenge
from gateway.rooms import room_link
from gateway.routing import eligible_idps, idp_for_email
from gateway.store.flows import Flow


class AuthHandler(GatewayHandler):
    """Room request in, IdP sign-in (or a live session) out. Subclasses (the token
    service's ``/oidc/authorize``) change what a live session leads to and where the
    callback continues; the IdP choice and the flow are the same."""

    entry_path = "/oidc/auth"

    def parse_request(self) -> tuple[str, str | None, JitsiState | None]:
        raw_state = self.param("state", MAX_STATE)
        if raw_state is not None:  # Jitsi's login button: tokenAuthUrl with {state}
            state = parse_state(raw_state, self.param("room", 256))
            return state.room, state.tenant, state
        room, tenant = self.room_and_tenant()
        return room, tenant, None

    async def with_session(
        self, identity: Identity, room: str, tenant: str | None, state: JitsiState | None
    ) -> None:
        """A live session of an eligible IdP: single sign-on, no IdP round trip."""
        self.redirect(room_link("/oidc/tokenize", room, tenant, **state_param(state)))

    def entry_link(self, room: str, tenant: str | None, state: JitsiState | None, **kw: str) -> str:
        """This entry point again with more parameters (the chooser's links)."""
        return room_link(self.entry_path, room, tenant, **state_param(state), **kw)

    def hidden_fields(
        self, room: str, tenant: str | None, state: JitsiState | None
    ) -> list[tuple[str, str]]:
        """What the chooser's e-mail form sends back to this entry point."""
        fields = [("room", room)] + ([("tenant", tenant)] if tenant else [])
        return fields + list(state_param(state).items())

    def return_to(self) -> str | None:
        """Where the callback continues after sign-in (None: ``/oidc/tokenize``)."""
        return None

    async def get(self) -> None:
        room: str | None = None
        tenant: str | None = None
        idp: ConfiguredIdP | None = None
        idp_id: str | None = None
        state: JitsiState | None = None
        try:
            idp_id = self.param("idp", 64)
            room, tenant, state = self.parse_request()
            login_hint = self.param("login_hint", 254)
            eligible = eligible_idps(self.gateway.idps.values(), room, tenant)
            identity = await self.current_identity()
            if identity is not None and identity.idp in {i.id for i in eligible}:
                await self.with_session(identity, room, tenant, state)
                return
            if idp_id is not None:
                idp = next((i for i in eligible if i.id == idp_id), None)
                if idp is None:
                    raise GatewayError("idp_unknown", f"idp {idp_id!r} does not serve this room")
            elif login_hint and (found := idp_for_email(eligible, login_hint)):
                idp = found
            if idp is not None and len(eligible) > 1 and self.cross_site_navigation():
                # Login CSRF: a link on another site must not pick the IdP (and so, where
                # that IdP signs in silently, the account). The person confirms with a click.
                await self.audit("idp_choice_confirm", "info", idp=idp.id, room=room, tenant=tenant)
                self.render_chooser(room, tenant, eligible, login_hint, state, confirm=True)
                return
            if idp is None and len(eligible) == 1:
                idp = eligible[0]
            elif idp is None and not eligible:
                raise GatewayError("idp_unknown", "no configured IdP serves this room")
            elif idp is None:
                self.render_chooser(room, tenant, eligible, login_hint, state)
                return
            await self.start_flow(idp, room, tenant, login_hint, state)
        except GatewayError as exc:
            # Attributed to the IdP the request named when it is configured (an attack on
            # ``corp`` is found by ``--idp corp``); any other name is kept as requested_idp.
            named = idp.id if idp else idp_id if idp_id in self.gateway.idps else None
            await self.refuse(
                exc,
                idp=named,
                room=room,
                tenant=tenant,
                requested_idp=idp_id if idp_id and named is None else None,
            )

    def render_chooser(
        self,
        room: str,
        tenant: str | None,
        eligible: list[ConfiguredIdP],
        login_hint: str | None,
        state: JitsiState | None,
        confirm: bool = False,
    ) -> None:
        choices = [
            (idp.id, idp.config.label, self.entry_link(room, tenant, state, idp=idp.id))
            for idp in eligible
        ]
        self.render(
            "chooser.html",
            room=room,
            tenant=tenant,
            choices=choices,
            login_hint=login_hint or "",
            show_email=any(i.config.email_domains for i in eligible),
            entry_path=self.entry_path,
            hidden=self.hidden_fields(room, tenant, state),
            unknown_domain=bool(login_hint) and not confirm,
            confirm=confirm,
        )

    def cross_site_navigation(self) -> bool:
        """Whether the browser says this request came from another site (Fetch Metadata).

        ``same-origin`` (the chooser's own buttons and form) and ``none`` (typed, bookmarked)
        are trusted; ``same-site`` is not (sibling subdomains are other parties, as for the
        ``__Host-`` cookies). Without the header (old browsers, scripts) the link is followed.
        """
        site = self.request.headers.get("Sec-Fetch-Site")
        return site is not None and site not in ("same-origin", "none")

    async def start_flow(
        self,
        idp: ConfiguredIdP,
        room: str,
        tenant: str | None,
        login_hint: str | None,
        state_in: JitsiState | None,
    ) -> None:
        settings = self.gateway.settings
        meta = await idp.rp.metadata()
        state, nonce, verifier = random_token(), random_token(), random_token(48)
        cookie_name = settings.cookies.flow_name
        binding = self.read_gateway_cookie(cookie_name, 1) or random_token()
        now = self.gateway.now()
        lifetime = settings.session.flow_lifetime_seconds
        flow = Flow(
            idp=idp.id,
            room=room,
            tenant=tenant,
            nonce=nonce,
            code_verifier=verifier,
            jitsi_state=state_in.compact() if state_in else None,
            return_to=self.return_to(),
            created_at=now,
            expires_at=now + timedelta(seconds=lifetime),
        )
        await self.gateway.store.flows.create(state, binding, flow)
        self.set_gateway_cookie(cookie_name, binding, max_age=lifetime)
        extra: dict[str, str] = {}
        if isinstance(idp.adapter, AuthorizationParams):
            extra |= idp.adapter.authorization_params(login_hint)
        if login_hint:
            extra["login_hint"] = login_hint
        url = idp.rp.authorization_url(
            meta,
            redirect_uri=settings.redirect_uri(idp.id),
            state=state,
            nonce=nonce,
            code_challenge=s256_challenge(verifier),
            extra=extra,
        )
        await self.audit("flow_started", "success", idp=idp.id, room=room, tenant=tenant)
        self.redirect(url)
