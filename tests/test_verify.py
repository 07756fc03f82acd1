"""Unit tests for gateway.oidc.verify: the ID-token checklist, one row per security case.

Keys come from a tiny fake key source (``async key_for(kid, alg)``) so each row exercises the
verifier alone; a few rows go through a real ``JwksCache`` fed by a fake HTTP client to show
how the key-selection rules and the verifier meet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.oidc.jwks import JwksCache, KeyNotFound
from gateway.oidc.verify import IdTokenError, IdTokenVerifier, VerifierConfig, token_hash

NOW = 1_700_000_000
ISSUER = "https://idp.example.org/realms/staff"
CLIENT_ID = "jitsi-gateway"
NONCE = "n-0S6_WzA2Mj"
ACCESS_TOKEN = "SlAV32hkKG-access-token"
LEEWAY = 60

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC384_KEY = ec.generate_private_key(ec.SECP384R1())

DROP = object()  # a claim/header value meaning "leave this out"

# Checks that must fail before any key is looked up (go-oidc: cheap checks first).
CHEAP_CHECKS = {"format", "sub", "alg", "iss", "aud", "azp", "exp", "iat", "nbf", "nonce"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    return {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, **extra}


class FakeKeys:
    """A key source: serves PyJWKs by kid, records every lookup."""

    def __init__(self, jwks: list[dict[str, Any]]) -> None:
        self.keys = {j["kid"]: jwt.PyJWK(j, algorithm=j.get("alg")) for j in jwks}
        self.calls: list[tuple[str | None, str]] = []

    async def key_for(
        self, kid: str | None, alg: str, *, issued_at: float | None = None, trusted: bool = True
    ) -> jwt.PyJWK:
        self.calls.append((kid, alg))
        if kid not in self.keys:
            raise KeyNotFound(f"no signing key with kid={kid!r} for {alg}")
        return self.keys[kid]


class FakeHttp:
    """Answers every get_json with the same JWKS document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.calls = 0

    async def get_json(self, url: str, headers: Any = None, timeout: float | None = None) -> Any:
        self.calls += 1
        return self.doc


def default_keys() -> FakeKeys:
    return FakeKeys([rsa_jwk(RSA_KEY, "rsa-1", alg="RS256"), ec_jwk(EC_KEY, "ec-1", alg="ES256")])


def base_claims() -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "sub": "alice-sub",
        "aud": CLIENT_ID,
        "exp": NOW + 300,
        "iat": NOW - 5,
        "nonce": NONCE,
    }


def sign(
    claims: dict[str, Any] | None = None,
    *,
    alg: str = "RS256",
    key: Any = RSA_KEY,
    kid: Any = "rsa-1",
    **changes: Any,
) -> str:
    """An ID token from the base claims with ``changes`` applied (DROP removes a claim)."""
    body = base_claims() if claims is None else claims
    for name, value in changes.items():
        if value is DROP:
            body.pop(name, None)
        else:
            body[name] = value
    headers = {} if kid is DROP else {"kid": kid}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{b64json(header)}.{b64json(claims)}.{signature}"


def hs256_with_public_pem() -> str:
    """The classic confusion: HMAC keyed with the IdP's public key PEM."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa-1'})}."
    signing_input += b64json(base_claims())
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def sign_header(header: dict[str, Any]) -> str:
    """RS256 over an arbitrary header (PyJWT refuses to encode some of them)."""
    signing_input = f"{b64json(header)}.{b64json(base_claims())}"
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), RSA_KEY)
    return f"{signing_input}.{b64url(signature)}"


def respelled(segment: int, change: Callable[[str], str]) -> str:
    """A valid token with one segment's text changed (its bytes may stay the same)."""
    parts = sign().split(".")
    parts[segment] = change(parts[segment])
    return ".".join(parts)


