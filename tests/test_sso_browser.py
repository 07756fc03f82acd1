"""Jitsi's own sign-in (sso.html) with the gateway as its token service, in Chromium.

The Jitsi side is the page set in ``tests/support/sso_site.py`` (written from Jitsi's
protocol), served with the gateway's ``/oidc/`` by real nginx on one HTTPS origin; the IdP
is the real test OP. Full-page and popup (``tokenAuthInline``) sign-in, a refresh after the
first token expired, and a refresh after logout.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import pytest_asyncio
from playwright.async_api import Page

from tests.support.browser import launch_chromium
from tests.support.gateway import APP_SECRET, GatewayUnderTest
from tests.support.jitsi_web import jitsi_hash_params, jitsi_token
from tests.support.op import TestOP
from tests.support.sso_site import SsoSite
from tests.support.token_service import token_service_gateway

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]


@pytest_asyncio.fixture
async def stack(op: TestOP, mongo_uri: str) -> AsyncIterator[tuple[SsoSite, GatewayUnderTest]]:
    site = SsoSite()
    async with token_service_gateway(
        op, mongo_uri, site.sso_url, proxy_url=site.url, jitsi={"base_url": site.url}
    ) as gw:
        site.start(int(gw.direct_url.rsplit(":", 1)[1]))
        try:
            yield site, gw
        finally:
            site.stop()


@pytest_asyncio.fixture
async def page() -> AsyncIterator[Page]:
    async with launch_chromium() as browser:
        context = await browser.new_context(ignore_https_errors=True)
        yield await context.new_page()


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(
        token,
        APP_SECRET,
        algorithms=["HS256"],
        audience="jitsi",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )


async def log_in_at_op(page: Page) -> None:
    await page.wait_for_selector("#username")
    await page.fill("#username", "alice")
    await page.fill("#password", "alice-pw")
    await page.click("#login")


async def popup_login(page: Page, refresh_token: str | None = None) -> dict[str, Any]:
    """The meeting opens tokenAuthUrl in a popup; returns what sso.html posted back."""
    await page.evaluate("document.getElementById('result').textContent = ''")
    async with page.expect_popup() as popup_info:
        await page.evaluate("([token]) => loginPopup('Standup', 'acme', token)", [refresh_token])
    popup = await popup_info.value
    if (refresh_token is None and "/oidc/authorize" in popup.url) or await _at_op(popup):
        await log_in_at_op(popup)
    await page.wait_for_function("document.getElementById('result').textContent !== ''")
    return json.loads(await page.inner_text("#result"))


async def _at_op(popup: Page) -> bool:
    try:
        await popup.wait_for_selector("#username", timeout=3000)
    except Exception:
        return False
    return True


async def test_full_page_sign_in_lands_in_the_room_with_a_token(
    stack: tuple[SsoSite, GatewayUnderTest], page: Page
) -> None:
    site, gw = stack
    await page.goto(f"{site.url}/meeting.html")
    await page.evaluate("loginFullPage('Standup', 'acme')")
    await log_in_at_op(page)
    await page.wait_for_selector("#jitsi")
    assert page.url.startswith(f"{site.url}/acme/standup#")
    token = jitsi_token(page.url)  # as Jitsi's web client reads it
    assert token is not None
    assert claims(token)["room"] == "standup" and claims(token)["sub"] == "acme"
    assert jitsi_hash_params(page.url)["config.startWithAudioMuted"] is True
    events = [e["event"] async for e in gw.store.audit.collection.find({})]
    assert events.count("code_issued") == 1 and events.count("token_issued") == 1


async def test_popup_sign_in_then_refresh_then_logout(
    stack: tuple[SsoSite, GatewayUnderTest], page: Page
) -> None:
    site, gw = stack
    await page.goto(f"{site.url}/meeting.html")
    first = await popup_login(page)
    assert first["type"] == "oauth-success"
    assert claims(first["accessToken"])["room"] == "standup"
    assert first["refreshToken"]

    # The meeting goes on past the token's lifetime: Jitsi asks again with its refresh
    # token; the person is not asked for a password.
    gw.clock.offset += 400
    second = await popup_login(page, first["refreshToken"])
    assert second["type"] == "oauth-success", second
    assert claims(second["accessToken"])["iat"] >= claims(first["accessToken"])["iat"] + 400
    assert second["refreshToken"] != first["refreshToken"]

    # After logout the refresh token is worth nothing. (The clock goes back so that the
    # OP's short-lived ID tokens verify again when the popup signs in anew.)
    gw.clock.offset -= 400
    await page.goto(f"{site.url}/oidc/logout")
    await page.click("#logout")
    await page.goto(f"{site.url}/meeting.html")
    async with page.expect_popup() as popup_info:
        await page.evaluate(
            "([token]) => loginPopup('Standup', 'acme', token)", [second["refreshToken"]]
        )
    popup = await popup_info.value
    if await _at_op(popup):  # the IdP session may or may not have ended with ours
        await log_in_at_op(popup)
    await page.wait_for_function("document.getElementById('result').textContent !== ''")
    third = json.loads(await page.inner_text("#result"))
    assert third["type"] == "oauth-error"
    assert "session has ended" in third["error"] or "revoked" in third["error"]


async def test_token_logout_url_on_the_same_origin_behind_nginx(
    stack: tuple[SsoSite, GatewayUnderTest], page: Page
) -> None:
    """Jitsi and the gateway on one origin (nginx): Jitsi's hidden tokenLogoutUrl iframe
    ends the gateway session (Sec-Fetch-Site: same-origin)."""
    site, gw = stack
    await page.goto(f"{site.url}/meeting.html")
    await page.evaluate("loginFullPage('Standup', 'acme')")
    await log_in_at_op(page)
    await page.wait_for_selector("#jitsi")
    assert await gw.store.sessions.collection.count_documents({}) == 1
    async with page.expect_response(f"{site.url}/oidc/logout/silent") as answer:
        await page.goto(f"{site.url}/static/logout-frame.html")
    assert (await answer.value).status == 200
    assert await gw.store.sessions.collection.count_documents({}) == 0
    [event] = [e async for e in gw.store.audit.collection.find({"event": "logout"})]
    assert event["outcome"] == "success" and event["silent"] is True
