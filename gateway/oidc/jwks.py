"""An IdP's signing keys, fetched with the gateway's HTTP client and cached.

Follows go-oidc's remote key set: one fetch in flight whose outcome answers every waiter
(``SingleFlight``); the cache is swapped only when a fetch succeeds, so keys stay usable
while the IdP is down; after a failed fetch no new one for ``min_refresh_seconds``.

A key rotation must never fail a sign-in. ID tokens come from the token endpoint over the
back channel, so a browser cannot flood us with made-up ``kid``s: an unknown ``kid`` in an
ID token always gets one refetch, unless a fetch already completed well after the token was
issued (then the IdP had published the key if it existed), and only repeated misses of the
same ``kid`` within ``min_refresh_seconds`` are held back. Logout tokens arrive from anyone
on the network (``/oidc/backchannel-logout``), so for them (``trusted=False``) refetches
also keep the global minimum interval, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import jwt
from jwt.exceptions import PyJWTError

from gateway.http import HttpClient, UpstreamError
from gateway.oidc.jws import shown
from gateway.singleflight import SingleFlight

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# How far the IdP's clock may run behind ours when deciding that a fetch happened "after"
# a token was issued (its iat is the IdP's clock).
SKEW_SECONDS = 60.0
MAX_REMEMBERED_MISSES = 1024


class KeyNotFound(Exception):
    """No usable key for this kid/alg, even after a refetch."""


class JwksCache:
    def __init__(
        self,
        url: str,
        http: HttpClient,
        *,
        min_refresh_seconds: float = 10.0,
        max_age_seconds: float = 3600.0,
        timeout: float = 10.0,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.url = url
        self._http = http
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._timeout = timeout
        self._clock = clock
        self._wall = wall_clock
        self._keys: list[tuple[dict[str, Any], jwt.PyJWK]] = []
        self._fetched_at: float | None = None  # monotonic, for max age
        self._fetched_wall: float | None = None  # wall clock, compared with a token's iat
        self._attempted_at: float | None = None
        self._misses: dict[str, float] = {}
        self.failing = False  # the last fetch did not reach the IdP
        self._flight: SingleFlight[bool] = SingleFlight(min_refresh_seconds, clock)
        self.fetch_count = 0

    @property
    def loaded(self) -> bool:
        return self._fetched_at is not None

    async def key_for(
        self, kid: str | None, alg: str, *, issued_at: float | None = None, trusted: bool = True
    ) -> jwt.PyJWK:
        stale = self._fetched_at is None or self._clock() - self._fetched_at > self._max_age
        if stale:
            await self.refresh()
        key = self._select(kid, alg)
        if key is None and not stale and self._may_refetch(kid, issued_at, trusted):
            await self.refresh()
            key = self._select(kid, alg)
        if key is None:
            raise KeyNotFound(f"no signing key with kid={shown(kid)} for {alg}")
        return key

    def _may_refetch(self, kid: str | None, issued_at: float | None, trusted: bool) -> bool:
        now = self._clock()
        if self._flight.in_flight:
            return True  # join the fetch already running
        if issued_at is not None and self._fetched_wall is not None:
            if self._fetched_wall > issued_at + SKEW_SECONDS:
                return False  # fetched well after the token was issued: the key is not there
        if not trusted and self._attempted_at is not None:
            if now - self._attempted_at < self._min_refresh:
                return False
        missed = self._misses.get(kid or "")
        if missed is not None and now - missed < self._min_refresh:
            return False  # the same kid missed a moment ago
        if len(self._misses) >= MAX_REMEMBERED_MISSES:
            self._misses.clear()
        self._misses[kid or ""] = now
        return True

    async def refresh(self) -> bool:
        """Fetch (or join the fetch in flight); True when the cache was replaced. Within
        ``min_refresh_seconds`` of a failed fetch, answers False without fetching."""
        try:
            return await self._flight.run(self._fetch)
        except UpstreamError:
            return False

    async def _fetch(self) -> bool:
        self._attempted_at = self._clock()
        self.fetch_count += 1
        try:
            doc = await self._http.get_json(self.url, timeout=self._timeout)
        except UpstreamError as exc:
            self.failing = True
            log.warning("JWKS fetch failed, keeping %d cached keys: %s", len(self._keys), exc)
            raise
        self.failing = False
        keys = _parse(doc)
        if not keys:
            log.warning("JWKS at %s has no usable signing keys; keeping the cache", self.url)
            return False
        self._keys = keys
        self._fetched_at = self._clock()
        self._fetched_wall = self._wall()
        return True

    def _select(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        candidates = [(data, key) for data, key in self._keys if _fits(data, alg)]
        if kid is not None:
            return next((key for data, key in candidates if data.get("kid") == kid), None)
        return candidates[0][1] if len(candidates) == 1 else None


ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
ASYMMETRIC |= {"EdDSA"}
_KTY_FOR_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CURVE_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


def _fits(data: dict[str, Any], alg: str) -> bool:
    declared = data.get("alg")
    if declared is not None and declared != alg:
        return False
    if alg in _CURVE_FOR_ALG and data.get("crv") != _CURVE_FOR_ALG[alg]:
        return False
    return data.get("kty") == _KTY_FOR_ALG.get(alg[:2])


def _parse(doc: Any) -> list[tuple[dict[str, Any], jwt.PyJWK]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        return []
    keys = []
    for data in doc["keys"]:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        if data.get("kty") == "oct":  # never accept a symmetric key from a public JWKS
            continue
        if "alg" in data and data["alg"] not in ASYMMETRIC:
            continue
        try:
            keys.append((data, jwt.PyJWK(data, algorithm=data.get("alg"))))
        except (PyJWTError, NotImplementedError):  # an unusable key is skipped, not fatal
            continue
    return keys
