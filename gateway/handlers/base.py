"""Shared handler plumbing: input limits, the caller and its cookies, audit events, and the
one place where a refusal becomes a page or a JSON error (status, title and text from
``errors.REASONS``).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from tornado.web import HTTPError, RequestHandler

from adapters.base import Identity
from gateway.auditing import Caller
from gateway.clientip import client_ip
from gateway.context import Gateway
from gateway.errors import GatewayError
from gateway.logging_setup import bind_request_id
from gateway.rooms import valid_room, valid_tenant
from gateway.signin import GoTo, Refusal, RoomToken

log = logging.getLogger("gateway.handlers")

MAX_PARAM = 2048
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f]")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class GatewayHandler(RequestHandler):
    gateway: Gateway
    _in_flight = False  # counted in gateway.inflight (graceful shutdown) until it ends
    _caller: Caller | None = None

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.request_id = uuid.uuid4().hex

    def set_default_headers(self) -> None:
        # Also run by clear() before an error page: the reference id must survive it.
        request_id = getattr(self, "request_id", None)
        if request_id is not None:
            self.set_header("X-Request-Id", request_id)
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
        if CONTROL_CHARACTER.search(value):
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

    def caller(self) -> Caller:
        """The browser's side of this request, once per request; the flow records its
        cookie changes there and :meth:`finish` applies them."""
        if self._caller is None:
            headers = self.request.headers
            site = headers.get("Sec-Fetch-Site")
            self._caller = Caller(
                client_ip=self.client_ip(),
                user_agent=headers.get("User-Agent") or "",
                request_id=self.request_id,
                session_id=self.session_id(),
                flow_binding=self.read_gateway_cookie(self.gateway.settings.cookies.flow_name, 1),
                # same-origin (our own pages) and none (typed, bookmarked) are trusted;
                # same-site is not (sibling subdomains are other parties). Without the
                # header (old browsers, scripts) the link is followed.
                cross_site=site is not None and site not in ("same-origin", "none"),
            )
        return self._caller

    def finish(self, chunk: Any = None) -> Any:
        caller = self._caller
        if caller is not None and not self._headers_written:
            cookies = self.gateway.settings.cookies
            if caller.new_flow is not None:
                self.set_gateway_cookie(cookies.flow_name, *caller.new_flow)
            if caller.new_session is not None:
                self.set_gateway_cookie(cookies.session_name, *caller.new_session)
            elif caller.session_ended:
                self.clear_cookie(cookies.session_name, path="/")
        return super().finish(chunk)

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
        await self.gateway.audit(
            self.caller(), event, outcome, identity=identity, idp=idp, **fields
        )

    # ---- failures --------------------------------------------------------------------------

    answers_json = False  # the admin API and the back-channel endpoint answer JSON
    error_template = "error.html"  # the admin web page has its own

    async def refuse(
        self, error: GatewayError, *, event: str = "login_failed", **fields: Any
    ) -> None:
        """Audit a refusal outside the sign-in steps (logout, token service) and show it."""
        self.show_refusal(
            await self.gateway.signin.refused(self.caller(), error, event=event, **fields)
        )

    def show_refusal(self, refusal: Refusal) -> None:
        """The short page (or JSON) for an audited refusal, with its reason's status."""
        info = refusal.error.info
        self.set_status(info.status)
        if self.answers_json:
            self.finish(self.json_error_body(refusal.error))
            return
        self.render_error_page(
            info.title, info.text, retry_url=refusal.retry_url, guest_url=refusal.guest_url
        )

    def to_room(self, step: GoTo | RoomToken) -> None:
        """Where a step ends: a redirect, or for Jitsi's app a page that hands over to it (a
        custom scheme, which the system browser may ask the person about first)."""
        if isinstance(step, GoTo) or step.app_url is None:
            self.redirect(step.url)
            return
        self.render("open_app.html", app_url=step.app_url, web_url=step.url, room=step.room)

    def json_error_body(self, error: GatewayError) -> dict[str, Any]:
        """The JSON shape of a refusal; endpoints with a protocol of their own override it."""
        return {"error": error.reason, "message": error.info.text, "id": self.request_id}

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
            self.error_template,
            title=title,
            message=message,
            retry_url=retry_url,
            guest_url=guest_url,
            request_id=self.request_id,
        )

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, Refusal):
            return  # audited and logged where it was refused
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Where every exception of a handler ends: a :class:`Refusal` (already audited) as
        its reason's page or JSON, anything else as Tornado's status with a short text."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Refusal):
            self.show_refusal(exc)
            return
        if isinstance(exc, HTTPError):
            title, message = "Request refused", exc.reason or "The request was not understood."
        else:
            title, message = "Something went wrong", "Please try again in a moment."
        if self.answers_json:  # JSON for every status Tornado raises itself (405, 404...)
            if status_code >= 500:
                body = {"error": "internal", "message": "unexpected error"}
            else:
                reason = self._reason or "request refused"
                body = {"error": reason.lower().replace(" ", "_"), "message": reason}
            self.set_header("X-Request-Id", self.request_id)  # errors raised before prepare()
            self.finish({**body, "id": self.request_id})
            return
        self.render_error_page(title, message)
