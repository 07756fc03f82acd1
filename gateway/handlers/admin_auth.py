"""Who is asking for the audit log: a bearer token, or the web page's session cookie.

The web session (``/admin/``) never carries the token itself. Its signed cookie holds the
*name* of the admin token that signed in, a fingerprint of that token's configured digest
(an HMAC with the cookie secret, so it reveals nothing about the token), the issue time and
a random nonce for the logout form. Every request re-checks that a token of that name with
that digest is still configured: removing or rotating a token in ``admin.tokens`` ends its
web sessions at the next request. The cookie is HttpOnly, ``SameSite=Strict``, ``Secure``
when ``cookies.secure`` is set, and scoped to ``Path=/admin/``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from tornado.web import RequestHandler

from gateway.config import AdminToken, Settings

SESSION_COOKIE = "jog_admin"
FORM_COOKIE = "jog_admin_form"  # the sign-in form's nonce, before any session exists
COOKIE_PATH = "/admin/"
FORM_SECONDS = 3600
MAX_TOKEN = 4096


def match_token(tokens: Iterable[AdminToken], token: str) -> AdminToken | None:
    """The configured token whose digest is the presented token's; constant time."""
    digest = hashlib.sha256(token.strip().encode("utf-8")).hexdigest()
    found: AdminToken | None = None
    for configured in tokens:  # no early exit: constant time
        if hmac.compare_digest(digest, configured.sha256):
            found = configured
    return found


def mac(settings: Settings, purpose: str, value: str) -> str:
    """An HMAC with the cookie secret: form tokens and the digest fingerprint."""
    secret = settings.cookies.secret.get_secret_value().encode()
    return hmac.new(secret, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class WebSession:
    name: str  # the admin token's configured name, audited as ``admin``
    issued: float  # gateway clock, seconds
    nonce: str  # binds the logout form to this cookie

    def logout_token(self, settings: Settings) -> str:
        return mac(settings, "admin-logout", self.nonce)


def _cookie_options(settings: Settings, max_age: int) -> dict[str, object]:
    return {
        "path": COOKIE_PATH,
        "httponly": True,
        "secure": settings.cookies.secure,
        "samesite": "Strict",
        "max_age": max_age,
        "expires_days": None,
    }


def start_session(
    handler: RequestHandler, settings: Settings, token: AdminToken, now: float
) -> None:
    """Set the session cookie for ``token`` (its name and digest fingerprint, not the token)."""
    value = {
        "n": token.name,
        "d": mac(settings, "admin-digest", token.sha256)[:32],
        "t": int(now),
        "x": secrets.token_urlsafe(16),
    }
    seconds = settings.admin.web_session_seconds
    text = json.dumps(value, separators=(",", ":"))
    handler.set_signed_cookie(SESSION_COOKIE, text, **_cookie_options(settings, seconds))  # type: ignore[arg-type]


def end_session(handler: RequestHandler, settings: Settings, name: str = SESSION_COOKIE) -> None:
    """Clear a cookie of this module (same attributes as set, as browsers may require)."""
    options = _cookie_options(settings, 0)
    del options["max_age"], options["expires_days"]
    handler.clear_cookie(name, **options)  # type: ignore[arg-type]


def read_session(handler: RequestHandler, settings: Settings, now: float) -> WebSession | None:
    """The live web session, or None: unsigned, expired, or its token is gone or rotated."""
    lifetime = settings.admin.web_session_seconds
    raw = handler.get_signed_cookie(SESSION_COOKIE, max_age_days=lifetime / 86400 + 1)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        name, fingerprint, issued, nonce = str(data["n"]), str(data["d"]), data["t"], str(data["x"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(issued, int) or not issued <= now < issued + lifetime:
        return None
    for configured in settings.admin.tokens:
        if configured.name == name:
            expected = mac(settings, "admin-digest", configured.sha256)[:32]
            if hmac.compare_digest(fingerprint, expected):
                return WebSession(name, issued, nonce)
    return None


def form_nonce(handler: RequestHandler, settings: Settings) -> str:
    """The sign-in form's nonce (kept in its own short-lived cookie, made when missing)."""
    raw = handler.get_signed_cookie(FORM_COOKIE, max_age_days=FORM_SECONDS / 86400)
    nonce = raw.decode("ascii", "replace") if raw else secrets.token_urlsafe(16)
    handler.set_signed_cookie(FORM_COOKIE, nonce, **_cookie_options(settings, FORM_SECONDS))  # type: ignore[arg-type]
    return nonce


def login_form_valid(handler: RequestHandler, settings: Settings, sent: str) -> bool:
    """The POSTed form token matches the form cookie's nonce (a login-CSRF page has neither)."""
    raw = handler.get_signed_cookie(FORM_COOKIE, max_age_days=FORM_SECONDS / 86400)
    if not raw or not sent:
        return False
    expected = mac(settings, "admin-login", raw.decode("ascii", "replace"))
    return hmac.compare_digest(sent.encode(), expected.encode())
