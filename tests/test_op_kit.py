"""The test OP kit itself: discovery, registration, login over HTTP, tokens, rotation, tampering."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

import httpx
import jwt
import pytest

from tests.support.op import TestOP

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never requested
SECRET = "p@ss:w/rd+%~"
ALICE = {
    "sub": "alice-sub",
    "username": "alice",
    "password": "alice-pw",
    "claims": {
        "name": "Alice Example",
        "preferred_username": "alice",
        "email": "alice@example.org",
        "email_verified": True,
        "groups": ["/staff"],
        "realm_access": {"roles": ["moderator"]},
        "hd": "example.org",
    },
}


BOB = {  # Entra-style group overage: groups only as a distributed claim
    "sub": "bob-sub",
    "username": "bob",
    "password": "bob-pw",
    "claims": {
        "name": "Bob",
        "tid": "tenant-1",
        "oid": "object-1",
        "_claim_names": {"groups": "src1"},
        "_claim_sources": {"src1": {"endpoint": "https://graph.invalid/v1.0/me/getMemberObjects"}},
    },
}


@pytest.fixture(scope="module")
def op() -> Iterator[TestOP]:
    with TestOP.start([ALICE, BOB]) as running:
        yield running


def b64url_json(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return b64url_json(header), b64url_json(payload)


def basic_auth(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def authorization_url(op: TestOP, client_id: str, scope: str) -> tuple[str, str, str, str]:
    """Returns (url, code_verifier, state, nonce)."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": scope,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    endpoint = (await op.discovery())["authorization_endpoint"]
    return f"{endpoint}?{urlencode(query)}", verifier, state, nonce


def code_from(op: TestOP, landed: str, state: str) -> str:
    assert landed.startswith(REDIRECT_URI + "?"), landed
    query = parse_qs(urlsplit(landed).query)
    assert query["state"] == [state]
    assert query["iss"] == [op.issuer]
    return query["code"][0]


async def redeem(op: TestOP, client: dict[str, Any], code: str, verifier: str) -> dict[str, Any]:
    """Token request with client_secret_basic (id and secret form-urlencoded first)."""
    async with httpx.AsyncClient() as http:
        response = await http.post(
            (await op.discovery())["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
            },
            headers={"Authorization": basic_auth(client["client_id"], client["client_secret"])},
        )
    assert response.status_code == 200, response.text
    return response.json()


async def authorize_and_redeem(
    op: TestOP, client: dict[str, Any], browser: httpx.AsyncClient, scope: str
) -> dict[str, Any]:
    """Full code flow with PKCE as alice; returns the token response."""
    url, verifier, state, nonce = await authorization_url(op, client["client_id"], scope)
    landed = await op.login_over_http(browser, url, "alice", "alice-pw")
    tokens = await redeem(op, client, code_from(op, landed, state), verifier)
    if "id_token" in tokens:
        try:
            payload = unverified(tokens["id_token"])[1]
        except ValueError:
            payload = {}
        if payload.get("sub") == "alice-sub":  # untampered payload
            assert payload["nonce"] == nonce
    return tokens


