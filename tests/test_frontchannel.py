"""Front-channel logout (OpenID Connect Front-Channel Logout 1.0) against the real test OP,
in Chromium and over HTTP: the IdP's logout page frames the gateway's URI with ``iss`` and
``sid``; what it names ends, nothing else does, and only the IdP's origin may frame it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from tests.support.gateway import JITSI_BASE, GatewayUnderTest, start_gateway
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio


def frontchannel_client(url: str) -> dict[str, Any]:
    return {
        "frontchannel_logout_uri": f"{url}/oidc/frontchannel-logout/testop",
        "frontchannel_logout_session_required": True,
    }


@pytest_asyncio.fixture
async def fgw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    async with start_gateway(op, mongo_uri, client_metadata=frontchannel_client) as gw:
        yield gw


async def sessions(gw: GatewayUnderTest) -> list[dict[str, Any]]:
    return [d async for d in gw.store.sessions.collection.find({})]


async def events(gw: GatewayUnderTest, name: str) -> list[dict[str, Any]]:
    return [d async for d in gw.store.audit.collection.find({"event": name}, sort=[("time", 1)])]


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not reached in time")


def logout_url(gw: GatewayUnderTest, **params: str) -> str:
    return f"{gw.url}/oidc/frontchannel-logout/testop?{urlencode(params)}"


async def signed_in(gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient) -> str:
    response = await gw.sign_in(browser, op)
    assert "jwt=" in response.headers["location"]
    (doc,) = await sessions(gw)
    assert doc["idp_sid"]
    return doc["idp_sid"]


# ---- over HTTP: the checks ------------------------------------------------------------------


async def test_iss_and_sid_end_that_session_without_a_cookie(
    fgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    sid = await signed_in(fgw, op, browser)
    async with httpx.AsyncClient() as idp_frame:  # no cookie: a partitioned third-party frame
        response = await idp_frame.get(logout_url(fgw, iss=op.issuer, sid=sid))
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert f"frame-ancestors {op.issuer}" in csp
    assert "x-frame-options" not in response.headers
    assert await sessions(fgw) == []
    (event,) = await events(fgw, "frontchannel_logout")
    assert event["sessions_ended"] == 1 and event["idp"] == "testop"
    assert sid not in repr(event)
    after = await browser.get(f"{fgw.url}/oidc/auth", params={"room": "next"})
    assert after.headers["location"].startswith(op.issuer)  # signed out: to the IdP


@pytest.mark.parametrize(
    ("params", "status", "reason"),
    [
        ({"iss": "http://127.0.0.1:1", "sid": "SID"}, 400, "frontchannel_logout_invalid"),
        ({"sid": "SID"}, 400, "frontchannel_logout_invalid"),
        ({"iss": "ISS"}, 400, "frontchannel_logout_invalid"),
        ({"iss": "ISS", "sid": "another-idp-session"}, 200, None),
        ({"iss": "ISS", "sid": "SID", "sid2": "x"}, 200, "ended"),
    ],
    ids=["foreign_iss", "no_iss", "no_sid", "other_sid", "right"],
)
async def test_only_the_named_idp_session_ends(
    fgw: GatewayUnderTest,
    op: TestOP,
    browser: httpx.AsyncClient,
    params: dict[str, str],
    status: int,
    reason: str | None,
) -> None:
    sid = await signed_in(fgw, op, browser)
    real = {k: {"SID": sid, "ISS": op.issuer}.get(v, v) for k, v in params.items()}
    response = await browser.get(logout_url(fgw, **real))  # with the session cookie
    assert response.status_code == status
    left = await sessions(fgw)
    assert len(left) == (0 if reason == "ended" else 1)
    if status == 400:
        (event,) = await events(fgw, "frontchannel_logout")
        assert event["reason"] == reason and event["outcome"] == "failure"


@pytest.mark.parametrize(
    ("token_sid", "cookie", "sent", "dest", "ended"),
    [
        (False, True, "SUB", "iframe", True),
        (False, True, "SUB", None, True),
        (False, False, "SUB", "iframe", False),
        (True, True, "SUB", "iframe", False),
        (False, True, "someone-else", "iframe", False),
        (False, True, "SUB", "document", False),
    ],
    ids=[
        "no_sid_own_session",
        "no_sid_no_fetch_metadata",
        "no_sid_no_cookie",
        "token_had_sid",
        "no_sid_other_sub",
        "no_sid_top_level_link",
    ],
)
async def test_an_idp_without_sid_names_the_subject_for_the_cookies_session_only(
    fgw: GatewayUnderTest,
    op: TestOP,
    browser: httpx.AsyncClient,
    token_sid: bool,
    cookie: bool,
    sent: str,
    dest: str | None,
    ended: bool,
) -> None:
    """LemonLDAP::NG 2.16 puts no ``sid`` into its ID tokens and sends the ``sub`` as ``sid``
    in its front-channel logout. A subject is no secret: it ends only the session of the
    cookie that comes with the request, and only one whose ID token carried no ``sid``; and
    not from a link followed at the top level (``Sec-Fetch-Dest: document``), which carries
    the ``SameSite=Lax`` cookie from any site: the portal frames the URI."""
    await signed_in(fgw, op, browser)
    if not token_sid:  # as a sign-in at an IdP that puts no sid into its ID tokens
        await fgw.store.sessions.collection.update_many({}, {"$set": {"idp_sid": None}})
    (doc,) = await sessions(fgw)
    url = logout_url(fgw, iss=op.issuer, sid=doc["idp_sub"] if sent == "SUB" else sent)
    headers = {"Sec-Fetch-Dest": dest} if dest else {}
    if cookie:
        response = await browser.get(url, headers=headers)
    else:
        async with httpx.AsyncClient() as idp_frame:
            response = await idp_frame.get(url, headers=headers)
    assert response.status_code == 200
    assert len(await sessions(fgw)) == (0 if ended else 1)
    (event,) = await events(fgw, "frontchannel_logout")
    assert event["outcome"] == "success" and event["sessions_ended"] == (1 if ended else 0)


async def test_a_page_elsewhere_is_refused(
    fgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    sid = await signed_in(fgw, op, browser)
    response = await browser.get(
        logout_url(fgw, iss=op.issuer, sid=sid), headers={"Referer": "http://evil.test/page"}
    )
    assert response.status_code == 403
    assert len(await sessions(fgw)) == 1
    (event,) = await events(fgw, "frontchannel_logout")
    assert event["reason"] == "cross_site_request"


async def test_unknown_idp_and_switched_off(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    async with start_gateway(op, mongo_uri, idp={"frontchannel_logout": False}) as gw:
        off = await browser.get(f"{gw.url}/oidc/frontchannel-logout/testop?iss=x&sid=y")
        unknown = await browser.get(f"{gw.url}/oidc/frontchannel-logout/nope?iss=x&sid=y")
    assert off.status_code == 404 and unknown.status_code == 404


# ---- in Chromium: the OP's own logout page, and a page of another origin -------------------


class FramingPage(RequestHandler):
    def initialize(self, target: str) -> None:
        self.target = target

    def get(self) -> None:
        self.finish(f'<!DOCTYPE html><title>elsewhere</title><iframe src="{self.target}"></iframe>')


async def chromium_sign_in(page: Page, gw: GatewayUnderTest) -> None:
    await page.route(f"{JITSI_BASE}/**", lambda route: route.fulfill(body="jitsi"))
    await page.goto(f"{gw.url}/oidc/auth?room=framed")
    await page.fill("#username", "alice")
    await page.fill("#password", "alice-pw")
    await page.click("#login")
    await page.wait_for_url(f"{JITSI_BASE}/**")


async def test_idp_logout_page_ends_the_session_in_chromium(
    chromium: Browser, fgw: GatewayUnderTest, op: TestOP
) -> None:
    context = await chromium.new_context()  # one browser profile, two tabs
    page = await context.new_page()
    await chromium_sign_in(page, fgw)
    (doc,) = await sessions(fgw)
    sid = doc["idp_sid"]

    # Another origin frames the gateway's URI with the right iss and sid: refused.
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    elsewhere = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    server = HTTPServer(
        Application([(r"/", FramingPage, {"target": logout_url(fgw, iss=op.issuer, sid=sid)})])
    )
    server.add_sockets(sockets)
    try:
        other = await context.new_page()
        await other.goto(elsewhere)
        await wait_for(lambda: _has_event(fgw))
        (refused,) = await events(fgw, "frontchannel_logout")
        assert refused["reason"] == "cross_site_request"
        assert len(await sessions(fgw)) == 1
        await other.close()
    finally:
        server.stop()
        await server.close_all_connections()

    # The person signs out at the IdP: its page frames ours, the session ends.
    await page.goto(f"{op.issuer}/session/end")
    await page.click("#logout")
    await page.wait_for_selector("#signed-out", timeout=30_000)
    await wait_for(lambda: _two_events(fgw))  # written after the session is gone
    assert await _no_sessions(fgw)
    done = (await events(fgw, "frontchannel_logout"))[-1]
    assert done["outcome"] == "success" and done["sessions_ended"] == 1
    cookies = {c["name"] for c in await page.context.cookies(fgw.url)}
    assert fgw.settings.cookies.session_name not in cookies
    # The next room goes to the IdP, which asks for the password again.
    await page.goto(f"{fgw.url}/oidc/auth?room=again")
    await page.wait_for_selector("#password")


async def _has_event(gw: GatewayUnderTest) -> bool:
    return bool(await events(gw, "frontchannel_logout"))


async def _two_events(gw: GatewayUnderTest) -> bool:
    return len(await events(gw, "frontchannel_logout")) >= 2


async def _no_sessions(gw: GatewayUnderTest) -> bool:
    return not await sessions(gw)
