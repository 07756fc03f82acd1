"""Logout: ``/oidc/logout`` (the person), ``/oidc/backchannel-logout`` (the IdP's server).

``GET /oidc/logout`` only shows a confirmation form; ``POST`` ends the session. A cross-site
page cannot sign someone out: the POST must carry the form's token, derived from the session
id with the cookie secret (a page that cannot read the cookie cannot compute it). The
browser's own signals are checked too, for what they can say: ``Sec-Fetch-Site`` must be
``same-origin`` (or ``none``) when sent, and an ``Origin`` other than ours refuses the POST.
``Origin: null`` is not an attack signal by itself: browsers send it for a same-origin form
under a strict referrer policy, and a cross-site page still lacks the token.

After the gateway session is gone the browser continues to the IdP's
``end_session_endpoint`` with ``id_token_hint`` and a ``state`` (OpenID Connect RP-Initiated
Logout 1.0). The IdP returns to ``/oidc/logged-out`` with that state, and only then does the
page say that the IdP session was ended too; otherwise it says that it was not, and why.

Pages here carry no secret in their URL, so they use ``Referrer-Policy: same-origin`` (the
sign-in pages, whose URLs carry codes or e-mail addresses, keep ``no-referrer``).

The back-channel endpoint accepts a logout token (OpenID Connect Back-Channel Logout 1.0),
validates it fully and deletes the sessions it names; it answers 200, or 400 with a JSON
error, always with ``Cache-Control: no-store``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from adapters.base import IssuerResolver
from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler, origin_of
from gateway.hashing import sha256_hex
from gateway.idps import ConfiguredIdP
from gateway.oidc.logout_token import (
    LogoutTokenError,
    unverified_issuer_and_audience,
)

log = logging.getLogger("gateway.handlers")

MAX_LOGOUT_TOKEN = 16 * 1024


def _mac(gateway_secret: str, purpose: str, value: str) -> str:
    message = f"{purpose}\0{value}".encode()
    return hmac.new(gateway_secret.encode(), message, hashlib.sha256).hexdigest()


# Why the IdP session may still be alive (query parameter of /oidc/logged-out).
IDP_SESSION_KEPT = {
    "off": "This site is set up not to sign you out at {idp}.",
    "unavailable": "{idp} offers no way for this site to sign you out there.",
}


class LogoutPage(GatewayHandler):
    """Shared by the logout pages: a referrer policy that lets same-origin forms say so."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Referrer-Policy", "same-origin")

    def secret(self) -> str:
        return self.gateway.settings.cookies.secret.get_secret_value()

    def idp_name(self, idp_id: str | None) -> str | None:
        idp = self.gateway.idps.get(idp_id or "")
        return idp.config.label if idp is not None else None

    async def deny(self, reason: str, detail: str, **fields: object) -> None:
        """A sign-out that is not the person's own: refused, audited, nothing ended."""
        error = GatewayError(reason, detail)
        await self.refuse(error, event="logout", retry_url="/oidc/logout", **fields)

    def render_logged_out(
        self,
        *,
        idp_ended: str | None = None,
        idp_kept: str | None = None,
        why: str = "",
        end_cookie: bool = True,
    ) -> None:
        """The truth about both sessions: this site's is gone; the IdP's as far as known."""
        if end_cookie:
            self.caller().end_session()
        self.render(
            "logged_out.html",
            jitsi_url=self.gateway.settings.jitsi.base_url + "/",
            idp_ended=idp_ended,
            idp_kept=idp_kept,
            why=why.format(idp=idp_kept) if idp_kept else "",
        )


class LogoutHandler(LogoutPage):
    def csrf_token(self, session_id: str) -> str:
        """Bound to the session: a page that cannot read the cookie cannot compute it."""
        return _mac(self.secret(), "logout", session_id)

    async def head(self) -> None:
        await self.get()

    async def get(self) -> None:
        try:
            sid = self.session_id()
            record = (
                await self.gateway.store.sessions.record(sid, self.gateway.now()) if sid else None
            )
        except GatewayError as exc:
            await self.refuse(exc, event="logout")
            return
        if sid is None or record is None:
            self.render_logged_out()
            return
        self.render(
            "logout.html",
            name=record.identity.name,
            csrf=self.csrf_token(sid),
            idp_logout=self.gateway.settings.logout.idp_logout,
        )

    async def post(self) -> None:
        cross_site = self.cross_site()
        if cross_site:
            await self.deny("cross_site_request", cross_site)
            return
        sid = self.session_id()
        if sid is None:
            self.render_logged_out()
            return
        sent = self.get_body_argument("csrf", "")
        if not hmac.compare_digest(sent.encode(), self.csrf_token(sid).encode()):
            await self.deny("csrf_token_invalid", "logout form token missing or wrong")
            return
        done = await self.gateway.signin.end_session(
            self.caller(),
            idp_logout=self.gateway.settings.logout.idp_logout,
            logged_out_state=self.logged_out_state,
        )
        next_url = done.idp_logout_url
        if next_url is None:
            identity, kept = done.identity, done.idp_kept
            query = {"idp": identity.idp, "kept": kept} if identity and kept else {}
            next_url = "/oidc/logged-out" + (f"?{urlencode(query)}" if query else "")
        self.redirect(next_url, status=303)

    def logged_out_state(self, idp_id: str) -> str:
        """The ``state`` the IdP hands back to ``/oidc/logged-out``: proof it signed out."""
        return f"{idp_id}.{_mac(self.secret(), 'logged-out', idp_id)}"


