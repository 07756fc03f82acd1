"""Pushed authorization requests (RFC 9126) against the real test OP: ``par: always``,
``auto`` with an IdP that requires them, client authentication at the PAR endpoint
(secret and ``private_key_jwt``), start-up errors, and an IdP refusing the push."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from gateway.config import ConfigError
from gateway.oidc.client_auth import ASSERTION_TYPE
from tests.support.gateway import JITSI_BASE, start_gateway
from tests.support.op import TestOP
from tests.test_client_auth import pkjwt_idp, public_jwks_of, record_token_requests, rsa_key

__all__ = ["rsa_key"]  # the fixture, imported for the private_key_jwt case

ACCOUNTS = [{"sub": "pat-sub", "username": "pat", "password": "pat-pw", "claims": {"name": "Pat"}}]


@pytest.fixture(scope="module")
def par_required_op() -> Iterator[TestOP]:
    with TestOP.start(ACCOUNTS, par="required") as provider:
        yield provider


@pytest.fixture(scope="module")
def no_par_op() -> Iterator[TestOP]:
    with TestOP.start(ACCOUNTS, par="off") as provider:
        yield provider


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.mark.asyncio
async def test_par_always_sends_only_client_id_and_request_uri(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    async with start_gateway(op, mongo_uri, idp={"par": "always"}) as gw:
        before = (await op.pushed_requests())["count"]
        sent = record_token_requests(gw)
        start = await browser.get(f"{gw.url}/oidc/auth", params={"room": "pushed"})
        assert start.status_code == 302
        location = start.headers["location"]
        assert set(query_of(location)) == {"client_id", "request_uri"}
        assert query_of(location)["client_id"] == [gw.client["client_id"]]
        pushed = await op.pushed_requests()
        assert pushed["count"] == before + 1
        params = pushed["last"]["params"]
        assert {"state", "nonce", "code_challenge", "redirect_uri"} <= set(params)
        assert params["code_challenge_method"] == "S256"
        assert pushed["last"]["client_auth"] == "client_secret_basic"
        (push,) = sent  # the PAR request, with the client's credentials
        assert push["url"].endswith("/request") and push["authorization"].startswith("Basic ")
        callback = await op.login_over_http(browser, location, "alice", "alice-pw")
        done = await browser.get(callback)
        assert done.headers["location"].startswith(f"{JITSI_BASE}/pushed?jwt=")


@pytest.mark.asyncio
async def test_par_with_private_key_jwt(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient, rsa_key: Path
) -> None:
    async with start_gateway(
        op,
        mongo_uri,
        auth_method="private_key_jwt",
        client_metadata=lambda _url: {"jwks": public_jwks_of(rsa_key)},
        idp={**pkjwt_idp(rsa_key), "par": "always"},
    ) as gw:
        sent = record_token_requests(gw)
        response = await gw.sign_in(browser, op, room="keyed")
        assert response.headers["location"].startswith(f"{JITSI_BASE}/keyed?jwt=")
    push, redeem = sent
    meta = await op.discovery()
    assert push["url"] == meta["pushed_authorization_request_endpoint"]
    for form in (push, redeem):
        assert form["client_assertion_type"] == ASSERTION_TYPE and "client_secret" not in form
    first = jwt.decode(push["client_assertion"], options={"verify_signature": False})
    second = jwt.decode(redeem["client_assertion"], options={"verify_signature": False})
    assert first["aud"] == second["aud"] == meta["token_endpoint"]
    assert first["jti"] != second["jti"]
    assert (await op.pushed_requests())["last"]["client_auth"] == "private_key_jwt"


@pytest.mark.asyncio
async def test_auto_follows_an_idp_that_requires_par(
    par_required_op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    meta = await par_required_op.discovery()
    assert meta["require_pushed_authorization_requests"] is True
    async with start_gateway(par_required_op, mongo_uri) as gw:  # par: auto, the default
        response = await gw.sign_in(browser, par_required_op, username="pat", password="pat-pw")
        assert response.headers["location"].startswith(f"{JITSI_BASE}/standup?jwt=")
        assert (await par_required_op.pushed_requests())["count"] >= 1


@pytest.mark.asyncio
async def test_auto_without_requirement_keeps_the_front_channel(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    async with start_gateway(op, mongo_uri) as gw:
        start = await browser.get(f"{gw.url}/oidc/auth", params={"room": "plain"})
        assert "state" in query_of(start.headers["location"])  # one round trip fewer


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("which", "par", "message"),
    [
        ("no_par_op", "always", "advertises no pushed_authorization_request_endpoint"),
        ("par_required_op", "never", "requires pushed authorization requests"),
    ],
)
async def test_impossible_par_setting_stops_start_up(
    request: pytest.FixtureRequest, mongo_uri: str, which: str, par: str, message: str
) -> None:
    provider: TestOP = request.getfixturevalue(which)
    with pytest.raises(ConfigError, match=rf"idps\[0\]\.par: .*{message}"):
        async with start_gateway(provider, mongo_uri, idp={"par": par}):
            pass


@pytest.mark.asyncio
async def test_par_refused_by_the_idp_is_a_clear_answer(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    async with start_gateway(
        op, mongo_uri, idp={"par": "always", "client_secret": "not-the-secret"}
    ) as gw:
        response = await browser.get(f"{gw.url}/oidc/auth", params={"room": "pushed"})
        assert response.status_code == 502
        assert "did not accept the sign-in request" in response.text
        assert "not-the-secret" not in response.text
        event = await gw.store.audit.collection.find_one({"event": "login_failed"})
        assert event is not None and event["reason"] == "par_failed"
        assert "error=invalid_client" in event["detail"]
        assert "not-the-secret" not in repr(event)
        assert await gw.store.flows.collection.count_documents({}) == 0  # no flow left behind