def stray_bits(segment: str) -> str:
    """The same bytes spelled with different unused low bits in the last character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(segment[-1])
    unused = {2: 0b1111, 3: 0b11}[len(segment) % 4]
    return segment[:-1] + alphabet[last ^ (unused & 1)]


def tampered_payload() -> str:
    header, _, signature = sign().split(".")
    forged = {**base_claims(), "sub": "mallory-sub"}
    return f"{header}.{b64json(forged)}.{signature}"


def tampered_signature() -> str:
    header, payload, signature = sign().split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64url(bytes(raw))}"


def signed_by_other_key() -> str:
    return sign(key=OTHER_RSA_KEY)


def verifier(
    keys: Any,
    algorithms: tuple[str, ...] = ("RS256", "ES256"),
    clock: Callable[[], float] = lambda: NOW,
    **kwargs: Any,
) -> IdTokenVerifier:
    config = VerifierConfig(ISSUER, CLIENT_ID, algorithms, leeway=LEEWAY)
    return IdTokenVerifier(config, keys, clock=clock, **kwargs)


# (id, token factory, access token handed to verify, failing check or None when valid)
ROWS: list[tuple[str, Callable[[], str], str | None, str | None]] = [
    ("valid_rs256", lambda: sign(), None, None),
    ("valid_es256", lambda: sign(alg="ES256", key=EC_KEY, kid="ec-1"), None, None),
    ("valid_list_aud_with_azp", lambda: sign(aud=[CLIENT_ID, "other"], azp=CLIENT_ID), None, None),
    ("valid_single_aud_in_list", lambda: sign(aud=[CLIENT_ID]), None, None),
    ("valid_azp_single_aud", lambda: sign(azp=CLIENT_ID), None, None),
    ("valid_nbf_in_past", lambda: sign(nbf=NOW - 10), None, None),
    ("alg_none", lambda: unsigned({"alg": "none", "typ": "JWT"}, base_claims()), None, "alg"),
    (
        "alg_none_with_kid",
        lambda: unsigned({"alg": "none", "kid": "rsa-1"}, base_claims()),
        None,
        "alg",
    ),
    ("hs256_keyed_with_rsa_public_pem", hs256_with_public_pem, None, "alg"),
    ("alg_not_in_allow_list_rs384", lambda: sign(alg="RS384"), None, "alg"),
    ("alg_not_in_allow_list_ps256", lambda: sign(alg="PS256"), None, "alg"),
    ("wrong_iss", lambda: sign(iss="https://evil.example.org/realms/staff"), None, "iss"),
    ("iss_trailing_slash_is_another_issuer", lambda: sign(iss=ISSUER + "/"), None, "iss"),
    ("missing_iss", lambda: sign(iss=DROP), None, "iss"),
    ("wrong_aud", lambda: sign(aud="another-client"), None, "aud"),
    ("missing_aud", lambda: sign(aud=DROP), None, "aud"),
    ("aud_not_string", lambda: sign(aud=[CLIENT_ID, 7]), None, "aud"),
    ("several_aud_without_azp", lambda: sign(aud=[CLIENT_ID, "other"]), None, "azp"),
    (
        "azp_for_another_client",
        lambda: sign(aud=[CLIENT_ID, "other"], azp="other"),
        None,
        "azp",
    ),
    ("azp_another_client_single_aud", lambda: sign(azp="other"), None, "azp"),
    ("expired_beyond_leeway", lambda: sign(exp=NOW - LEEWAY - 1), None, "exp"),
    ("expired_within_leeway_accepted", lambda: sign(exp=NOW - LEEWAY + 1), None, None),
    ("expired_exactly_at_leeway_accepted", lambda: sign(exp=NOW - LEEWAY), None, None),
    ("missing_exp", lambda: sign(exp=DROP), None, "exp"),
    ("exp_not_a_number", lambda: sign(exp=str(NOW + 300)), None, "exp"),
    ("exp_boolean", lambda: sign(exp=True), None, "exp"),
    ("exp_nan", lambda: sign(exp=math.nan), None, "exp"),
    ("iat_in_future", lambda: sign(iat=NOW + LEEWAY + 1), None, "iat"),
    ("iat_slightly_ahead_accepted", lambda: sign(iat=NOW + LEEWAY - 1), None, None),
    ("missing_iat", lambda: sign(iat=DROP), None, "iat"),
    ("nbf_in_future", lambda: sign(nbf=NOW + LEEWAY + 1), None, "nbf"),
    ("nbf_not_a_number", lambda: sign(nbf="soon"), None, "nbf"),
    ("wrong_nonce", lambda: sign(nonce="another-sign-in"), None, "nonce"),
    ("missing_nonce", lambda: sign(nonce=DROP), None, "nonce"),
    ("nonce_not_string", lambda: sign(nonce=12345), None, "nonce"),
    ("tampered_payload", tampered_payload, None, "signature"),
    ("tampered_signature", tampered_signature, None, "signature"),
    ("signed_by_another_key", signed_by_other_key, None, "signature"),
    ("unknown_kid", lambda: sign(kid="rotated-away"), None, "signature"),
    ("kid_not_string", lambda: sign_header({"alg": "RS256", "kid": 42}), None, "format"),
    (
        "at_hash_correct",
        lambda: sign(at_hash=token_hash(ACCESS_TOKEN, "RS256")),
        ACCESS_TOKEN,
        None,
    ),
    (
        "at_hash_correct_es256",
        lambda: sign(
            alg="ES256", key=EC_KEY, kid="ec-1", at_hash=token_hash(ACCESS_TOKEN, "ES256")
        ),
        ACCESS_TOKEN,
        None,
    ),
    ("at_hash_wrong", lambda: sign(at_hash=token_hash("other", "RS256")), ACCESS_TOKEN, "at_hash"),
    ("at_hash_not_string", lambda: sign(at_hash=123), ACCESS_TOKEN, "at_hash"),
    ("at_hash_absent_accepted", lambda: sign(), ACCESS_TOKEN, None),
    ("two_segments", lambda: ".".join(sign().split(".")[:2]), None, "format"),
    ("four_segments", lambda: sign() + ".extra", None, "format"),
    ("garbage", lambda: "not.a.jwt", None, "format"),
    ("empty_string", lambda: "", None, "format"),
    (
        "payload_not_json",
        lambda: f"{b64json({'alg': 'RS256'})}.{b64url(b'{oops')}.",
        None,
        "format",
    ),
    ("payload_json_array", lambda: unsigned({"alg": "RS256"}, [1, 2]), None, "format"),
    ("missing_sub", lambda: sign(sub=DROP), None, "sub"),
    # The parser (gateway.oidc.jws): unpadded canonical base64url, JSON objects, no crit.
    ("padded_signature", lambda: respelled(2, lambda s: s + "=" * (-len(s) % 4)), None, "format"),
    ("signature_bits_respelled", lambda: respelled(2, stray_bits), None, "format"),
    ("standard_alphabet", lambda: respelled(2, lambda s: "+" + s[1:]), None, "format"),
    ("space_in_payload", lambda: respelled(1, lambda s: s[:8] + " " + s[8:]), None, "format"),
    (
        "segment_length_one_mod_four",
        lambda: respelled(1, lambda s: s + "AAAA"[: (1 - len(s)) % 4]),
        None,
        "format",
    ),
    ("header_not_an_object", lambda: unsigned(["RS256"], base_claims()), None, "format"),
    (
        "crit_header",
        lambda: sign_header({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}),
        None,
        "format",
    ),
    (
        "unencoded_payload_without_crit",
        lambda: sign_header({"alg": "RS256", "kid": "rsa-1", "b64": False}),
        None,
        "format",
    ),
    ("exp_too_large_for_a_float", lambda: sign(exp=10**400), None, "exp"),
    ("iat_too_large_for_a_float", lambda: sign(iat=10**400), None, "iat"),
    ("nbf_too_large_for_a_float", lambda: sign(nbf=10**400), None, "nbf"),
    (
        "unencoded_payload_header",
        lambda: sign_header({"alg": "RS256", "kid": "rsa-1", "b64": False, "crit": ["b64"]}),
        None,
        "format",
    ),
    ("empty_sub", lambda: sign(sub=""), None, "sub"),
    ("sub_not_string", lambda: sign(sub=12345), None, "sub"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("make_token", "access_token", "failed_check"),
    [pytest.param(f, at, check, id=name) for name, f, at, check in ROWS],
)
async def test_verify(
    make_token: Callable[[], str], access_token: str | None, failed_check: str | None
) -> None:
    """Each row either passes the whole checklist or fails exactly the named check."""
    keys = default_keys()
    v = verifier(keys)
    token = make_token()
    if failed_check is None:
        claims = await v.verify(token, nonce=NONCE, access_token=access_token)
        assert claims["sub"] == "alice-sub"
        assert claims["iss"] == ISSUER
        assert len(keys.calls) == 1
        return
    with pytest.raises(IdTokenError) as info:
        await v.verify(token, nonce=NONCE, access_token=access_token)
    assert info.value.check == failed_check, str(info.value)
    assert str(info.value).startswith(f"{failed_check}: ")
    if failed_check in CHEAP_CHECKS:
        assert keys.calls == [], "a cheap check failed only after a key lookup"


@pytest.mark.asyncio
async def test_error_never_contains_the_token() -> None:
    """The detail names the check, never echoes the token or its signature."""
    token = tampered_signature()
    with pytest.raises(IdTokenError) as info:
        await verifier(default_keys()).verify(token, nonce=NONCE)
    assert token.split(".")[2] not in str(info.value)
    assert token not in info.value.detail


@pytest.mark.asyncio
async def test_token_values_in_details_are_cut_short() -> None:
    """Details quote the token's own alg or issuer; a logout token comes from anyone, so a
    quoted value is cut to about 80 characters."""
    long_iss = "https://evil.example.org/" + "x" * 5000
    with pytest.raises(IdTokenError) as info:
        await verifier(default_keys()).verify(sign(iss=long_iss), nonce=NONCE)
    assert info.value.check == "iss"
    assert len(info.value.detail) < 200 and "evil.example.org" in info.value.detail
    with pytest.raises(IdTokenError) as info:
        await verifier(default_keys()).verify(
            unsigned({"alg": "x" * 5000}, base_claims()), nonce=NONCE
        )
    assert info.value.check == "alg" and len(info.value.detail) < 200


@pytest.mark.asyncio
async def test_at_hash_not_checked_without_access_token() -> None:
    """Without an access token there is nothing to bind at_hash to (code flow, OIDC 3.1.3.8)."""
    token = sign(at_hash="bogus")
    claims = await verifier(default_keys()).verify(token, nonce=NONCE, access_token=None)
    assert claims["at_hash"] == "bogus"


@pytest.mark.asyncio
async def test_clock_is_injected() -> None:
    """The same token passes now and fails once the injected clock moves past exp + leeway."""
    now = [float(NOW)]
    v = verifier(default_keys(), clock=lambda: now[0])
    token = sign()
    assert (await v.verify(token, nonce=NONCE))["sub"] == "alice-sub"
    now[0] = NOW + 300 + LEEWAY + 1
    with pytest.raises(IdTokenError) as info:
        await v.verify(token, nonce=NONCE)
    assert info.value.check == "exp"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("iss", "accepted"),
    [
        pytest.param("https://login.example.com/tenant-a/v2.0", True, id="resolver_accepts"),
        pytest.param("https://login.example.com/tenant-b/v2.0", False, id="resolver_refuses"),
    ],
)
async def test_issuer_check_replaces_exact_match(iss: str, accepted: bool) -> None:
    """A templated-issuer resolver decides instead of the configured issuer string."""
    seen: list[tuple[str, str]] = []

    def check(got: str, claims: dict[str, Any]) -> bool:
        seen.append((got, claims["sub"]))
        return got == "https://login.example.com/tenant-a/v2.0"

    v = verifier(default_keys(), issuer_check=check)
    token = sign(iss=iss)
    if accepted:
        assert (await v.verify(token, nonce=NONCE))["iss"] == iss
    else:
        with pytest.raises(IdTokenError) as info:
            await v.verify(token, nonce=NONCE)
        assert info.value.check == "iss"
    assert seen == [(iss, "alice-sub")]


# Rows through a real JwksCache: the key-selection rules meet the verifier.
def _cache_rows() -> list[Any]:
    rsa_doc = {"keys": [rsa_jwk(RSA_KEY, "rsa-1")]}
    ec384_doc = {"keys": [ec_jwk(EC384_KEY, "ec-384")]}
    confusion = hs256_with_public_pem()
    curve_swap = sign(alg="ES384", key=EC384_KEY, kid="ec-384")
    _, p, s = curve_swap.split(".")
    curve_swap = f"{b64json({'alg': 'ES256', 'kid': 'ec-384'})}.{p}.{s}"
    return [
        pytest.param(rsa_doc, ("RS256",), sign(), None, id="rsa_jwk_without_alg_valid"),
        pytest.param(rsa_doc, ("RS256",), sign(kid=DROP), None, id="no_kid_single_key_valid"),
        pytest.param(
            rsa_doc, ("RS256", "HS256"), confusion, "signature", id="hs256_confusion_allowed_alg"
        ),
        pytest.param(
            ec384_doc, ("ES256", "ES384"), curve_swap, "signature", id="es256_header_p384_key"
        ),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize(("doc", "algorithms", "token", "failed_check"), _cache_rows())
async def test_verify_with_jwks_cache(
    doc: dict[str, Any], algorithms: tuple[str, ...], token: str, failed_check: str | None
) -> None:
    """Even a careless allow-list or a key on another curve ends in IdTokenError, not a crash."""
    cache = JwksCache("https://idp.example.org/jwks", FakeHttp(doc), clock=lambda: 0.0)
    v = verifier(cache, algorithms=algorithms)
    if failed_check is None:
        assert (await v.verify(token, nonce=NONCE))["sub"] == "alice-sub"
        return
    with pytest.raises(IdTokenError) as info:
        await v.verify(token, nonce=NONCE)
    assert info.value.check == failed_check


def _expected_hash(value: str, name: str) -> str:
    digest = hashlib.new(name, value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).decode().rstrip("=")


@pytest.mark.parametrize(
    ("alg", "hash_name"),
    [
        pytest.param("RS256", "sha256", id="rs256_sha256"),
        pytest.param("PS256", "sha256", id="ps256_sha256"),
        pytest.param("ES256", "sha256", id="es256_sha256"),
        pytest.param("RS384", "sha384", id="rs384_sha384"),
        pytest.param("ES512", "sha512", id="es512_sha512"),
        pytest.param("EdDSA", "sha512", id="eddsa_ed25519_sha512"),
    ],
)
def test_token_hash(alg: str, hash_name: str) -> None:
    """Left half of the algorithm's hash, base64url without padding (OIDC Core 3.1.3.6)."""
    value = "jHkWEdUXMU1BwAsC4vtUsZwnNBRvfJ3dWMkQYbJNqEM"
    got = token_hash(value, alg)
    assert got == _expected_hash(value, hash_name)
    assert "=" not in got
    assert len(base64.urlsafe_b64decode(got + "=" * (-len(got) % 4))) == (
        hashlib.new(hash_name).digest_size // 2
    )


def test_token_hash_known_vector() -> None:
    """A vector worked out by hand: SHA-256("abc") left half = ba7816bf8f01cfea414140de5dae2223."""
    expected = b64url(bytes.fromhex("ba7816bf8f01cfea414140de5dae2223"))
    assert token_hash("abc", "RS256") == expected == "ungWv48Bz-pBQUDeXa4iIw"
