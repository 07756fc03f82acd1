"""Unit tests for gateway.jitsi: the token Prosody's token plugin accepts, and the room URL.

Settings are built with ``gateway.config.Jitsi`` directly; the clock is injected.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.base import Identity
from gateway.config import Delivery, Jitsi
from gateway.delivery import deliver
from gateway.jitsi import CompactSigner, JitsiTokens, gravatar_url
from tests.support.jitsi_web import jitsi_token

NOW = 1_700_000_000
SECRET = "s3cret-shared-with-prosody-0123456789"
BASE = "https://meet.example.com"

ALICE = Identity(
    idp="corp",
    issuer="https://idp.example.org",
    subject="alice-sub",
    username="alice",
    name="Alice Example",
    email="Alice@Example.org",
    email_verified=True,
    picture="https://idp.example.org/alice.png",
)
NO_EMAIL = Identity(
    idp="corp", issuer="https://idp.example.org", subject="bob-sub", username="bob", name="Bob"
)


def settings(**overrides: Any) -> Jitsi:
    values: dict[str, Any] = {
        "base_url": BASE,
        "app_id": "my_jitsi_app",
        "audience": "jitsi",
        "domain": "meet.example.com",
        "app_secret": SECRET,
    }
    values.update(overrides)
    return Jitsi(**values)


def tokens(**overrides: Any) -> JitsiTokens:
    return JitsiTokens(settings(**overrides), clock=lambda: NOW + 0.75)


def decode(token: str, key: Any = SECRET, alg: str = "HS256") -> dict[str, Any]:
    """Verify signature, aud and iss; times are checked by the tests against NOW."""
    return jwt.decode(
        token,
        key,
        algorithms=[alg],
        audience="jitsi",
        issuer="my_jitsi_app",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_hs256_token_verifies_with_the_secret() -> None:
    minted = tokens().mint(ALICE, "standup", None)
    claims = decode(minted.token)
    assert claims["iss"] == "my_jitsi_app"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(minted.token, SECRET + "x", algorithms=["HS256"], audience="jitsi")


def test_header_is_exactly_typ_jwt_and_alg() -> None:
    """Prosody compares typ to "JWT" and alg to its signature_algorithm."""
    header = jwt.get_unverified_header(tokens().mint(ALICE, "standup", None).token)
    assert header == {"alg": "HS256", "typ": "JWT"}


@pytest.mark.parametrize(
    ("room", "tenant", "room_claim", "sub"),
    [
        pytest.param("standup", None, "standup", "meet.example.com", id="no_tenant_sub_is_domain"),
        pytest.param("StandUp", None, "standup", "meet.example.com", id="room_lower_cased"),
        pytest.param("standup", "AcMe", "standup", "acme", id="tenant_lower_cased_as_sub"),
        pytest.param("Daily-Sync", "acme", "daily-sync", "acme", id="tenant_and_mixed_case_room"),
    ],
)
def test_claims(room: str, tenant: str | None, room_claim: str, sub: str) -> None:
    minted = tokens().mint(ALICE, room, tenant)
    claims = decode(minted.token)
    assert claims["iss"] == "my_jitsi_app"
    assert claims["aud"] == "jitsi"
    assert isinstance(claims["aud"], str)
    assert claims["sub"] == sub
    assert claims["room"] == room_claim
    assert (minted.room, minted.subject) == (room_claim, sub)


def test_times_are_integers_from_the_injected_clock() -> None:
    minted = tokens().mint(ALICE, "standup", None)
    claims = decode(minted.token)
    assert claims["iat"] == NOW
    assert all(isinstance(claims[k], int) for k in ("iat", "nbf", "exp"))
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == claims["iat"] - 10
    assert minted.expires_at == claims["exp"]


@pytest.mark.parametrize(
    ("config", "lifetime", "expected"),
    [
        pytest.param({"token_lifetime_seconds": 120}, None, 120, id="configured_lifetime"),
        pytest.param({}, 60, 60, id="lifetime_argument_wins"),
        pytest.param({"token_lifetime_seconds": 900}, 45, 45, id="shorter_argument_wins"),
    ],
)
def test_lifetime(config: dict[str, Any], lifetime: int | None, expected: int) -> None:
    claims = decode(tokens(**config).mint(ALICE, "standup", None, lifetime=lifetime).token)
    assert claims["exp"] - claims["iat"] == expected


def test_not_before_skew_configurable() -> None:
    claims = decode(tokens(not_before_skew_seconds=0).mint(ALICE, "standup", None).token)
    assert claims["nbf"] == claims["iat"]


def test_jti_present_and_unique() -> None:
    t = tokens()
    first, second = t.mint(ALICE, "standup", None), t.mint(ALICE, "standup", None)
    assert decode(first.token)["jti"] == first.jti
    assert first.jti and second.jti and first.jti != second.jti


@pytest.mark.parametrize(
    ("identity", "avatar_cfg", "expected_user"),
    [
        pytest.param(
            ALICE,
            {},
            {
                "id": "corp:alice-sub",
                "name": "Alice Example",
                "email": "Alice@Example.org",
                "avatar": "https://www.gravatar.com/avatar/" + sha256_hex("alice@example.org"),
            },
            id="full_identity_gravatar",
        ),
        pytest.param(
            NO_EMAIL,
            {},
            {"id": "corp:bob-sub", "name": "Bob"},
            id="no_email_no_default_omits_email_and_avatar",
        ),
        pytest.param(
            NO_EMAIL,
            {"default_url": "https://meet.example.com/avatar.png"},
            {"id": "corp:bob-sub", "name": "Bob", "avatar": "https://meet.example.com/avatar.png"},
            id="no_email_default_avatar",
        ),
        pytest.param(
            ALICE,
            {"gravatar": False},
            {"id": "corp:alice-sub", "name": "Alice Example", "email": "Alice@Example.org"},
            id="gravatar_off_no_default",
        ),
        pytest.param(
            ALICE,
            {"gravatar": False, "default_url": "https://meet.example.com/a.png"},
            {
                "id": "corp:alice-sub",
                "name": "Alice Example",
                "email": "Alice@Example.org",
                "avatar": "https://meet.example.com/a.png",
            },
            id="gravatar_off_default_avatar",
        ),
    ],
)
def test_context_user(
    identity: Identity, avatar_cfg: dict[str, Any], expected_user: dict[str, Any]
) -> None:
    """Fields are strings; empty ones are left out rather than sent as null."""
    claims = decode(tokens(avatar=avatar_cfg).mint(identity, "standup", None).token)
    assert claims["context"]["user"] == expected_user
    assert all(isinstance(v, str) for v in claims["context"]["user"].values())
    assert "features" not in claims["context"]


def test_user_extra_and_features() -> None:
    minted = tokens().mint(
        ALICE,
        "standup",
        None,
        user_extra={"moderator": True, "affiliation": "owner"},
        features={"recording": True, "livestreaming": False},
    )
    context = decode(minted.token)["context"]
    assert context["user"]["moderator"] is True
    assert context["user"]["affiliation"] == "owner"
    assert context["user"]["id"] == "corp:alice-sub"
    assert context["features"] == {"recording": True, "livestreaming": False}


@pytest.mark.parametrize(
    ("room_wildcard", "wildcard_room", "room_claim"),
    [
        pytest.param(True, True, "*", id="wildcard_allowed_and_asked"),
        pytest.param(False, True, "standup", id="wildcard_asked_but_not_configured"),
        pytest.param(True, False, "standup", id="wildcard_configured_not_asked"),
    ],
)
def test_wildcard_room(room_wildcard: bool, wildcard_room: bool, room_claim: str) -> None:
    minted = tokens(room_wildcard=room_wildcard).mint(
        ALICE, "StandUp", None, wildcard_room=wildcard_room
    )
    assert decode(minted.token)["room"] == room_claim == minted.room


@pytest.mark.parametrize(
    ("email", "default_url", "expected"),
    [
        pytest.param(
            "alice@example.org",
            None,
            "https://www.gravatar.com/avatar/" + sha256_hex("alice@example.org"),
            id="plain",
        ),
        pytest.param(
            "  Alice@Example.ORG \n",
            None,
            "https://www.gravatar.com/avatar/" + sha256_hex("alice@example.org"),
            id="trimmed_and_lower_cased",
        ),
        pytest.param(
            "alice@example.org",
            "https://meet.example.com/a b.png",
            "https://www.gravatar.com/avatar/"
            + sha256_hex("alice@example.org")
            + "?d=https%3A%2F%2Fmeet.example.com%2Fa+b.png",
            id="default_url_quoted",
        ),
    ],
)
def test_gravatar_url(email: str, default_url: str | None, expected: str) -> None:
    assert gravatar_url(email, default_url) == expected


def write_key(tmp_path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "jitsi-key.pem").write_bytes(pem)
    return key


def test_rs256_with_private_key_file(tmp_path: Path) -> None:
    """RS256: header carries the kid Prosody resolves through asap_key_server."""
    key = write_key(tmp_path)
    t = tokens(
        algorithm="RS256",
        app_secret=None,
        private_key_file=tmp_path / "jitsi-key.pem",
        key_id="gateway-2026",
    )
    minted = t.mint(ALICE, "standup", "acme")
    assert jwt.get_unverified_header(minted.token) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": "gateway-2026",
    }
    claims = decode(minted.token, key.public_key(), "RS256")
    assert (claims["sub"], claims["room"]) == ("acme", "standup")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(jwt.InvalidSignatureError):
        decode(minted.token, other.public_key(), "RS256")


@pytest.mark.parametrize(
    ("base_url", "room", "tenant", "path"),
    [
        pytest.param(BASE, "standup", None, "/standup", id="room_only"),
        pytest.param(BASE, "standup", "acme", "/acme/standup", id="tenant_and_room"),
        pytest.param(BASE + "/", "standup", None, "/standup", id="base_trailing_slash"),
        pytest.param(BASE, "a b?#/c", None, "/a%20b%3F%23%2Fc", id="room_quoted"),
        pytest.param(BASE, "r", "t/../x", "/t%2F..%2Fx/r", id="tenant_quoted"),
        pytest.param(BASE + "/jitsi", "standup", "acme", "/acme/standup", id="base_path"),
    ],
)
def test_room_url(base_url: str, room: str, tenant: str | None, path: str) -> None:
    token = "eyJhbGciOi.J-payload_.sig"
    url = deliver(Delivery(), tokens(base_url=base_url).room_page(room, tenant), token)
    parts = urlsplit(url)
    base = urlsplit(base_url)
    assert (parts.scheme, parts.netloc) == (base.scheme, base.netloc)
    assert parts.path == base.path.rstrip("/") + path
    assert parse_qs(parts.query) == {"jwt": [token]}
    assert parts.fragment == ""
    assert url.endswith("?jwt=eyJhbGciOi.J-payload_.sig")


def test_fragment_delivery_carries_the_flag() -> None:
    token = "a.b-c.d"
    url = deliver(Delivery(mode="fragment"), tokens().room_page("Standup", "acme"), token)
    assert url == f"{BASE}/acme/Standup?oidc=1#jwt=%22a.b-c.d%22"


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "a.b+c.d", "a.b.c#x", "a.b.c&x=1"])
def test_delivery_refuses_what_is_not_a_compact_jws(token: str) -> None:
    """Nothing but base64url and two dots reaches the URL (no injected parameters)."""
    for mode in ("query", "fragment"):
        with pytest.raises(ValueError):
            deliver(Delivery(mode=mode), tokens().room_page("standup", None), token)


@pytest.mark.parametrize("mode", ["query", "fragment"])
@pytest.mark.parametrize("tenant", [None, "acme"])
def test_jitsi_web_client_reads_the_minted_token(mode: str, tenant: str | None) -> None:
    """Jitsi's own parseJWTFromURLParams (run by Node) finds the token byte for byte."""
    minted = tokens().mint(ALICE, "Standup", tenant)
    url = deliver(Delivery(mode=mode), tokens().room_page("Standup", tenant), minted.token)
    assert jitsi_token(url) == minted.token
    if mode == "fragment":
        # The bare form the gateway used to write is exactly what Jitsi cannot read.
        assert jitsi_token(url.split("#")[0] + "#jwt=" + minted.token) is None


@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
def test_the_prepared_signer_writes_what_pyjwt_writes(algorithm: str) -> None:
    """The signer that prepares its key once is byte for byte PyJWT's ``jwt.encode``."""
    if algorithm == "HS256":
        key: Any = "s" * 40
        public: Any = key
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key()
    claims = {
        "iss": "app",
        "aud": "jitsi",
        "room": "r",
        "exp": 2_000_000_000,
        "context": {"user": {"name": 'Zo\u00eb \u2603 "quoted"'}},
    }
    headers = {"typ": "JWT", **({"kid": "k1"} if algorithm == "RS256" else {})}
    token = CompactSigner(algorithm, key).sign(claims, headers)
    if algorithm == "HS256":  # deterministic: the very same bytes
        assert token == jwt.encode(claims, key, algorithm=algorithm, headers=headers)
    assert jwt.get_unverified_header(token) == {"alg": algorithm, **headers}
    assert jwt.decode(token, public, algorithms=[algorithm], audience="jitsi") == claims
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
            public,
            algorithms=[algorithm],
            audience="jitsi",
        )