class SilentLogoutHandler(LogoutPage):
    """``GET /oidc/logout/silent``: Jitsi's ``config.tokenLogoutUrl``.

    Jitsi's web client loads this URL in a hidden iframe when the person logs out in the
    meeting, so it ends the gateway session on a GET, without a confirmation. A GET that
    ends a session is only safe when the page loading it is Jitsi itself, so the browser's
    own signals must say so: ``Sec-Fetch-Site: same-origin`` (Jitsi and the gateway on one
    origin behind nginx), or ``same-site`` with a ``Referer`` on the Jitsi origin. A
    cross-site page gets nothing: the session cookie is ``SameSite=Lax``, so a cross-site
    iframe does not even carry it, and the request is refused as well. Only this page may
    be framed, and only by the Jitsi origin (``frame-ancestors``).

    The IdP session is not ended here: IdPs refuse to be framed and ask the person to
    confirm, which a hidden iframe cannot show. The next room may therefore sign in again
    without a password while the IdP session lives; ``/oidc/logout`` does both.
    """

    def prepare(self) -> None:
        super().prepare()
        jitsi = origin_of(self.gateway.settings.jitsi.base_url)
        self.clear_header("X-Frame-Options")  # CSP frame-ancestors names the one origin
        self.set_header(
            "Content-Security-Policy",
            f"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors {jitsi}",
        )

    def not_from_jitsi(self) -> str | None:
        """Why this request is not Jitsi's own iframe, or None."""
        fetch_site = self.request.headers.get("Sec-Fetch-Site")
        jitsi = origin_of(self.gateway.settings.jitsi.base_url)
        referer = self.request.headers.get("Referer")
        from_jitsi = referer is not None and origin_of(referer) == jitsi
        if fetch_site == "same-origin":
            return None
        if fetch_site == "same-site" and from_jitsi:
            return None
        if fetch_site is None and from_jitsi:  # a browser without Fetch Metadata
            return None
        where = "on" if from_jitsi else "not on"
        return f"Sec-Fetch-Site {str(fetch_site)[:32]}, Referer {where} the Jitsi origin"

    async def head(self) -> None:
        self.render_logged_out()  # HEAD ends nothing

    async def get(self) -> None:
        why = self.not_from_jitsi()
        if why is not None:
            await self.deny("cross_site_request", why, silent=True)
            return
        if self.session_id() is None:
            self.render_logged_out()
            return
        done = await self.gateway.signin.end_session(self.caller(), idp_logout=False, silent=True)
        kept = done.identity.idp if done.identity else None
        self.render_logged_out(idp_kept=self.idp_name(kept), why="")


class LoggedOutHandler(LogoutPage):
    """Where the IdP sends the browser back (register it as post_logout_redirect_uri).

    ``state`` (ours, returned by the IdP) proves the browser came back from the IdP's
    sign-out; ``idp`` + ``kept`` say why the IdP was not asked. Without either the page only
    speaks of this site.
    """

    async def head(self) -> None:
        await self.get()

    async def get(self) -> None:
        """Never touches the session cookie: the logout this page confirms already ended
        the session and cleared the cookie (the POST to /oidc/logout), and any site can
        link here. A browser that still holds a live session did not come from its own
        logout: it gets the logout confirmation page instead of a false "signed out"."""
        try:
            sid = self.session_id()
            live = sid is not None and (
                await self.gateway.store.sessions.record(sid, self.gateway.now()) is not None
            )
        except GatewayError as exc:
            await self.refuse(exc, event="logout")
            return
        if live:
            self.redirect("/oidc/logout", status=303)
            return
        try:
            state = self.param("state", 200) or ""
            idp_id, kept = self.param("idp", 100), self.param("kept", 20)
        except GatewayError:
            state, idp_id, kept = "", None, None
        ended_id, _, mac = state.partition(".")
        if mac and hmac.compare_digest(mac, _mac(self.secret(), "logged-out", ended_id)):
            self.render_logged_out(idp_ended=self.idp_name(ended_id) or ended_id, end_cookie=False)
        elif kept in IDP_SESSION_KEPT and self.idp_name(idp_id):
            self.render_logged_out(
                idp_kept=self.idp_name(idp_id), why=IDP_SESSION_KEPT[kept], end_cookie=False
            )
        else:
            self.render_logged_out(end_cookie=False)


