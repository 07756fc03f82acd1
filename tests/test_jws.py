"""gateway.oidc.jws against PyJWT: the gateway's own compact-JWS parser must never accept what
PyJWT's ``PyJWS.decode_complete`` refuses, and where both accept they must agree on every
part. Hypothesis mutates real signed tokens (characters replaced, inserted, deleted, padding
added) and also builds tokens from arbitrary JSON headers and payloads.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jwt.exceptions import PyJWTError

from gateway.oidc.jws import JwsFormatError, JwsSignatureError, parse, verify_signature

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
CLAIMS = {"iss": "https://idp.example.org", "sub": "alice", "aud": "gw", "exp": 2_000_000_000}
TOKENS = {
    "RS256": jwt.encode(CLAIMS, RSA_KEY, algorithm="RS256", headers={"kid": "r1"}),
    "ES256": jwt.encode(CLAIMS, EC_KEY, algorithm="ES256", headers={"kid": "e1"}),
}
PUBLIC = {"RS256": RSA_KEY.public_key(), "ES256": EC_KEY.public_key()}
# Characters that matter to a base64url / compact-JWS parser.
EDGE = [*"AZaz09-_=+/. \t\n!é", "\x00", "💥"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ours(token: str, alg: str) -> tuple[Any, ...] | None:
    try:
        jws = parse(token)
        verify_signature(jws, alg, PUBLIC[alg])
    except (JwsFormatError, JwsSignatureError):
        return None
    return jws.header, jws.claims, jws.signature


def ours_unverified(token: str) -> tuple[Any, ...] | None:
    try:
        jws = parse(token)
    except JwsFormatError:
        return None
    return jws.header, jws.claims, jws.signature


def pyjwt(token: str, alg: str | None) -> tuple[Any, ...] | None:
    """PyJWT's answer; ``alg`` None: parse only, no signature check."""
    options = {"verify_signature": alg is not None}
    try:
        parts = jwt.PyJWS().decode_complete(
            token, PUBLIC.get(alg or ""), algorithms=[alg] if alg else None, options=options
        )
        claims = json.loads(parts["payload"])
    except (PyJWTError, ValueError, RecursionError):
        return None
    return parts["header"], claims, parts["signature"]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str]:
    alg = draw(st.sampled_from(sorted(TOKENS)))
    token = TOKENS[alg]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(token)))
        kind = draw(st.sampled_from(["replace", "insert", "delete", "pad"]))
        c = draw(st.sampled_from(EDGE) | st.characters())
        if kind == "replace" and i < len(token):
            token = token[:i] + c + token[i + 1 :]
        elif kind == "insert":
            token = token[:i] + c + token[i:]
        elif kind == "delete" and i < len(token):
            token = token[:i] + token[i + 1 :]
        else:  # padding at the end of one segment
            parts = token.split(".")
            k = i % len(parts)
            parts[k] += "=" * draw(st.integers(1, 3))
            token = ".".join(parts)
    return token, alg


@settings(max_examples=600, deadline=None)
@given(mutated())
def test_never_accepts_a_token_pyjwt_refuses(case: tuple[str, str]) -> None:
    token, alg = case
    got = ours(token, alg)
    if got is not None:
        assert got == pyjwt(token, alg)
    parsed = ours_unverified(token)
    if parsed is not None:
        assert parsed == pyjwt(token, None)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


HEADER_VALUES = st.one_of(JSON, st.sampled_from([False, True, 0, 1, None, [], ["b64"], "RS256"]))


@settings(max_examples=300, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "b64", "x"]), HEADER_VALUES
    ),
    payload=JSON,
    signature=st.binary(max_size=70),
)
@example(header={"b64": False}, payload={}, signature=b"")  # PyJWT refuses it; so must we
@example(header={"kid": None}, payload={}, signature=b"")
def test_arbitrary_json_parts_agree_with_pyjwt(
    header: dict[str, Any], payload: Any, signature: bytes
) -> None:
    """Whatever JSON the header and payload hold: where we accept, PyJWT reads the same."""
    token = ".".join(
        (b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature))
    )
    parsed = ours_unverified(token)
    if parsed is not None:
        assert parsed[:2] == pyjwt(token, None)[:2]
        assert parsed[2] == signature


@pytest.mark.parametrize("alg", sorted(TOKENS))
def test_real_tokens_are_read_as_pyjwt_reads_them(alg: str) -> None:
    """The properties above are not vacuous: untouched tokens pass both, identically."""
    got = ours(TOKENS[alg], alg)
    assert got is not None
    assert got == pyjwt(TOKENS[alg], alg)
    assert got[1] == CLAIMS


def test_the_header_alg_must_be_the_verified_algorithm() -> None:
    """An ES256 key handed in for a token whose header says RS256 is refused before any
    cryptography (the caller decides the algorithm; the header must agree)."""
    with pytest.raises(JwsSignatureError, match="another algorithm"):
        verify_signature(parse(TOKENS["RS256"]), "ES256", PUBLIC["ES256"])


def test_a_key_of_the_wrong_type_is_a_signature_error() -> None:
    """An EC key for RS256 (a mixed-up JWKS entry) fails as a signature, not a crash."""
    with pytest.raises(JwsSignatureError):
        verify_signature(parse(TOKENS["RS256"]), "RS256", PUBLIC["ES256"])


def test_hmac_cannot_be_keyed_with_a_public_key() -> None:
    """alg confusion: HS256 over the RSA public key object never verifies."""
    head = b64(json.dumps({"alg": "HS256"}).encode())
    body = b64(json.dumps(CLAIMS).encode())
    token = f"{head}.{body}.{b64(b'x' * 32)}"
    with pytest.raises(JwsSignatureError):
        verify_signature(parse(token), "HS256", PUBLIC["RS256"])
