"""The token service's endpoints for Jitsi's ``sso.html``: ``/oidc/authorize``,
``/oidc/token``, and the gateway's discovery document and keys.

``/oidc/authorize`` is ``/oidc/auth`` with another ending: the same IdP choice, flow and
session, then a single-use code to the registered ``sso.html`` instead of a room URL.
Errors before the client and its redirect URI are known to be registered end on a page;
after, they go back to ``sso.html`` as ``error``/``error_description`` with the state.
The token endpoint answers RFC 6749 JSON, always ``Cache-Control: no-store``; it is called
by ``sso.html``'s ``fetch`` (same origin behind nginx; otherwise CORS for the registered
Jitsi origins only).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from adapters.base import Identity
from gateway.errors import GatewayError
from gateway.handlers.auth import AuthHandler
from gateway.handlers.base import GatewayHandler
from gateway.hashing import sha256_hex
from gateway.signin import RoomRequest
from gateway.tokenservice.service import AuthorizeRequest, TokenService, TokenServiceError

AUTHORIZE_PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "room",
    "scope",
)
MAX_TOKEN_BODY = 16 * 1024


def _bad(description: str) -> TokenServiceError:
    return TokenServiceError("invalid_request", description, "token_request_invalid")


def _service(handler: GatewayHandler) -> TokenService:
    service = handler.gateway.token_service
    if service is None:
        raise GatewayError("token_request_invalid", "the token service is not enabled")
    return service


class AuthorizeHandler(AuthHandler):
    entry_path = "/oidc/authorize"
    authz: AuthorizeRequest

    def parse_request(self) -> RoomRequest:
        service = _service(self)
        params = {name: self.param(name, 8192) for name in AUTHORIZE_PARAMS}
        self.authz = service.authorize_request(params)
        jitsi = self.authz.jitsi
        return RoomRequest(jitsi.room, jitsi.tenant, jitsi)

    def carried_params(self) -> list[tuple[str, str]]:
        """The request's parameters as the gateway carries them on (through the IdP in the
        flow record, on the chooser page, in retry links): Jitsi's refresh token is taken
        out of the state, so it is never stored or shown. After that sign-in sso.html takes
        its code path, which is what a person who just signed in needs anyway."""
        authz = getattr(self, "authz", None)
        out = []
        for name in AUTHORIZE_PARAMS:
            value = self.get_query_argument(name, None)
            if value is None:
                continue
            if name == "state" and authz is not None and authz.refresh_token is not None:
                value = authz.without_refresh().state
            out.append((name, value))
        return out

    def original_query(self, **extra: str) -> str:
        params = {n: v for n, v in self.carried_params() if v}
        return f"{self.entry_path}?{urlencode({**params, **extra})}"

    def entry_link(self, request: RoomRequest, **kw: str) -> str:
        return self.original_query(**kw)

    def hidden_fields(self, request: RoomRequest) -> list[tuple[str, str]]:
        return self.carried_params()

    def return_to(self) -> str | None:
        return self.original_query()

    async def with_session(self, identity: Identity, request: RoomRequest) -> None:
        service = _service(self)
        room, tenant = request.room, request.tenant
        decision = self.gateway.policy.room(identity, room, tenant)
        if not decision.allowed:
            await self.audit(
                "token_refused",
                "failure",
                identity=identity,
                reason="policy_denied",
                detail=decision.reason,
                rule=decision.rule,
                room=room,
                tenant=tenant,
                client_id=self.authz.client.client_id,
            )
            error = {"error": "access_denied", "error_description": "this room is not open to you"}
            self.redirect(self.authz.redirect(error))
            return
        sid = self.session_id()
        assert sid is not None  # a live identity came from this cookie
        dropped = await service.dead_refresh(self.authz)
        if dropped:  # sso.html then redeems the code instead of failing on a dead token
            self.authz = self.authz.without_refresh()
        url = await service.issue_code(self.authz, sha256_hex(sid))
        await self.audit(
            "code_issued",
            "success",
            identity=identity,
            room=room,
            tenant=tenant,
            session_id=sid,
            client_id=self.authz.client.client_id,
            **({"refresh_token_dropped": True} if dropped else {}),
        )
        self.redirect(url)


class TokenHandler(GatewayHandler):
    """``POST /oidc/token``: no cookies, no pages; RFC 6749 answers."""

    def cors_origin(self) -> str | None:
        service = self.gateway.token_service
        origin = self.request.headers.get("Origin")
        if service is None or origin is None:
            return None
        allowed = {c.origin for c in service.settings.clients}
        return origin if origin.lower() in allowed else None

    def prepare(self) -> None:
        super().prepare()
        self.set_header("Pragma", "no-cache")
        origin = self.cors_origin()
        if origin is not None:
            self.set_header("Access-Control-Allow-Origin", origin)
        self.set_header("Vary", "Origin")

    def options(self) -> None:
        if self.cors_origin() is not None:
            self.set_header("Access-Control-Allow-Methods", "POST")
            self.set_header("Access-Control-Allow-Headers", "Content-Type")
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    async def post(self) -> None:
        service = self.gateway.token_service
        if service is None:
            self.answer(404, {"error": "invalid_request", "error_description": "not enabled"})
            return
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        # Decoded leniently once: a value that is not UTF-8 is still refused as JSON with
        # an audit event (Tornado's get_body_argument would answer an HTML 400 instead).
        form = {
            k: [v.decode("utf-8", "replace") for v in vs]
            for k, vs in self.request.body_arguments.items()
        }
        try:
            if content_type != "application/x-www-form-urlencoded":
                raise TokenServiceError(
                    "invalid_request",
                    "send application/x-www-form-urlencoded",
                    "token_request_invalid",
                )
            if len(self.request.body) > MAX_TOKEN_BODY:
                raise TokenServiceError(
                    "invalid_request", "body too large", "token_request_invalid"
                )
            answer = await service.token(form, self.caller())
        except TokenServiceError as exc:
            await self.audit(
                "token_refused",
                "failure",
                reason=exc.reason,
                detail=exc.description,
                grant_type=(form.get("grant_type") or [None])[-1],
                client_id=(form.get("client_id") or [None])[-1],
                **exc.audit,
            )
            self.answer(exc.status, {"error": exc.error, "error_description": exc.description})
            return
        except GatewayError as exc:  # the store is down
            await self.audit("token_refused", "failure", reason=exc.reason, detail=exc.detail)
            self.answer(503, {"error": "temporarily_unavailable", "error_description": exc.reason})
            return
        fields: dict[str, Any] = dict(answer.audit)
        event = fields.pop("event")
        await self.audit(
            event,
            "success",
            identity=answer.identity,
            room=answer.room,
            tenant=answer.tenant,
            **fields,
        )
        self.answer(200, answer.body)

    def answer(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


class PublicDocument(GatewayHandler):
    """A public, cacheable JSON document of the token service (404 while it is off)."""

    def document(self, service: TokenService) -> dict[str, Any]:
        raise NotImplementedError

    def get(self) -> None:
        service = self.gateway.token_service
        if service is None:
            self.send_error(404)
            return
        self.set_header("Cache-Control", "public, max-age=300")
        self.set_header("Access-Control-Allow-Origin", "*")
        self.finish(self.document(service))


class DiscoveryHandler(PublicDocument):
    """``/oidc/.well-known/openid-configuration`` of the gateway's token service."""

    def document(self, service: TokenService) -> dict[str, Any]:
        return service.discovery()


class JwksHandler(PublicDocument):
    """``/oidc/jwks``: the public key of the ID tokens the token service signs."""

    def document(self, service: TokenService) -> dict[str, Any]:
        return service.key.jwks
