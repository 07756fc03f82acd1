"""An IdP's signing keys, fetched with Tornado's async client and cached.

Follows go-oidc's remote key set: an unknown ``kid`` triggers one refetch, with at most one
fetch in flight; the cache is swapped only when a fetch succeeds, so keys stay usable while
the IdP is down. A minimum interval between refetches keeps a stream of bogus ``kid``s from
hammering the IdP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt
from jwt.exceptions import PyJWTError

from gateway.http import HttpClient, UpstreamError

log = logging.getLogger(__name__)

Clock = Callable[[], float]


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
    ) -> None:
        self.url = url
        self._http = http
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._timeout = timeout
        self._clock = clock
        self._keys: list[tuple[dict[str, Any], jwt.PyJWK]] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetch_count = 0
        self._finished = 0

    @property
    def loaded(self) -> bool:
        return self._fetched_at is not None

    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        stale = self._fetched_at is None or self._clock() - self._fetched_at > self._max_age
        if stale:
            await self.refresh()
        key = self._select(kid, alg)
        if key is None and not stale:
            await self.refresh()
            key = self._select(kid, alg)
        if key is None:
            raise KeyNotFound(f"no signing key with kid={kid!r} for {alg}")
        return key

    async def refresh(self) -> bool:
        """Refetch unless one ran too recently; True when the cache was replaced."""
        seen = self._finished
        async with self._lock:
            if self._finished != seen:  # another caller fetched while we waited: use that
                return False
            if self._attempted_at is not None:
                if self._clock() - self._attempted_at < self._min_refresh:
                    return False
            self._attempted_at = self._clock()
            self.fetch_count += 1
            try:
                doc = await self._http.get_json(self.url, timeout=self._timeout)
            except UpstreamError as exc:
                self._finished += 1
                log.warning("JWKS fetch failed, keeping %d cached keys: %s", len(self._keys), exc)
                return False
            self._finished += 1
            keys = _parse(doc)
            if not keys:
                log.warning("JWKS at %s has no usable signing keys; keeping the cache", self.url)
                return False
            self._keys = keys
            self._fetched_at = self._clock()
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
