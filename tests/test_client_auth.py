"""private_key_jwt client authentication (RFC 7523 / OIDC Core 9) through the real test OP."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.config import ConfigError, settings_from_dict
from gateway.oidc.client_auth import ASSERTION_TYPE, KeyFileError, SigningKey
from tests.support.gateway import JITSI_BASE, GatewayUnderTest, start_gateway
from tests.support.op import TestOP


def write_key(path: Path, key: Any) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return path


@pytest.fixture
def rsa_key(tmp_path: Path) -> Path:
    return write_key(tmp_path / "client.pem", rsa.generate_private_key(65537, 2048))


@pytest.fixture
def other_rsa_key(tmp_path: Path) -> Path:
    return write_key(tmp_path / "other.pem", rsa.generate_private_key(65537, 2048))


def public_jwks_of(path: Path, kid: str | None = None) -> dict[str, Any]:
    return {"keys": [SigningKey.load(path, key_id=kid).public_jwk]}


# ---- the assertion itself ------------------------------------------------------------------


def test_assertion_claims_and_header(rsa_key: Path) -> None:
    key = SigningKey.load(rsa_key)
    token = key.assertion("client-1", "https://idp.example/token", 60, now=1_000_000)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "kid": key.kid, "typ": "JWT"}
    public = jwt.PyJWK(key.public_jwk).key
    claims = jwt.decode(
        token,
        public,
        algorithms=["RS256"],
        audience="https://idp.example/token",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["iss"] == claims["sub"] == "client-1"
    assert claims["exp"] - claims["iat"] == 60
    assert claims["iat"] == claims["nbf"] == 1_000_000
    assert len(claims["jti"]) >= 32
    again = jwt.decode(
        key.assertion("client-1", "a", 60), public, algorithms=["RS256"], audience="a"
    )
    assert again["jti"] != claims["jti"]  # single use: a fresh jti every time


def test_kid_is_the_rfc7638_thumbprint_and_public_jwk_has_no_private_members(
    rsa_key: Path,
) -> None:
    key = SigningKey.load(rsa_key)
    members = {k: key.public_jwk[k] for k in ("e", "kty", "n")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    digest = jwt.utils.base64url_encode(hashlib.sha256(canonical).digest()).decode()
    assert key.kid == digest
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key.public_jwk)
    assert SigningKey.load(rsa_key, key_id="gw-2026").kid == "gw-2026"


def test_ec_key_signs_es256(tmp_path: Path) -> None:
    path = write_key(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    key = SigningKey.load(path)
    token = key.assertion("c", "aud", 30)
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    jwt.decode(token, jwt.PyJWK(key.public_jwk).key, algorithms=["ES256"], audience="aud")
    with pytest.raises(KeyFileError, match="does not fit"):
        SigningKey.load(path, algorithm="RS256")


def test_certificate_adds_x5t_headers(tmp_path: Path, rsa_key: Path) -> None:
    private = serialization.load_pem_private_key(rsa_key.read_bytes(), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    header = jwt.get_unverified_header(
        SigningKey.load(rsa_key, certificate_file=cert_file).assertion("c", "a", 60)
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert header["x5t#S256"] == jwt.utils.base64url_encode(hashlib.sha256(der).digest()).decode()
    assert header["x5t"] == jwt.utils.base64url_encode(hashlib.sha1(der).digest()).decode()
    other = write_key(tmp_path / "x.pem", rsa.generate_private_key(65537, 2048))
    with pytest.raises(KeyFileError, match="not for this private key"):
        SigningKey.load(other, certificate_file=cert_file)


def _settings(idp: dict[str, Any]) -> dict[str, Any]:
    return {
        "public_url": "https://gw.example",
        "cookies": {"secret": "c" * 40},
        "jitsi": {
            "base_url": "https://meet.example",
            "app_id": "a",
            "domain": "meet.example",
            "app_secret": "s" * 40,
        },
        "idps": [
            {"id": "kc", "adapter": "generic", "issuer": "https://idp.example", "client_id": "x"}
            | idp
        ],
    }


@pytest.mark.parametrize(
    ("idp", "expected"),
    [
        (
            {"token_endpoint_auth_method": "private_key_jwt"},
            "idps[0].client_assertion: required by private_key_jwt (key_file)",
        ),
        (
            {
                "token_endpoint_auth_method": "private_key_jwt",
                "client_assertion": {"key_file": "/nope"},
            },
            "idps[0].client_assertion.key_file: cannot read /nope: No such file or directory",
        ),
        (
            {},
            "idps[0].client_secret: required by client_secret_basic "
            "(or use token_endpoint_auth_method: private_key_jwt)",
        ),
    ],
    ids=["no-key", "missing-key-file", "secret-method-without-secret"],
)
def test_config_errors_name_the_key(idp: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(_settings(idp))
    assert caught.value.problems[0] == expected


def test_not_a_key_and_short_rsa_key_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(
            _settings(
                {
                    "token_endpoint_auth_method": "private_key_jwt",
                    "client_assertion": {"key_file": str(junk)},
                }
            )
        )
    assert caught.value.problems[0].startswith(
        f"idps[0].client_assertion.key_file: {junk} is not an unencrypted PEM private key"
    )
    small = write_key(tmp_path / "small.pem", rsa.generate_private_key(65537, 1024))
    with pytest.raises(KeyFileError, match="RSA key of 1024 bits; use 2048"):
        SigningKey.load(small)


# ---- through the real OP -------------------------------------------------------------------


def pkjwt_idp(key_file: Path, **assertion: Any) -> dict[str, Any]:
    return {
        "token_endpoint_auth_method": "private_key_jwt",
        "client_secret": None,
        "client_assertion": {"key_file": str(key_file), **assertion},
    }


def record_token_requests(gw: GatewayUnderTest) -> list[dict[str, str]]:
    """Every form the gateway posts (the token requests), kept for the test to replay."""
    http = gw.gateway.http
    original = http.post_form
    seen: list[dict[str, str]] = []

    async def post_form(url: str, form: Any, headers: Any = None, timeout: Any = None) -> Any:
        seen.append(
            dict(form) | {"url": url, "authorization": (headers or {}).get("Authorization", "")}
        )
        return await original(url, form, headers, timeout)

    http.post_form = post_form  # type: ignore[method-assign]
    return seen


@pytest.mark.asyncio
@pytest.mark.parametrize("audience", ["token_endpoint", "issuer"])
async def test_sign_in_with_private_key_jwt(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient, rsa_key: Path, audience: str
) -> None:
    async with start_gateway(
        op,
        mongo_uri,
        auth_method="private_key_jwt",
        client_metadata=lambda _url: {"jwks": public_jwks_of(rsa_key)},
        idp=pkjwt_idp(rsa_key, audience=audience),
    ) as gw:
        assert "client_secret" not in gw.client  # nothing shared with the IdP
        sent = record_token_requests(gw)
        response = await gw.sign_in(browser, op, room="keyed")
        assert response.headers["location"].startswith(f"{JITSI_BASE}/keyed?jwt=")
    (form,) = sent
    meta = await op.discovery()
    assert form["client_assertion_type"] == ASSERTION_TYPE
    assert "client_secret" not in form and form["authorization"] == ""
    claims = jwt.decode(form["client_assertion"], options={"verify_signature": False})
    assert claims["aud"] == (meta["token_endpoint"] if audience == "token_endpoint" else op.issuer)
    assert claims["exp"] - claims["iat"] == 60


@pytest.mark.asyncio
async def test_op_fetches_the_gateways_published_jwks(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient, rsa_key: Path
) -> None:
    async with start_gateway(
        op,
        mongo_uri,
        auth_method="private_key_jwt",
        client_metadata=lambda url: {"jwks_uri": f"{url}/.well-known/jwks.json"},
        idp=pkjwt_idp(rsa_key, key_id="gw-key-1"),
    ) as gw:
        published = await browser.get(f"{gw.url}/.well-known/jwks.json")
        assert published.status_code == 200
        assert published.headers["content-type"] == "application/jwk-set+json"
        (jwk,) = published.json()["keys"]
        assert jwk["kid"] == "gw-key-1" and "d" not in jwk
        response = await gw.sign_in(browser, op, room="byurl")
        assert response.headers["location"].startswith(f"{JITSI_BASE}/byurl?jwt=")


@pytest.mark.asyncio
async def test_no_jwks_without_private_key_jwt(gw: GatewayUnderTest, browser: httpx.AsyncClient):
    response = await browser.get(f"{gw.url}/.well-known/jwks.json")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no IdP uses private_key_jwt"}


@pytest.mark.asyncio
async def test_wrong_key_is_refused_by_the_op(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient, rsa_key: Path, other_rsa_key: Path
) -> None:
    async with start_gateway(
        op,
        mongo_uri,
        auth_method="private_key_jwt",
        # Registered: rsa_key's public key under the kid the gateway sends; signed: another key.
        client_metadata=lambda _url: {"jwks": public_jwks_of(rsa_key, kid="gw")},
        idp=pkjwt_idp(other_rsa_key, key_id="gw"),
    ) as gw:
        callback = await gw.start_and_login(browser, op)
        response = await browser.get(callback)
        assert response.status_code == 502, response.text
        failures = [e async for e in gw.store.audit.collection.find({"outcome": "failure"})]
        assert failures[-1]["reason"] == "code_exchange_failed"
        assert "HTTP 401" in failures[-1]["detail"]
        assert "error=invalid_client" in failures[-1]["detail"]
        assert browser.cookies.get(gw.settings.cookies.session_name) is None


@pytest.mark.asyncio
async def test_replayed_assertion_is_refused_by_the_op(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient, rsa_key: Path
) -> None:
    async with start_gateway(
        op,
        mongo_uri,
        auth_method="private_key_jwt",
        client_metadata=lambda _url: {"jwks": public_jwks_of(rsa_key)},
        idp=pkjwt_idp(rsa_key),
    ) as gw:
        sent = record_token_requests(gw)
        response = await gw.sign_in(browser, op, room="once")
        assert response.headers["location"].startswith(f"{JITSI_BASE}/once?jwt=")
        (used,) = sent
        client_id = gw.client["client_id"]
        key = gw.gateway.idps["testop"].rp.client_auth.key
        assert key is not None
        fresh = key.assertion(client_id, used["url"], 60)

    async def token_request(assertion: str) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": "not-a-code",
            "redirect_uri": used["redirect_uri"],
            "code_verifier": "v" * 43,
            "client_id": client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        async with httpx.AsyncClient() as client:
            return await client.post(used["url"], data=form)

    # A fresh assertion authenticates the client (only the bogus code is wrong) ...
    fresh_answer = await token_request(fresh)
    assert (fresh_answer.status_code, fresh_answer.json()["error"]) == (400, "invalid_grant")
    # ... the one the gateway already used does not: its jti was seen.
    replayed = await token_request(used["client_assertion"])
    assert (replayed.status_code, replayed.json()["error"]) == (401, "invalid_client")
    # And the fresh one, now used once, is refused the second time too.
    again = await token_request(fresh)
    assert (again.status_code, again.json()["error"]) == (401, "invalid_client")
