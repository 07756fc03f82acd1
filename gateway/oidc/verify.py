"""ID-token validation, written as the checklist of OpenID Connect Core 3.1.3.7.

The token is parsed once (``gateway.oidc.jws``). Cheap checks run on the unverified claims
first (format, algorithm allow-list, issuer, audience, azp, times, nonce); then exactly one
signature check against the IdP's key set; then ``at_hash``. The clock is injected so tests
can move it. Each failure names its check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from gateway.oidc.jwks import JwksCache, KeyNotFound
from gateway.oidc.jws import CompactJws, JwsFormatError, JwsSignatureError, parse, shown
from gateway.oidc.jws import verify_signature as jws_verify_signature

Clock = Callable[[], float]


class IdTokenError(Exception):
    """The ID token failed ``check``; ``detail`` says how (never the token itself)."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


@dataclass(frozen=True)
class VerifierConfig:
    issuer: str
    client_id: str
    algorithms: Collection[str]
    leeway: int = 60


class IdTokenVerifier:
    def __init__(
        self,
        config: VerifierConfig,
        keys: JwksCache,
        clock: Clock = time.time,
        issuer_check: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.clock = clock
        self._issuer_check = issuer_check

    async def verify(
        self, token: str, *, nonce: str | None, access_token: str | None = None
    ) -> dict[str, Any]:
        """``nonce``: the sign-in's; None only for an ID token from a refresh (OIDC Core
        12.2), which answers no authorization request of ours."""
        jws = self._parse(token)
        header, claims = jws.header, jws.claims
        alg = header.get("alg")
        if alg not in self.config.algorithms:
            raise IdTokenError("alg", f"algorithm {shown(alg)} is not allowed")
        self._check_issuer(claims)
        self._check_audience(claims)
        self._check_times(claims)
        self._check_nonce(claims, nonce)
        await self._check_signature(jws, alg)
        if "at_hash" in claims:
            self._check_at_hash(claims["at_hash"], access_token, alg)
        return claims

    @staticmethod
    def _parse(token: str) -> CompactJws:
        jws = unverified_parts(token)
        if not isinstance(jws.claims.get("sub"), str) or not jws.claims["sub"]:
            raise IdTokenError("sub", "sub is missing")
        return jws

    def _check_issuer(self, claims: dict[str, Any]) -> None:
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise IdTokenError("iss", "iss is missing")
        if self._issuer_check is not None:
            if not self._issuer_check(iss, claims):
                raise IdTokenError("iss", f"issuer {shown(iss)} not accepted")
        elif iss != self.config.issuer:
            raise IdTokenError("iss", f"issuer {shown(iss)} is not {self.config.issuer!r}")

    def _check_audience(self, claims: dict[str, Any]) -> None:
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise IdTokenError("aud", "aud is missing or malformed")
        if self.config.client_id not in audiences:
            raise IdTokenError("aud", "token was issued for another client")
        azp = claims.get("azp")
        if len(audiences) > 1 and azp is None:
            raise IdTokenError("azp", "several audiences and no azp")
        if azp is not None and azp != self.config.client_id:
            raise IdTokenError("azp", "azp names another client")

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self.clock()
        leeway = self.config.leeway
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not is_number(exp):
            raise IdTokenError("exp", "exp is missing")
        if now > exp + leeway:
            raise IdTokenError("exp", "token has expired")
        if not is_number(iat):
            raise IdTokenError("iat", "iat is missing")
        if iat > now + leeway:
            raise IdTokenError("iat", "token was issued in the future")
        if nbf is not None and (not is_number(nbf) or nbf > now + leeway):
            raise IdTokenError("nbf", "token is not valid yet")

    @staticmethod
    def _check_nonce(claims: dict[str, Any], expected: str | None) -> None:
        if expected is None:
            return
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got, expected):
            raise IdTokenError("nonce", "nonce does not match this sign-in")

    async def _check_signature(self, jws: CompactJws, alg: str, *, trusted: bool = True) -> None:
        """``alg`` has passed the allow-list. ``trusted``: the token came over the back channel
        from the IdP's token endpoint (an unknown kid then always gets one refetch; see
        ``JwksCache``)."""
        iat = jws.claims.get("iat")
        issued_at = float(iat) if is_number(iat) else None
        try:
            key = await self.keys.key_for(
                jws.header.get("kid"), alg, issued_at=issued_at, trusted=trusted
            )
        except KeyNotFound as exc:
            raise IdTokenError("signature", str(exc)) from None
        try:
            jws_verify_signature(jws, alg, key.key)
        except JwsSignatureError as exc:  # a bad signature, or a key that cannot verify alg
            raise IdTokenError("signature", str(exc)) from None

    @staticmethod
    def _check_at_hash(at_hash: Any, access_token: str | None, alg: str) -> None:
        if access_token is None:
            return
        expected = token_hash(access_token, alg)
        if not isinstance(at_hash, str) or not hmac.compare_digest(at_hash, expected):
            raise IdTokenError("at_hash", "at_hash does not match the access token")


def unverified_parts(token: Any) -> CompactJws:
    """The parsed compact JWS, not yet verified; ``format`` errors otherwise."""
    try:
        return parse(token)
    except JwsFormatError as exc:
        raise IdTokenError("format", str(exc)) from None


def token_hash(value: str, alg: str) -> str:
    """Left half of the hash named by the JWS algorithm, base64url (OIDC Core 3.1.3.6)."""
    if alg == "EdDSA":
        digest = hashlib.sha512(value.encode("ascii")).digest()
    else:
        bits = alg[2:]
        digest = hashlib.new(f"sha{bits}", value.encode("ascii")).digest()
    half = digest[: len(digest) // 2]
    return base64.urlsafe_b64encode(half).rstrip(b"=").decode("ascii")


def is_number(value: Any) -> bool:
    """A finite JSON number (not a bool). Integers too large for a float are not: comparing
    them with the clock would raise (a 400-digit ``exp`` crashed the check)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
