"""Unit tests for gateway.oidc.jwks: fetch, cache, refetch on unknown kid, rate limit, outages.

A fake HttpClient serves JWKS documents from a script; the clock is injected so the minimum
refetch interval and the maximum age can be crossed without sleeping.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gateway.http import UpstreamError
from gateway.oidc.jwks import JwksCache, KeyNotFound

URL = "https://idp.example.org/protocol/openid-connect/certs"

RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_P256 = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    data = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, **({"kid": kid} if kid else {}), **extra}


def ec_jwk(kid: str | None, **extra: Any) -> dict[str, Any]:
    data = ECAlgorithm.to_jwk(EC_P256.public_key(), as_dict=True)
    return {**data, **({"kid": kid} if kid else {}), **extra}


def ed_jwk(kid: str, **extra: Any) -> dict[str, Any]:
    return {**OKPAlgorithm.to_jwk(ED.public_key(), as_dict=True), "kid": kid, **extra}


def doc(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


class Clock:
    """A clock the test moves by hand; ``tick`` advances it on every read."""

    def __init__(self, now: float = 1000.0, tick: float = 0.0) -> None:
        self.now = now
        self.tick = tick

    def __call__(self) -> float:
        value = self.now
        self.now += self.tick
        return value


class FakeHttp:
    """Serves scripted responses (dicts, or exceptions to raise); the last one repeats."""

    def __init__(self, *responses: Any, gate: asyncio.Event | None = None) -> None:
        self.responses = list(responses)
        self.gate = gate
        self.calls: list[tuple[str, float | None]] = []
        self.started = asyncio.Event()

    async def get_json(self, url: str, headers: Any = None, timeout: float | None = None) -> Any:
        self.calls.append((url, timeout))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        response = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(response, BaseException):
            raise response
        return response


def outage() -> UpstreamError:
    return UpstreamError(URL, "unreachable (ConnectionRefusedError)")


def cache(http: FakeHttp, clock: Clock, **kwargs: Any) -> JwksCache:
    return JwksCache(URL, http, clock=clock, **kwargs)


def public_numbers(key: jwt.PyJWK) -> Any:
    return key.key.public_numbers()


def spki(public_key: Any) -> bytes:
    return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.asyncio
async def test_first_use_fetches_once_with_timeout() -> None:
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")))
    keys = cache(http, Clock(), timeout=3.5)
    assert not keys.loaded
    key = await keys.key_for("a", "RS256")
    assert public_numbers(key) == RSA_A.public_key().public_numbers()
    assert http.calls == [(URL, 3.5)]
    assert keys.fetch_count == 1
    assert keys.loaded


@pytest.mark.asyncio
async def test_known_kid_served_from_cache() -> None:
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")))
    clock = Clock()
    keys = cache(http, clock)
    for _ in range(5):
        await keys.key_for("a", "RS256")
        clock.now += 100  # well past the refetch interval, within max age
    assert len(http.calls) == 1


@pytest.mark.asyncio
async def test_unknown_kid_triggers_exactly_one_refetch() -> None:
    """Key rotation: the new kid appears after one refetch, then comes from the cache."""
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")), doc(rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")))
    clock = Clock()
    keys = cache(http, clock, min_refresh_seconds=10)
    await keys.key_for("a", "RS256")
    clock.now += 60
    key = await keys.key_for("b", "RS256")
    assert public_numbers(key) == RSA_B.public_key().public_numbers()
    assert len(http.calls) == 2
    await keys.key_for("b", "RS256")
    await keys.key_for("a", "RS256")
    assert len(http.calls) == 2


@pytest.mark.asyncio
async def test_unknown_kid_still_unknown_after_refetch() -> None:
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")))
    clock = Clock()
    keys = cache(http, clock, min_refresh_seconds=10)
    await keys.key_for("a", "RS256")
    clock.now += 60
    with pytest.raises(KeyNotFound, match="kid='nope'"):
        await keys.key_for("nope", "RS256")
    assert len(http.calls) == 2


@pytest.mark.asyncio
async def test_untrusted_kids_refetch_at_most_once_per_interval() -> None:
    """Logout tokens come from anyone: a stream of bogus kids refetches at most once per
    min_refresh_seconds."""
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")))
    clock = Clock()
    keys = cache(http, clock, min_refresh_seconds=10)
    await keys.key_for("a", "RS256")
    clock.now += 60
    with pytest.raises(KeyNotFound):
        await keys.key_for("bogus-1", "RS256", trusted=False)
    assert len(http.calls) == 2
    clock.now += 5  # inside the interval: no fetch
    with pytest.raises(KeyNotFound):
        await keys.key_for("bogus-2", "RS256", trusted=False)
    assert len(http.calls) == 2
    clock.now += 5.5  # 10.5 s after the last attempt
    with pytest.raises(KeyNotFound):
        await keys.key_for("bogus-3", "RS256", trusted=False)
    assert len(http.calls) == 3
    assert keys.fetch_count == 3


@pytest.mark.asyncio
async def test_rotation_right_after_a_fetch_never_fails_an_id_token() -> None:
    """The IdP rotates its key a second after the gateway fetched (start-up counts): the
    first ID token with the new kid still verifies."""
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")), doc(rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")))
    clock, wall = Clock(), Clock(now=1_700_000_000.0)
    keys = JwksCache(URL, http, clock=clock, wall_clock=wall, min_refresh_seconds=10)
    await keys.key_for("a", "RS256")
    clock.now += 1
    wall.now += 1
    key = await keys.key_for("b", "RS256", issued_at=wall.now)
    assert public_numbers(key) == RSA_B.public_key().public_numbers()
    assert len(http.calls) == 2


@pytest.mark.asyncio
async def test_repeated_misses_of_one_kid_are_rate_limited() -> None:
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")))
    clock, wall = Clock(), Clock(now=1_700_000_000.0)
    keys = JwksCache(URL, http, clock=clock, wall_clock=wall, min_refresh_seconds=10)
    await keys.key_for("a", "RS256")
    for _ in range(3):
        clock.now += 1
        with pytest.raises(KeyNotFound):
            await keys.key_for("gone", "RS256")
    assert len(http.calls) == 2  # one refetch for "gone", then held back
    clock.now += 10
    with pytest.raises(KeyNotFound):
        await keys.key_for("gone", "RS256")
    assert len(http.calls) == 3


@pytest.mark.asyncio
async def test_no_refetch_when_a_fetch_came_well_after_the_token_was_issued() -> None:
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")))
    clock, wall = Clock(), Clock(now=1_700_000_000.0)
    keys = JwksCache(URL, http, clock=clock, wall_clock=wall, min_refresh_seconds=10)
    issued = wall.now - 3600  # an old token: the key set was fetched long after it
    await keys.key_for("a", "RS256")
    with pytest.raises(KeyNotFound):
        await keys.key_for("old", "RS256", issued_at=issued)
    assert len(http.calls) == 1


@pytest.mark.asyncio
async def test_max_age_forces_refetch() -> None:
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")), doc(rsa_jwk(RSA_B, "a")))
    clock = Clock()
    keys = cache(http, clock, max_age_seconds=600)
    await keys.key_for("a", "RS256")
    clock.now += 601
    key = await keys.key_for("a", "RS256")
    assert public_numbers(key) == RSA_B.public_key().public_numbers()
    assert len(http.calls) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("preloaded", "min_refresh", "tick"),
    [
        pytest.param(False, 10.0, 0.0, id="first_use_frozen_clock"),
        pytest.param(False, 10.0, 0.001, id="first_use_ticking_clock"),
        pytest.param(True, 10.0, 0.001, id="unknown_kid_ticking_clock"),
        pytest.param(False, 0.0, 0.001, id="first_use_no_min_interval"),
        pytest.param(True, 0.0, 0.001, id="unknown_kid_no_min_interval"),
    ],
)
async def test_concurrent_lookups_share_one_fetch(
    preloaded: bool, min_refresh: float, tick: float
) -> None:
    """Callers waiting on an in-flight fetch use its result instead of fetching again."""
    rotated = doc(rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b"))
    gate = asyncio.Event()
    clock = Clock(tick=tick)
    if preloaded:
        http = FakeHttp(doc(rsa_jwk(RSA_A, "a")), rotated)
        keys = cache(http, clock, min_refresh_seconds=min_refresh)
        await keys.key_for("a", "RS256")
        clock.now += 60
        http.started.clear()
        http.gate = gate
    else:
        http = FakeHttp(rotated, gate=gate)
        keys = cache(http, clock, min_refresh_seconds=min_refresh)
    before = len(http.calls)
    tasks = [asyncio.create_task(keys.key_for("b", "RS256")) for _ in range(5)]
    await http.started.wait()
    for _ in range(5):  # let every task reach the lock
        await asyncio.sleep(0)
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert {public_numbers(k) for k in results} == {RSA_B.public_key().public_numbers()}
    assert len(http.calls) - before == 1


@pytest.mark.asyncio
async def test_outage_keeps_serving_cached_keys() -> None:
    """An IdP outage at max age or on an unknown kid never empties the cache."""
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")), outage())
    clock = Clock()
    keys = cache(http, clock, max_age_seconds=600, min_refresh_seconds=10)
    await keys.key_for("a", "RS256")
    clock.now += 601  # stale: refetch fails, cached key still served
    key = await keys.key_for("a", "RS256")
    assert public_numbers(key) == RSA_A.public_key().public_numbers()
    assert len(http.calls) == 2
    clock.now += 11
    with pytest.raises(KeyNotFound):
        await keys.key_for("b", "RS256")
    assert len(http.calls) == 3
    assert public_numbers(await keys.key_for("a", "RS256")) == (RSA_A.public_key().public_numbers())


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"keys": []}, id="empty_key_list"),
        pytest.param({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "a"}]}, id="only_oct"),
        pytest.param({"nokeys": True}, id="no_keys_member"),
        pytest.param(["not", "an", "object"], id="not_an_object"),
        pytest.param({"keys": [{"kty": "AKP", "kid": "a", "pub": "AAAA"}]}, id="unknown_kty"),
    ],
)
async def test_unusable_document_keeps_cache(bad: Any) -> None:
    """A JWKS with no usable signing key does not replace a good cache."""
    http = FakeHttp(doc(rsa_jwk(RSA_A, "a")), bad)
    clock = Clock()
    keys = cache(http, clock, max_age_seconds=600)
    await keys.key_for("a", "RS256")
    clock.now += 601
    key = await keys.key_for("a", "RS256")
    assert public_numbers(key) == RSA_A.public_key().public_numbers()
    assert len(http.calls) == 2


@pytest.mark.asyncio
async def test_first_fetch_fails_then_recovers_after_interval() -> None:
    http = FakeHttp(outage(), doc(rsa_jwk(RSA_A, "a")))
    clock = Clock()
    keys = cache(http, clock, min_refresh_seconds=10)
    with pytest.raises(KeyNotFound):
        await keys.key_for("a", "RS256")
    assert not keys.loaded
    clock.now += 5
    with pytest.raises(KeyNotFound):  # rate limited: the IdP is not hammered while down
        await keys.key_for("a", "RS256")
    assert len(http.calls) == 1
    clock.now += 6
    assert public_numbers(await keys.key_for("a", "RS256")) == (RSA_A.public_key().public_numbers())
    assert len(http.calls) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "odd_key",
    [
        pytest.param(
            {"kty": "AKP", "alg": "ML-DSA-44", "pub": "AAAA", "kid": "pq"}, id="unknown_kty"
        ),
        pytest.param(
            {"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}, id="rsa_modulus_too_small"
        ),
        pytest.param(
            {"kty": "EC", "crv": "P-256", "kid": "x", "x": "AAAA", "y": "AAAA"},
            id="ec_coordinates_wrong_length",
        ),
        pytest.param({"kty": "RSA", "kid": "x"}, id="rsa_without_modulus"),
        pytest.param("not-a-jwk", id="not_an_object"),
    ],
)
async def test_odd_key_next_to_good_ones_is_skipped(odd_key: Any) -> None:
    """One key PyJWT cannot load must not take the IdP's other keys down with it."""
    http = FakeHttp(doc(odd_key, rsa_jwk(RSA_A, "a")))
    keys = cache(http, Clock())
    key = await keys.key_for("a", "RS256")
    assert public_numbers(key) == RSA_A.public_key().public_numbers()