class BackchannelLogoutHandler(GatewayHandler):
    """Called by the IdP's server, not a browser: no cookies, no pages, JSON errors."""

    answers_json = True

    async def post(self) -> None:
        if not self.gateway.settings.logout.backchannel:
            self.fail(404, "not_found", "back-channel logout is disabled")
            return
        values = self.request.body_arguments.get("logout_token", [])
        if len(values) != 1 or not values[0] or len(values[0]) > MAX_LOGOUT_TOKEN:
            await self.reject(None, "format", "logout_token missing, repeated or too long")
            return
        try:
            token = values[0].decode("ascii")
        except UnicodeDecodeError:
            await self.reject(None, "format", "logout_token is not ASCII")
            return
        idp = self.idp_for(token)
        if idp is None:
            await self.reject(None, "iss", "no configured IdP has this issuer")
            return
        try:
            claims = await idp.rp.verify_logout_token(
                token, self.gateway.settings.logout.logout_token_max_age_seconds
            )
        except LogoutTokenError as exc:
            await self.reject(idp, exc.check, exc.detail)
            return
        except GatewayError as exc:  # the IdP's metadata cannot be loaded
            await self.reject(idp, "idp", exc.detail)
            return
        sid, sub = claims.get("sid"), claims.get("sub")
        max_age = self.gateway.settings.logout.logout_token_max_age_seconds
        keep_until = self.gateway.now() + timedelta(seconds=2 * max_age + 300)
        try:
            fresh = await self.gateway.store.replays.first_use(
                claims["iss"], claims["jti"], keep_until
            )
        except GatewayError as exc:
            await self.refuse(exc, event="backchannel_logout", idp=idp.id)
            return
        if not fresh:
            await self.reject(idp, "jti", "this logout token was already used")
            return
        try:
            ended = await self.gateway.store.sessions.end_at_idp(idp.id, sid=sid, sub=sub)
        except GatewayError as exc:
            await self.refuse(exc, event="backchannel_logout", idp=idp.id)
            return
        await self.audit(
            "backchannel_logout",
            "success",
            idp=idp.id,
            subject=sub,
            idp_sid_hash=sha256_hex(sid)[:32] if sid else None,
            sessions_ended=ended,
        )
        self.set_status(200)
        self.finish()

    def idp_for(self, token: str) -> ConfiguredIdP | None:
        """The configured IdP the token is for (before any key is fetched): its issuer, and
        among IdPs sharing an issuer (two clients of one realm) the one in ``aud``."""
        iss, audiences = unverified_issuer_and_audience(token)
        if iss is None:
            return None
        idps = self.gateway.idps.values()
        candidates = [i for i in idps if i.config.issuer == iss]
        if not candidates:  # a templated issuer: the adapter's rule (IssuerResolver)
            candidates = [
                i
                for i in idps
                if isinstance(i.adapter, IssuerResolver)
                and i.adapter.accepts_issuer(i.config.issuer, iss)
            ]
        addressed = [i for i in candidates if i.config.client_id in audiences]
        return (addressed or candidates or [None])[0]

    async def reject(self, idp: ConfiguredIdP | None, check: str, detail: str) -> None:
        error = GatewayError("logout_token_invalid", f"{check}: {detail}")
        await self.refuse(error, event="backchannel_logout", idp=idp.id if idp else None)

    def json_error_body(self, error: GatewayError) -> dict[str, Any]:
        """RFC 6749 section 5.2 errors, as Back-Channel Logout 1.0 section 2.8 suggests."""
        if error.reason == "logout_token_invalid":
            check = error.detail.partition(":")[0]
            return {
                "error": "invalid_request",
                "error_description": f"logout token rejected ({check})",
            }
        return {
            "error": "temporarily_unavailable",
            "error_description": "sessions cannot be reached",
        }

    def fail(self, status: int, error: str, description: str) -> None:
        self.set_status(status)
        self.finish({"error": error, "error_description": description})
