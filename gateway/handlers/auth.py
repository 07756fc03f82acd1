"""``GET /oidc/auth``: the entry point nginx sends token-less room requests to."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from adapters.base import AuthorizationParams
from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler
from gateway.idps import ConfiguredIdP
from gateway.oidc.pkce import random_token, s256_challenge
from gateway.store.flows import Flow


class AuthHandler(GatewayHandler):
    async def get(self) -> None:
        room: str | None = None
        tenant: str | None = None
        idp: ConfiguredIdP | None = None
        try:
            room, tenant = self.room_and_tenant()
            idp_id = self.param("idp", 64)
            login_hint = self.param("login_hint", 254)
            if self.session_id() and await self.gateway.store.sessions.get(
                self.session_id() or "", self.gateway.now()
            ):
                self.redirect(tokenize_url(room, tenant))
                return
            if idp_id is not None:
                idp = self.gateway.idps.get(idp_id)
                if idp is None:
                    raise GatewayError("idp_unknown", f"idp {idp_id!r} is not configured")
            elif len(self.gateway.idps) == 1:
                idp = next(iter(self.gateway.idps.values()))
            else:
                self.render_chooser(room, tenant)
                return
            await self.start_flow(idp, room, tenant, login_hint)
        except GatewayError as exc:
            await self.refuse(exc, idp=idp.id if idp else None, room=room, tenant=tenant)

    def render_chooser(self, room: str, tenant: str | None) -> None:
        choices = []
        for idp in self.gateway.idps.values():
            query = {"room": room, **({"tenant": tenant} if tenant else {}), "idp": idp.id}
            choices.append((idp.id, idp.config.label, "/oidc/auth?" + urlencode(query)))
        self.render("chooser.html", room=room, choices=choices)

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
            redirect_uri=settings.redirect_uri,
            state=state,
            nonce=nonce,
            code_challenge=s256_challenge(verifier),
            extra=extra,
        )
        await self.audit("flow_started", "success", idp=idp.id, room=room, tenant=tenant)
        self.redirect(url)


def tokenize_url(room: str, tenant: str | None) -> str:
    return "/oidc/tokenize?" + urlencode({"room": room, **({"tenant": tenant} if tenant else {})})
