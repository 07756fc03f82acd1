"""``GET /oidc/auth``: the entry point nginx sends token-less room requests to."""

from __future__ import annotations

from datetime import timedelta

from adapters.base import AuthorizationParams
from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler
from gateway.idps import ConfiguredIdP
from gateway.jitsi_state import MAX_STATE, room_from_state
from gateway.oidc.pkce import random_token, s256_challenge
from gateway.rooms import room_link
from gateway.routing import eligible_idps, idp_for_email
from gateway.store.flows import Flow


class AuthHandler(GatewayHandler):
    async def get(self) -> None:
        room: str | None = None
        tenant: str | None = None
        idp: ConfiguredIdP | None = None
        idp_id: str | None = None
        try:
            idp_id = self.param("idp", 64)
            jitsi_state = self.param("state", MAX_STATE)
            if jitsi_state is not None:  # Jitsi's login button: tokenAuthUrl with {state}
                room, tenant = room_from_state(jitsi_state, self.param("room", 256))
            else:
                room, tenant = self.room_and_tenant()
            login_hint = self.param("login_hint", 254)
            eligible = eligible_idps(self.gateway.idps.values(), room, tenant)
            identity = await self.current_identity()
            if identity is not None and identity.idp in {i.id for i in eligible}:
                self.redirect(room_link("/oidc/tokenize", room, tenant))
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
                self.render_chooser(room, tenant, eligible, login_hint, confirm=True)
                return
            if idp is None and len(eligible) == 1:
                idp = eligible[0]
            elif idp is None and not eligible:
                raise GatewayError("idp_unknown", "no configured IdP serves this room")
            elif idp is None:
                self.render_chooser(room, tenant, eligible, login_hint)
                return
            await self.start_flow(idp, room, tenant, login_hint)
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
        confirm: bool = False,
    ) -> None:
        choices = [
            (idp.id, idp.config.label, room_link("/oidc/auth", room, tenant, idp=idp.id))
            for idp in eligible
        ]
        self.render(
            "chooser.html",
            room=room,
            tenant=tenant,
            choices=choices,
            login_hint=login_hint or "",
            show_email=any(i.config.email_domains for i in eligible),
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
        self, idp: ConfiguredIdP, room: str, tenant: str | None, login_hint: str | None
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
