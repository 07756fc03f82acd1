"""``GET /oidc/redirect``: the IdP's answer. State first, then code, then identity."""

from __future__ import annotations

import re
from datetime import timedelta

from adapters.base import AdapterError, IdentityEnricher
from gateway.errors import GatewayError
from gateway.handlers.auth import tokenize_url
from gateway.handlers.base import GatewayHandler
from gateway.oidc.pkce import random_token
from gateway.store.flows import Flow

ERROR_CODE = re.compile(r"[a-z_]{1,64}")


class CallbackHandler(GatewayHandler):
    async def get(self) -> None:
        flow: Flow | None = None
        try:
            state = self.param("state", 512)
            if not state:
                raise GatewayError("state_invalid", "callback without state")
            binding = self.read_gateway_cookie(self.gateway.settings.cookies.flow_name, 1)
            # Consume before anything else: a refused state never reaches the token endpoint.
            flow = await self.gateway.store.flows.consume(state, binding, self.gateway.now())
            await self.finish_login(flow)
        except GatewayError as exc:
            await self.refuse(
                exc,
                idp=flow.idp if flow else None,
                room=flow.room if flow else None,
                tenant=flow.tenant if flow else None,
            )

    async def finish_login(self, flow: Flow) -> None:
        idp = self.gateway.idps.get(flow.idp)
        if idp is None:
            raise GatewayError("idp_unknown", f"flow names idp {flow.idp!r}, no longer configured")
        meta = await idp.rp.metadata()
        iss = self.param("iss", 1024)  # RFC 9207: checked on error responses too
        if iss is not None and iss != meta.issuer:
            raise GatewayError("issuer_mismatch", f"{idp.id}: iss parameter names another issuer")
        if iss is None and meta.iss_parameter_supported:
            raise GatewayError("issuer_mismatch", f"{idp.id}: advertised iss parameter missing")
        error = self.param("error", 256)
        if error is not None:
            code = error if ERROR_CODE.fullmatch(error) else "malformed"
            raise GatewayError("idp_error", f"{idp.id}: error={code}")
        code = self.param("code", 2048)
        if not code:
            raise GatewayError("bad_request", "callback without code")
        settings = self.gateway.settings
        tokens = await idp.rp.redeem(
            code,
            code_verifier=flow.code_verifier,
            redirect_uri=settings.redirect_uri,
            nonce=flow.nonce,
        )
        userinfo = None
        if idp.config.userinfo:
            userinfo = await idp.rp.userinfo(tokens.access_token, tokens.claims["sub"])
        try:
            identity = idp.adapter.identity(tokens.claims, userinfo)
            if isinstance(idp.adapter, IdentityEnricher):
                identity = await idp.adapter.enrich(identity, tokens.access_token)
        except AdapterError as exc:
            raise GatewayError("claims_invalid", f"{idp.id}: {exc.reason}: {exc}") from None
        session_id = random_token()  # always fresh: never reuse an id from before login
        now = self.gateway.now()
        lifetime = settings.session.lifetime_seconds
        sid = tokens.claims.get("sid")
        await self.gateway.store.sessions.create(
            session_id,
            identity,
            created_at=now,
            expires_at=now + timedelta(seconds=lifetime),
            idp_session_id=sid if isinstance(sid, str) else None,
            id_token=tokens.id_token,
        )
        self.set_gateway_cookie(settings.cookies.session_name, session_id, max_age=lifetime)
        await self.audit(
            "login_succeeded",
            "success",
            identity=identity,
            room=flow.room,
            tenant=flow.tenant,
            session_id=session_id,
        )
        self.redirect(tokenize_url(flow.room, flow.tenant))
