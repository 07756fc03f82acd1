"""Shared handler plumbing: input limits, cookies, audit events and the error page.

This is the one place where domain reasons become HTTP status codes and human text.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

from tornado.web import HTTPError, RequestHandler

from adapters.base import Identity
from gateway.clientip import client_ip
from gateway.context import Gateway
from gateway.errors import GatewayError
from gateway.logging_setup import bind_request_id
from gateway.metrics import observe_audit
from gateway.oidc.pkce import sha256_hex
from gateway.rooms import room_link, valid_room, valid_tenant

log = logging.getLogger("gateway.handlers")

MAX_PARAM = 2048

STATUS = {
    "bad_request": 400,
    "idp_unknown": 400,
    "idp_error": 401,
    "idp_unreachable": 502,
    "state_invalid": 400,
    "state_expired": 400,
    "state_reused": 400,
    "state_browser_mismatch": 400,
    "issuer_mismatch": 400,
    "code_exchange_failed": 502,
    "id_token_invalid": 401,
    "nonce_mismatch": 401,
    "userinfo_failed": 502,
    "claims_invalid": 403,
    "policy_denied": 403,
    "store_unavailable": 503,
    "admin_unauthorized": 401,
    "token_request_invalid": 400,
    "token_grant_invalid": 400,
    "refresh_token_reused": 400,
}

PUBLIC_TEXT = {
    "bad_request": ("That link is not valid", "The address is missing something or malformed."),
    "idp_unknown": ("Unknown sign-in provider", "The sign-in provider in the link is unknown."),
    "idp_error": ("Sign-in was not completed", "The identity provider did not sign you in."),
    "idp_unreachable": ("Sign-in is unavailable", "The identity provider cannot be reached."),
    "state_invalid": ("This sign-in link has expired", "Please start again from the room link."),
    "state_expired": ("This sign-in took too long", "Please start again from the room link."),
    "state_reused": ("This sign-in was already used", "Please start again from the room link."),
    "state_browser_mismatch": (
        "Sign-in started in another browser",
        "Please open the room link in this browser and sign in again.",
    ),
    "issuer_mismatch": ("Sign-in could not be verified", "The answer came from the wrong place."),
    "code_exchange_failed": ("Sign-in could not be completed", "The identity provider failed."),
    "id_token_invalid": ("Sign-in could not be verified", "The identity could not be verified."),
    "nonce_mismatch": ("Sign-in could not be verified", "The identity could not be verified."),
    "userinfo_failed": ("Sign-in could not be completed", "Your profile could not be read."),
    "claims_invalid": ("Your account cannot be used here", "Your profile is missing details."),
    "policy_denied": ("Access refused", "Your account may not join this meeting."),
    "store_unavailable": ("Sign-in is unavailable", "Please try again in a moment."),
    "admin_unauthorized": ("Not authorised", "A valid admin token is required."),
    "token_request_invalid": ("That link is not valid", "The sign-in request is malformed."),
    "token_grant_invalid": ("Sign-in has expired", "Please start again from the meeting."),
    "refresh_token_reused": ("Sign-in has expired", "Please start again from the meeting."),
}


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class GatewayHandler(RequestHandler):
    gateway: Gateway
    _in_flight = False  # counted in gateway.inflight (graceful shutdown) until it ends

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.request_id = uuid.uuid4().hex

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        )

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        namespace.setdefault("retry_url", None)
        namespace.setdefault("guest_url", None)
        return namespace

    def prepare(self) -> None:
        self.set_header("X-Request-Id", self.request_id)
        bind_request_id(self.request_id)  # every log line of this request carries it
        if not self._in_flight:
            self._in_flight = True
            self.gateway.inflight.enter()

    def _left(self) -> None:
        if self._in_flight:
            self._in_flight = False
            self.gateway.inflight.leave()

    def on_finish(self) -> None:
        self._left()

    def on_connection_close(self) -> None:
        self._left()
        super().on_connection_close()

    # ---- input ---------------------------------------------------------------------------

    def param(self, name: str, max_len: int = MAX_PARAM) -> str | None:
        """One query parameter: absent -> None; repeated, oversized or binary -> bad_request."""
        values = self.request.query_arguments.get(name, [])
        if not values:
            return None
        if len(values) > 1:
            raise GatewayError("bad_request", f"parameter {name} given {len(values)} times")
        raw = values[0]
        if len(raw) > max_len:
            raise GatewayError("bad_request", f"parameter {name} longer than {max_len}")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GatewayError("bad_request", f"parameter {name} is not UTF-8") from None
        if any(ord(c) < 32 for c in value):
            raise GatewayError("bad_request", f"parameter {name} has control characters")
        return value

    def room_and_tenant(self) -> tuple[str, str | None]:
        room = self.param("room", 256)
        tenant = self.param("tenant", 256)
        if not valid_room(room):
            raise GatewayError("bad_request", "room missing or malformed")
        if tenant is not None and not valid_tenant(tenant):
            raise GatewayError("bad_request", "tenant malformed")
        assert room is not None
        return room, tenant

    def cross_site(self, *, own_host: bool = False) -> str | None:
        """Why this POST is not from our own page, as far as the browser says, or None.

        ``Sec-Fetch-Site`` is the most precise signal and wins when present. ``Origin`` is
        compared when it names an origin; ``null`` (a same-origin form under a strict
        referrer policy, a sandboxed frame, a privacy setting) proves nothing either way and
        leaves the decision to the session-bound form token, which is always required.
        ``own_host``: an ``Origin`` naming the host this request was addressed to is ours
        too (the admin page is reached on the gateway's own port, not at ``public_url``).
        """
        fetch_site = self.request.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return f"Sec-Fetch-Site is {fetch_site[:32]}"
        ours = origin_of(self.gateway.settings.public_url)
        origin = self.request.headers.get("Origin")
        if origin is None or origin == "null" or origin.lower() == ours:
            return None
        if own_host and urlsplit(origin).netloc.lower() == self.request.host.lower():
            return None
        return "Origin is not the gateway's"

    # ---- cookies ---------------------------------------------------------------------------

    def set_gateway_cookie(self, name: str, value: str, max_age: int | None) -> None:
        if name == self.gateway.settings.cookies.flow_name:
            self._flow_binding = value  # audit events of this response name the new flow
        self.set_signed_cookie(
            name,
            value,
            expires_days=None,
            max_age=max_age,
            path="/",
            httponly=True,
            secure=self.gateway.settings.cookies.secure,
            samesite="Lax",
        )

    def read_gateway_cookie(self, name: str, max_age_days: float = 31) -> str | None:
        value = self.get_signed_cookie(name, max_age_days=max_age_days)
        return value.decode("ascii", "replace") if value else None

    def session_id(self) -> str | None:
        name = self.gateway.settings.cookies.session_name
        days = self.gateway.settings.session.lifetime_seconds / 86400 + 1
        return self.read_gateway_cookie(name, days)

    async def current_identity(self) -> Identity | None:
        """The live session's identity. A cookie whose session has ended is audited once
        (``session_expired``) and cleared."""
        sid = self.session_id()
        if not sid:
            return None
        identity = await self.gateway.store.sessions.get(sid, self.gateway.now())
        if identity is None:
            await self.audit("session_expired", "info", session_id=sid)
            self.clear_cookie(self.gateway.settings.cookies.session_name, path="/")
        return identity

    # ---- audit -----------------------------------------------------------------------------

    def client_ip(self) -> str | None:
        """The client's address; forwarding headers only count from trusted proxies."""
        headers = self.request.headers
        return client_ip(
            self.request.remote_ip,
            headers.get("X-Forwarded-For"),
            headers.get("X-Real-IP"),
            self.gateway.settings.trusted_proxies,
        )

    async def audit(
        self,
        event: str,
        outcome: str,
        *,
        identity: Identity | None = None,
        idp: str | None = None,
        **fields: Any,
    ) -> None:
        doc: dict[str, Any] = {
            "time": self.gateway.now(),
            "event": event,
            "outcome": outcome,
            "idp": identity.idp if identity else idp,
            "client_ip": self.client_ip(),
            "user_agent": (self.request.headers.get("User-Agent") or "")[:512],
            "request_id": self.request_id,
        }
        if identity is not None:
            doc |= {
                "issuer": identity.issuer,
                "subject": identity.subject,
                "username": identity.username,
                "email": identity.email,
                "email_verified": identity.email_verified,
                "groups": list(identity.groups),
                "name": identity.name,  # the display name Jitsi shows
            }
            if identity.extra:  # the adapter's allow-listed claims (extra_claims)
                doc["extra"] = dict(identity.extra)
        sid = fields.pop("session_id", None) or self.session_id()
        if sid:
            doc["session_hash"] = sha256_hex(sid)[:32]
        # The browser's flow cookie links failures before the ID token (state_reused,
        # state_browser_mismatch, a bad room) to the sign-in that later names the person.
        binding = getattr(self, "_flow_binding", None) or self.read_gateway_cookie(
            self.gateway.settings.cookies.flow_name, 1
        )
        if binding:
            doc["flow_hash"] = sha256_hex("flow:" + binding)[:32]
        doc |= {k: v for k, v in fields.items() if v is not None}
        await self.gateway.store.audit.write(doc)
        observe_audit(self, doc)  # metrics are derived from audit events

    # ---- failures --------------------------------------------------------------------------

    async def refuse(
        self,
        error: GatewayError,
        *,
        event: str = "login_failed",
        idp: str | None = None,
        identity: Identity | None = None,
        room: str | None = None,
        tenant: str | None = None,
        guest_url: str | None = None,
        **fields: Any,
    ) -> None:
        """Audit the failure and answer with the short page for its reason; ``fields`` are
        extra audit fields (``callback_idp``, ``requested_idp``)."""
        log.info("refused %s: %s", error.reason, error.detail)
        # store_unavailable too: the audit log spools locally while MongoDB is down.
        await self.audit(
            event,
            "failure",
            idp=idp,
            identity=identity,
            reason=error.reason,
            detail=error.detail,
            room=room,
            tenant=tenant,
            **fields,
            **error.audit,
        )
        title, message = PUBLIC_TEXT[error.reason]
        retry_url = room_link("/oidc/auth", room, tenant) if room is not None else None
        self.set_status(STATUS[error.reason])
        self.render_error_page(title, message, retry_url=retry_url, guest_url=guest_url)

    def render_error_page(
        self,
        title: str,
        message: str,
        *,
        retry_url: str | None = None,
        guest_url: str | None = None,
    ) -> None:
        """The short human page every failure ends on (status set by the caller)."""
        self.render(
            "error.html",
            title=title,
            message=message,
            retry_url=retry_url,
            guest_url=guest_url,
            request_id=self.request_id,
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, HTTPError):
            title, message = "Request refused", exc.reason or "The request was not understood."
        else:
            title, message = "Something went wrong", "Please try again in a moment."
        self.render_error_page(title, message)