# (id, JWKS keys, kid asked for, alg asked for, expected key or None for KeyNotFound)
SELECT_ROWS = [
    ("rsa_declared_rs256_for_rs256", [rsa_jwk(RSA_A, "a", alg="RS256")], "a", "RS256", RSA_A),
    ("rsa_declared_rs256_not_for_ps256", [rsa_jwk(RSA_A, "a", alg="RS256")], "a", "PS256", None),
    ("rsa_declared_ps256_not_for_rs256", [rsa_jwk(RSA_A, "a", alg="PS256")], "a", "RS256", None),
    ("rsa_undeclared_for_rs256", [rsa_jwk(RSA_A, "a")], "a", "RS256", RSA_A),
    ("rsa_undeclared_for_ps256", [rsa_jwk(RSA_A, "a")], "a", "PS256", RSA_A),
    ("rsa_undeclared_for_rs512", [rsa_jwk(RSA_A, "a")], "a", "RS512", RSA_A),
    ("rsa_not_for_es256", [rsa_jwk(RSA_A, "a")], "a", "ES256", None),
    ("rsa_not_for_hs256", [rsa_jwk(RSA_A, "a")], "a", "HS256", None),
    ("rsa_not_for_none", [rsa_jwk(RSA_A, "a")], "a", "none", None),
    ("ec_for_es256", [ec_jwk("e")], "e", "ES256", EC_P256),
    ("ec_not_for_rs256", [ec_jwk("e")], "e", "RS256", None),
    ("okp_for_eddsa", [ed_jwk("d")], "d", "EdDSA", ED),
    ("okp_not_for_es256", [ed_jwk("d")], "d", "ES256", None),
    ("use_sig_accepted", [rsa_jwk(RSA_A, "a", use="sig")], "a", "RS256", RSA_A),
    ("use_enc_ignored", [rsa_jwk(RSA_A, "a", use="enc")], "a", "RS256", None),
    (
        "use_enc_ignored_sig_twin_used",
        [rsa_jwk(RSA_B, "a", use="enc"), rsa_jwk(RSA_A, "a", use="sig")],
        "a",
        "RS256",
        RSA_A,
    ),
    ("oct_ignored_for_hs256", [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}], "s", "HS256", None),
    (
        "oct_ignored_for_rs256",
        [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}, rsa_jwk(RSA_A, "a")],
        "s",
        "RS256",
        None,
    ),
    ("kid_must_match", [rsa_jwk(RSA_A, "a")], "b", "RS256", None),
    ("no_kid_single_fitting_key", [rsa_jwk(RSA_A, None)], None, "RS256", RSA_A),
    (
        "no_kid_one_fitting_among_types",
        [rsa_jwk(RSA_A, "a"), ec_jwk("e")],
        None,
        "ES256",
        EC_P256,
    ),
    (
        "no_kid_one_fitting_by_declared_alg",
        [rsa_jwk(RSA_A, "a", alg="RS256"), rsa_jwk(RSA_B, "b", alg="PS256")],
        None,
        "PS256",
        RSA_B,
    ),
    (
        "no_kid_two_fitting_keys_ambiguous",
        [rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")],
        None,
        "RS256",
        None,
    ),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("keys_in_doc", "kid", "alg", "expected"),
    [pytest.param(k, kid, alg, exp, id=name) for name, k, kid, alg, exp in SELECT_ROWS],
)
async def test_key_selection(
    keys_in_doc: list[dict[str, Any]], kid: str | None, alg: str, expected: Any
) -> None:
    """Only signing keys whose type (and declared alg, if any) fit the token's alg are used."""
    keys = cache(FakeHttp(doc(*keys_in_doc)), Clock())
    if expected is None:
        with pytest.raises(KeyNotFound):
            await keys.key_for(kid, alg)
        return
    key = await keys.key_for(kid, alg)
    assert spki(key.key) == spki(expected.public_key())
