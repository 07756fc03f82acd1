"""Hostile input from browsers and IdPs: deep JSON, lone surrogates. Each gets a clear
answer (a 400 page with an audit event, or the IdP's answer taken as "not JSON"), never
a 500, and nothing it touches (the session insert, the audit writer) breaks."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from gateway import jsonlimits
from gateway.http import HttpClient, UpstreamError
from gateway.logging_setup import configure_logging
from tests.conftest import ACCOUNTS
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP
from tests.support.token_service import CLIENT_ID, pkce_pair, token_service_gateway

pytestmark = pytest.mark.asyncio

SSO = "http://127.0.0.1:9/meet/static/sso.html"


def deep_state(levels: int) -> str:
    """A 1-2 KB state whose one override nests ``levels`` deep (Jitsi's shape otherwise)."""
    return '{"room":"standup","config.x":' + "[" * levels + "1" + "]" * levels + "}"


async def audited(gw: GatewayUnderTest, request_id: str) -> list[dict[str, Any]]:
    await gw.store.audit.settle()
    return [d async for d in gw.store.audit.collection.find({"request_id": request_id})]


@pytest_asyncio.fixture
async def tgw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    async with token_service_gateway(op, mongo_uri, SSO) as running:
        yield running


@pytest.mark.parametrize("levels", [9, 100, 600, 3000])
@pytest.mark.parametrize("path", ["/oidc/auth", "/oidc/tokenize", "/oidc/authorize"])
async def test_deep_state_is_a_400_with_an_audit_event(
    tgw: GatewayUnderTest, path: str, levels: int
) -> None:
    params = {"room": "standup", "state": deep_state(levels)}
    if path == "/oidc/authorize":
        params |= {"client_id": CLIENT_ID, "code_challenge": pkce_pair()[1]}
    async with httpx.AsyncClient(timeout=30.0) as client:
        response = await client.get(f"{tgw.url}{path}", params=params)
    assert response.status_code == 400, response.text[:300]
    events = await audited(tgw, response.headers["x-request-id"])
    assert [e.get("reason") for e in events] == ["bad_request"]
    assert "nested deeper" in events[0]["detail"]


async def test_json_limits_count_nesting_without_recursion() -> None:
    assert jsonlimits.loads('{"a": [1, {"b": "[[[[[["}]}', 3) == {"a": [1, {"b": "[[[[[["}]}
    for text in ("[" * 33 + "]" * 33, "[" * 200_000 + "]" * 200_000, "[" * 5000):
        with pytest.raises(ValueError):
            jsonlimits.loads(text)
    assert jsonlimits.loads('"a\\ud800b\\ud83d\\ude00"') == "a\ufffdb\U0001f600"
    assert jsonlimits.loads('{"\\udc00": ["\\ud800"]}') == {"\ufffd": ["\ufffd"]}


# ---- IdP answers ------------------------------------------------------------------------


class Deep(RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write("[" * 5000 + "]" * 5000)


@pytest.fixture
def hostile_server() -> Iterator[str]:
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(Application([("/deep", Deep)]))
    server.add_sockets(sockets)
    try:
        yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    finally:
        server.stop()


async def test_an_idp_answer_nested_thousands_deep_is_not_json(hostile_server: str) -> None:
    client = HttpClient(timeout=10.0)
    try:
        with pytest.raises(UpstreamError, match="not JSON"):
            await client.get_json(f"{hostile_server}/deep")
    finally:
        await client.aclose()


async def test_a_name_with_a_lone_surrogate_signs_in(
    mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    """The IdP's JSON escapes half a surrogate pair in the name: the sign-in goes through,
    the session and the audit event hold U+FFFD instead."""
    eve = {
        "sub": "eve-sub",
        "username": "eve",
        "password": "eve-pw",
        "claims": {"name": "Eve \ud800 Example", "email": "eve@example.org"},
    }
    with TestOP.start([*ACCOUNTS, eve]) as op:
        async with start_gateway(op, mongo_uri) as gw:
            response = await gw.sign_in(browser, op, username="eve", password="eve-pw")
            assert response.status_code == 302, response.text[:300]
            await gw.store.audit.settle()
            event = await gw.store.audit.collection.find_one({"event": "login_succeeded"})
            assert event is not None and event["name"] == "Eve \ufffd Example"
            assert json.dumps(event["name"])  # encodable everywhere


# ---- logs at DEBUG ----------------------------------------------------------------------


async def test_no_secret_reaches_the_log_at_debug(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    """At DEBUG the driver would log every command with its documents: the flow insert
    carries the PKCE verifier and the nonce. None of it may reach the log."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream)
    try:
        response = await gw.sign_in(browser, op)
        assert response.status_code == 302
        flow = await gw.store.flows.collection.find_one({}, sort=[("_id", -1)])
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("tornado.access").disabled = False
    text = stream.getvalue()
    assert flow is not None and '"level": "DEBUG"' in text
    for secret in (flow["code_verifier"], flow["nonce"]):
        assert secret not in text
    assert "eyJ" not in text  # no token, whole or in part


# ---- /oidc/logged-out from another site --------------------------------------------------


@pytest.mark.parametrize("query", ["", "?state=testop.00", "?idp=testop&kept=off"])
async def test_a_cross_site_visit_to_logged_out_signs_no_one_out(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient, query: str
) -> None:
    response = await gw.sign_in(browser, op)
    assert response.status_code == 302
    visit = await browser.get(
        f"{gw.url}/oidc/logged-out{query}", headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert "set-cookie" not in visit.headers  # the session cookie is left alone
    assert visit.status_code == 303 and visit.headers["location"] == "/oidc/logout"
    again = await browser.get(f"{gw.url}/oidc/tokenize", params={"room": "standup"})
    assert again.status_code == 302 and "jwt=" in again.headers["location"]