async def verify(op: TestOP, id_token: str, client_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        jwks = (await http.get((await op.discovery())["jwks_uri"])).json()
    kid = jwt.get_unverified_header(id_token).get("kid")
    key = next(k for k in jwks["keys"] if k["kid"] == kid)
    return jwt.decode(
        id_token, jwt.PyJWK(key), algorithms=["RS256"], audience=client_id, issuer=op.issuer
    )


@pytest.mark.asyncio
async def test_discovery(op: TestOP) -> None:
    meta = await op.discovery()
    assert meta["issuer"] == op.issuer
    assert op.issuer.startswith("http://127.0.0.1:")
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["registration_endpoint"].startswith(op.issuer)
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    assert {"groups", "roles"} <= set(meta["scopes_supported"])


@pytest.mark.asyncio
async def test_code_flow_with_basic_auth_and_odd_secret(op: TestOP) -> None:
    client = await op.register_client([REDIRECT_URI], client_secret=SECRET)
    assert client["client_secret"] == SECRET
    assert client["token_endpoint_auth_method"] == "client_secret_basic"
    async with httpx.AsyncClient() as browser:
        tokens = await authorize_and_redeem(op, client, browser, "openid profile email groups")
        claims = await verify(op, tokens["id_token"], client["client_id"])
        assert claims["sub"] == "alice-sub"
        assert claims["name"] == "Alice Example"
        assert claims["email"] == "alice@example.org"
        assert claims["email_verified"] is True
        assert claims["groups"] == ["/staff"]
        assert claims["hd"] == "example.org"
        assert "realm_access" not in claims  # roles scope not requested

        # Same browser, OP session cookie: straight back to the client, no login form.
        url, *_ = await authorization_url(op, client["client_id"], "openid")
        first = await browser.get(url)
        assert first.is_redirect
        assert first.headers["location"].startswith(REDIRECT_URI + "?")
        assert "code=" in first.headers["location"]


@pytest.mark.asyncio
async def test_raw_secret_in_basic_auth_is_rejected(op: TestOP) -> None:
    client = await op.register_client([REDIRECT_URI], client_secret=SECRET)
    raw = base64.b64encode(f"{client['client_id']}:{SECRET}".encode()).decode()
    async with httpx.AsyncClient() as http:
        response = await http.post(
            (await op.discovery())["token_endpoint"],
            data={"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT_URI},
            headers={"Authorization": f"Basic {raw}"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"  # "not properly encoded"


@pytest.mark.asyncio
async def test_wrong_password_is_reported(op: TestOP) -> None:
    client = await op.register_client([REDIRECT_URI])
    url, *_ = await authorization_url(op, client["client_id"], "openid")
    async with httpx.AsyncClient() as browser:
        with pytest.raises(AssertionError, match="Invalid username or password"):
            await op.login_over_http(browser, url, "alice", "wrong")


async def login_page(op: TestOP, url: str) -> str:
    async with httpx.AsyncClient(follow_redirects=True) as browser:
        response = await browser.get(url)
    assert 'id="username"' in response.text, response.text
    return response.text


@pytest.mark.asyncio
async def test_login_page_names_the_client_by_its_registered_name(op: TestOP) -> None:
    """A person sees the client_name (here the demo's), not a random client id; a client
    registered without one is named by its id."""
    from gateway.devtools.demo import DEMO_CLIENT_NAME

    named = await op.register_client([REDIRECT_URI], client_name=DEMO_CLIENT_NAME)
    url, *_ = await authorization_url(op, named["client_id"], "openid")
    page = await login_page(op, url)
    assert f"Signing in to <strong>{DEMO_CLIENT_NAME}</strong>" in page
    assert named["client_id"] not in page.split("<form")[0]
    bare = await op.register_client([REDIRECT_URI])
    url, *_ = await authorization_url(op, bare["client_id"], "openid")
    assert f"Signing in to <code>{bare['client_id']}</code>" in await login_page(op, url)


@pytest.mark.asyncio
async def test_rotation_changes_kid_and_keeps_state(op: TestOP) -> None:
    client = await op.register_client(
        [REDIRECT_URI], token_endpoint_auth_method="client_secret_basic"
    )
    async with httpx.AsyncClient() as browser:
        before = await authorize_and_redeem(op, client, browser, "openid roles")
        old_kid = unverified(before["id_token"])[0]["kid"]
        new_kid = await op.rotate_keys()
        assert new_kid != old_kid
        # Same browser session, same client, after the Provider swap: still signed in.
        after = await authorize_and_redeem(op, client, browser, "openid roles")
    header, _ = unverified(after["id_token"])
    assert header["kid"] == new_kid
    claims = await verify(op, after["id_token"], client["client_id"])
    assert claims["realm_access"] == {"roles": ["moderator"]}
    await verify(op, before["id_token"], client["client_id"])  # old key still published


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["signature", "payload", "alg_none", "drop"])
async def test_tamper_next_id_token(op: TestOP, mode: str) -> None:
    client = await op.register_client([REDIRECT_URI])
    async with httpx.AsyncClient() as browser:
        await op.tamper_next_id_token(mode)
        tampered = await authorize_and_redeem(op, client, browser, "openid")
        clean = await authorize_and_redeem(op, client, browser, "openid")  # mode reset
    await verify(op, clean["id_token"], client["client_id"])
    if mode == "drop":
        assert "id_token" not in tampered
        assert "access_token" in tampered
        return
    token = tampered["id_token"]
    header, payload = unverified(token)
    if mode == "alg_none":
        assert header["alg"] == "none"
        assert token.endswith(".")
    if mode == "payload":
        assert payload["sub"] == "alice-sub-tampered"
    with pytest.raises(jwt.InvalidTokenError):
        await verify(op, token, client["client_id"])


@pytest.mark.asyncio
async def test_rotation_keeps_in_flight_interaction_and_code(op: TestOP) -> None:
    client = await op.register_client([REDIRECT_URI])
    url, verifier, state, nonce = await authorization_url(op, client["client_id"], "openid")
    async with httpx.AsyncClient() as browser:
        first = await browser.get(url)
        assert first.is_redirect
        interaction_url = str(first.url.join(first.headers["location"]))
        assert "/interaction/" in interaction_url
        await op.rotate_keys()  # interaction in flight
        landed = await op.login_over_http(browser, interaction_url, "alice", "alice-pw")
    code = code_from(op, landed, state)
    kid = await op.rotate_keys()  # code issued, not yet redeemed
    tokens = await redeem(op, client, code, verifier)
    header, payload = unverified(tokens["id_token"])
    assert header["kid"] == kid
    assert payload["nonce"] == nonce


@pytest.mark.asyncio
async def test_distributed_claims_and_forced_consent(op: TestOP) -> None:
    client = await op.register_client(
        [REDIRECT_URI], token_endpoint_auth_method="client_secret_post"
    )
    url, verifier, state, _ = await authorization_url(op, client["client_id"], "openid groups")
    url += "&prompt=consent"  # consent interaction is resolved automatically
    async with httpx.AsyncClient() as browser:
        landed = await op.login_over_http(browser, url, "bob", "bob-pw")
    async with httpx.AsyncClient() as http:
        response = await http.post(
            (await op.discovery())["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code_from(op, landed, state),
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
            },
        )
    assert response.status_code == 200, response.text
    claims = await verify(op, response.json()["id_token"], client["client_id"])
    assert claims["tid"] == "tenant-1"
    assert claims["oid"] == "object-1"
    assert "groups" not in claims
    assert claims["_claim_names"] == {"groups": "src1"}
    assert set(claims["_claim_sources"]) == {"src1"}


@pytest.mark.asyncio
async def test_rp_initiated_and_backchannel_logout(op: TestOP) -> None:
    received: list[str] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["content-length"])).decode())
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = await op.register_client(
            [REDIRECT_URI],
            post_logout_redirect_uris=["http://127.0.0.1:9/bye"],
            backchannel_logout_uri=f"http://127.0.0.1:{server.server_port}/backchannel",
            backchannel_logout_session_required=True,
        )
        async with httpx.AsyncClient() as browser:
            tokens = await authorize_and_redeem(op, client, browser, "openid")
            sid = unverified(tokens["id_token"])[1]["sid"]
            query = {
                "id_token_hint": tokens["id_token"],
                "post_logout_redirect_uri": "http://127.0.0.1:9/bye",
                "state": "bye-state",
            }
            end_session = f"{(await op.discovery())['end_session_endpoint']}?{urlencode(query)}"
            landed = await op.logout_over_http(browser, end_session)
            assert landed == "http://127.0.0.1:9/bye?state=bye-state"
            # Signed out: the next authorization request shows the login form again.
            url, *_ = await authorization_url(op, client["client_id"], "openid")
            again = await browser.get(url)
            assert again.is_redirect
            assert "/interaction/" in again.headers["location"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert len(received) == 1
    logout_token = parse_qs(received[0])["logout_token"][0]
    claims = await verify(op, logout_token, client["client_id"])
    assert claims["sub"] == "alice-sub"
    assert claims["sid"] == sid
    assert "http://schemas.openid.net/event/backchannel-logout" in claims["events"]
