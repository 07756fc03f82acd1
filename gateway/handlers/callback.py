"""``GET /oidc/redirect/<idp>``: the IdP's answer. State first, then code, then identity."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from adapters.base import AccessDenied, AdapterError, Identity, IdentityEnricher
from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler
from gateway.http import UpstreamError
from gateway.jitsi_state import state_param
from gateway.oidc.metadata import issuer_matches
from gateway.oidc.pkce import random_token
from gateway.rooms import room_link
from gateway.store.flows import Flow

log = logging.getLogger(__name__)

ERROR_CODE = re.compile(r"[a-z_]{1,64}")


class CallbackHandler(GatewayHandler):
    identity: Identity | None = None  # once known, refusals are audited with it

    async def get(self, path_idp: str) -> None:
        flow: Flow | None = None
        try:
            state = self.param("state", 512)
            if not state:
                raise GatewayError("state_invalid", "callback without state")
            binding = self.read_gateway_cookie(self.gateway.settings.cookies.flow_name, 1)
            # Consume before anything else: a refused state never reaches the token endpoint.
            flow = await self.gateway.store.flows.consume(state, binding, self.gateway.now())
            if path_idp != flow.idp:  # an answer meant for another IdP's callback: mix-up
                raise GatewayError(
                    "issuer_mismatch", f"flow for {flow.idp} answered at {path_idp}'s redirect URI"
                )
            await self.finish_login(flow)
        except GatewayError as exc:
            # Attribution: the flow's IdP (also for refused states whose record names it),
            # else the callback path's IdP when configured; the path's IdP in its own field
            # whenever it is another one (an answer delivered at a foreign callback).
            flow_idp = exc.audit.pop("flow_idp", None)
            idp = flow.idp if flow else flow_idp
            if idp is None and path_idp in self.gateway.idps:
                idp = path_idp
            await self.refuse(
                exc,
                identity=self.identity,
                idp=idp,
                room=flow.room if flow else None,
                tenant=flow.tenant if flow else None,
                callback_idp=path_idp if path_idp != idp else None,
            )

    async def finish_login(self, flow: Flow) -> None:
        idp = self.gateway.idps.get(flow.idp)
        if idp is None:
            raise GatewayError("idp_unknown", f"flow names idp {flow.idp!r}, no longer configured")
        meta = await idp.rp.metadata()
        iss = self.param("iss", 1024)  # RFC 9207: checked on error responses too
        if iss is not None and not issuer_matches(meta.issuer, iss):
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
            redirect_uri=settings.redirect_uri(idp.id),
            nonce=flow.nonce,
        )
        if iss is not None and tokens.claims.get("iss") != iss:
            raise GatewayError(
                "issuer_mismatch", f"{idp.id}: ID token issuer is not the iss parameter"
            )
        userinfo = None
        if idp.config.userinfo:
            userinfo = await idp.rp.userinfo(tokens.access_token, tokens.claims["sub"])
        try:
            identity = idp.adapter.identity(tokens.claims, userinfo)
            if isinstance(idp.adapter, IdentityEnricher):
                identity = await idp.adapter.enrich(
                    identity, tokens.access_token, self.gateway.http
                )
        except AdapterError as exc:
            reason = "policy_denied" if isinstance(exc, AccessDenied) else "claims_invalid"
            raise GatewayError(reason, f"{idp.id}: {exc.reason}: {exc}") from None
        except UpstreamError as exc:
            raise GatewayError("claims_invalid", f"{idp.id}: enrichment failed: {exc}") from None
        self.identity = identity
        decision = self.gateway.policy.sign_in(identity)
        log.debug(
            "sign-in %s for %s: %s",
            "allowed" if decision.allowed else "refused",
            identity.user_id,
            " | ".join(decision.trail),
        )
        if not decision.allowed:
            raise GatewayError("policy_denied", decision.reason, rule=decision.rule)
        previous = self.session_id()
        if previous:  # a new sign-in ends whatever session this browser had before
            await self.gateway.store.sessions.delete(previous)
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
            rule=decision.rule,
            decision=decision.reason,
        )
        if flow.return_to and flow.return_to.startswith("/oidc/authorize?"):
            self.redirect(flow.return_to)  # the token service's request, now with a session
            return
        carried = state_param(flow.jitsi_state)
        self.redirect(room_link("/oidc/tokenize", flow.room, flow.tenant, **carried))
