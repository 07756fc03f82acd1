"""Logout-token validation, as OpenID Connect Back-Channel Logout 1.0 section 2.6 lists it.

A logout token is a JWT much like an ID token, so the ID-token verifier's issuer, audience
and signature checks are reused; what differs is checked here: ``typ`` (``logout+jwt`` when
explicitly typed), no ``sub`` requirement but ``sid`` or ``sub``, the ``events`` member with
the back-channel logout event, no ``nonce``, and an ``iat`` that is neither in the future
nor older than a maximum age. Cheap checks run first; the signature check runs once, last.
"""

from __future__ import annotations

from typing import Any

from gateway.oidc.jws import CompactJws, JwsFormatError, parse, shown
from gateway.oidc.verify import IdTokenError, IdTokenVerifier, is_number, unverified_parts

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
ACCEPTED_TYP = {"logout+jwt", "application/logout+jwt", "jwt"}


class LogoutTokenError(IdTokenError):
    """The logout token failed ``check``; ``detail`` says how (never the token itself)."""


def unverified_issuer_and_audience(token: str) -> tuple[str | None, list[str]]:
    """``iss`` and ``aud`` read without verification: only to pick the IdP whose keys and
    client id then verify the token."""
    try:
        claims = parse(token).claims
    except JwsFormatError:
        return None, []
    iss, aud = claims.get("iss"), claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    return (iss if isinstance(iss, str) else None), [a for a in audiences if isinstance(a, str)]


class LogoutTokenVerifier(IdTokenVerifier):
    """Reuses the ID-token verifier's key set, clock, issuer and audience rules."""

    async def verify_logout(self, token: str, max_age: int) -> dict[str, Any]:
        jws = self._parse_logout(token)
        header, claims = jws.header, jws.claims
        alg = header.get("alg")
        if alg not in self.config.algorithms:
            raise LogoutTokenError("alg", f"algorithm {shown(alg)} is not allowed")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYP):
            raise LogoutTokenError("typ", f"typ {shown(typ)} is not a logout token type")
        try:
            self._check_issuer(claims)
            self._check_audience(claims)
        except IdTokenError as exc:
            raise LogoutTokenError(exc.check, exc.detail) from None
        self._check_logout_times(claims, max_age)
        self._check_events(claims)
        if "nonce" in claims:
            raise LogoutTokenError("nonce", "a logout token must not contain a nonce")
        sid, sub = claims.get("sid"), claims.get("sub")
        if sid is None and sub is None:
            raise LogoutTokenError("sid", "neither sid nor sub is present")
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise LogoutTokenError("jti", "jti is missing")
        for name, value in (("sid", sid), ("sub", sub)):
            if value is not None and (not isinstance(value, str) or not value):
                raise LogoutTokenError(name, f"{name} is not a non-empty string")
        try:
            # Anyone can post a logout token: its kid keeps the global refetch interval.
            await self._check_signature(jws, alg, trusted=False)
        except IdTokenError as exc:
            raise LogoutTokenError(exc.check, exc.detail) from None
        return claims

    @staticmethod
    def _parse_logout(token: str) -> CompactJws:
        try:
            return unverified_parts(token)
        except IdTokenError as exc:
            raise LogoutTokenError(exc.check, exc.detail) from None

    def _check_logout_times(self, claims: dict[str, Any], max_age: int) -> None:
        now, leeway = self.clock(), self.config.leeway
        iat = claims.get("iat")
        if not is_number(iat):
            raise LogoutTokenError("iat", "iat is missing")
        if iat > now + leeway:
            raise LogoutTokenError("iat", "token was issued in the future")
        if iat < now - max_age - leeway:
            raise LogoutTokenError("iat", "token is too old")
        exp = claims.get("exp")
        if exp is not None and (not is_number(exp) or now > exp + leeway):
            raise LogoutTokenError("exp", "token has expired")

    @staticmethod
    def _check_events(claims: dict[str, Any]) -> None:
        events = claims.get("events")
        if not isinstance(events, dict) or LOGOUT_EVENT not in events:
            raise LogoutTokenError("events", "events lacks the back-channel logout event")
        if not isinstance(events[LOGOUT_EVENT], dict):
            raise LogoutTokenError("events", "the logout event's value is not a JSON object")
