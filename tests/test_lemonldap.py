"""The gateway against a real LemonLDAP::NG portal (Debian's 2.16) with the generic adapter.

The portal's OpenID Connect settings are docs/lemonldap.md's JSON; the gateway's IdP entry
is that page's YAML. Debian's Demo user backend: ``dwho``/``dwho``, ``rtyler``/``rtyler``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import yaml
from playwright.async_api import Browser, Page
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from gateway.devtools.standin import make_standin
from gateway.hashing import sha256_hex
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.lemonldap import DOCS, LemonLDAP

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def llng() -> Iterator[LemonLDAP]:
    portal = LemonLDAP.start()
    try:
        yield portal
    finally:
        portal.stop()


def documented_idp() -> dict[str, Any]:
    text = DOCS.read_text(encoding="utf-8")
    block = re.findall(r"^```yaml\n(.*?)^```", text, flags=re.M | re.S)[0]
    return dict(yaml.safe_load(block)["idps"][0])


@asynccontextmanager
async def llng_gateway(
    llng: LemonLDAP, mongo_uri: str
) -> AsyncIterator[tuple[str, GatewayUnderTest]]:
    """The gateway as docs/lemonldap.md configures it, behind the Jitsi stand-in."""
    idp = {k: v for k, v in documented_idp().items() if k not in ("client_id", "client_secret")}
    idp["issuer"] = llng.issuer
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    jitsi = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    async with start_gateway(
        llng,  # type: ignore[arg-type]  # quacks like TestOP (issuer, register_client)
        mongo_uri,
        idp=idp,
        jitsi={"base_url": jitsi},
    ) as gw:
        standin = HTTPServer(make_standin(gw.url, gw.settings.jitsi))
        standin.add_sockets(sockets)
        try:
            yield jitsi, gw
        finally:
            standin.stop()
            await standin.close_all_connections()


async def portal_login(page: Page, user: str) -> None:
    await page.wait_for_selector("#userfield", timeout=60_000)
    await page.fill("#userfield", user)
    await page.fill("#passwordfield", user)  # the Demo backend: password = login
    await page.click("button[type=submit]")


async def room_claims(page: Page) -> dict[str, Any]:
    await page.wait_for_selector("#claims", timeout=60_000)
    return dict(json.loads(await page.inner_text("#claims")))


async def events(gw: GatewayUnderTest, name: str) -> list[dict[str, Any]]:
    cursor = gw.store.audit.collection.find({"event": name}, sort=[("time", 1)])
    return [d async for d in cursor]


async def session_count(gw: GatewayUnderTest) -> int:
    return int(await gw.store.sessions.collection.count_documents({}))


async def test_sign_in_single_sign_on_and_logout(
    llng: LemonLDAP, mongo_uri: str, chromium: Browser
) -> None:
    async with llng_gateway(llng, mongo_uri) as (jitsi, gw):
        page = await chromium.new_page()
        await page.goto(f"{jitsi}/standup")
        assert page.url.startswith(f"{llng.issuer}/")
        await portal_login(page, "dwho")
        claims = await room_claims(page)
        assert await page.inner_text("#status") == "token accepted"
        assert claims["room"] == "standup"
        assert claims["context"]["user"]["id"] == "llng:dwho"
        assert claims["context"]["user"]["name"] == "Doctor Who"
        [login] = await events(gw, "login_succeeded")
        assert login["username"] == "dwho"
        assert login["email_verified"] is False  # the portal asserts nothing: not verified

        # Single sign-on at the portal: without the gateway's cookie, no form.
        await page.context.clear_cookies(name=gw.settings.cookies.session_name)
        await page.goto(f"{jitsi}/retro")
        assert (await room_claims(page))["room"] == "retro"

        # RP-initiated logout through the portal's end-session endpoint. (Two gateway
        # sessions now: the cookie of the first was cleared above; logout ends this one.)
        assert await session_count(gw) == 2
        await page.goto(f"{gw.url}/oidc/logout")
        await page.click("#logout")
        # The portal frames its relying parties' front-channel logout URIs (this gateway's
        # too) on a page that continues to post_logout_redirect_uri after 30 s (its timer
        # script is a static file, not served by the bare PSGI portal here) or on "Continue".
        frame = f"{gw.url}/oidc/frontchannel-logout/llng?"
        await page.wait_for_selector(f'iframe[src^="{frame}"]', timeout=60_000)
        await page.click("#form button[type=submit]")
        await page.wait_for_url(f"{gw.url}/oidc/logged-out**", timeout=60_000)
        [logout] = await events(gw, "logout")
        assert logout["idp_logout"] is True
        assert await session_count(gw) == 1
        await page.goto(f"{jitsi}/planning")
        await page.wait_for_selector("#userfield", timeout=60_000)  # the password again


async def wait_for_event(gw: GatewayUnderTest, name: str) -> list[dict[str, Any]]:
    """The portal's logout page loads the gateway in a frame; its audit event follows."""
    for _ in range(120):
        found = await events(gw, name)
        if found:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"no {name} audit event")


async def test_logout_at_the_portal_ends_the_gateway_session(
    llng: LemonLDAP, mongo_uri: str, chromium: Browser
) -> None:
    """Portal-initiated logout: the portal's logout page frames the gateway's front-channel
    logout URI (docs/lemonldap.md's ``LogoutUrl``) and the gateway session ends there."""
    async with llng_gateway(llng, mongo_uri) as (jitsi, gw):
        page = await chromium.new_page()
        await page.goto(f"{jitsi}/standup")
        await portal_login(page, "rtyler")
        assert (await room_claims(page))["room"] == "standup"
        assert await session_count(gw) == 1

        await page.goto(f"{llng.issuer}/?logout=1")
        frame = page.frame_locator(f'iframe[src^="{gw.url}/oidc/frontchannel-logout/llng?"]')
        await frame.get_by_text("signed out (1)").wait_for(timeout=60_000)  # framing allowed
        [logout] = await wait_for_event(gw, "frontchannel_logout")
        assert logout["outcome"] == "success", logout
        assert logout["idp"] == "llng"
        assert logout["sessions_ended"] == 1
        # 2.16 sends the subject as sid (its ID tokens carry none): the cookie's session ends
        assert logout["idp_sid_hash"] == sha256_hex("rtyler")[:32]
        assert await session_count(gw) == 0
        await page.goto(f"{jitsi}/retro")
        await page.wait_for_selector("#userfield", timeout=60_000)  # the password again
        assert page.url.startswith(f"{llng.issuer}/")


async def test_no_back_channel_logout_in_lemonldap_2_16(llng: LemonLDAP) -> None:
    """docs/lemonldap.md says the portal's logout reaches the gateway by front-channel
    logout only: 2.16 advertises no back-channel logout (and its code has none). A newer
    portal that does fails this test, so the page gets updated."""
    advertised = await llng.discovery()
    assert advertised["backchannel_logout_supported"] is False
    assert advertised["frontchannel_logout_supported"] is True
