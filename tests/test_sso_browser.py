"""Jitsi's own sign-in (sso.html) with the gateway as its token service, in Chromium.

The Jitsi side is the page set in ``tests/support/sso_site.py`` (written from Jitsi's
protocol), served with the shipped nginx file by real nginx on one HTTPS origin; the IdP is
the real test OP. Popup (``tokenAuthInline: true``) sign-in, a refresh after the first token
expired, a refresh after logout that recovers, no refresh token in nginx's access log; and
the full-page path, which Jitsi's page cannot complete (no nonce).
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
from tests.support.nginx import SNIPPET
from tests.support.op import TestOP
from tests.support.sso_site import SsoSite
from tests.support.token_service import token_service_gateway

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]


@pytest_asyncio.fixture
async def stack(
    op: TestOP, mongo_uri: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[SsoSite, GatewayUnderTest]]:
    site = SsoSite(getattr(request, "param", None))
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


async def test_full_page_mode_fails_in_jitsis_page_for_want_of_a_nonce(
    stack: tuple[SsoSite, GatewayUnderTest], page: Page
) -> None:
    """tokenAuthInline false: Jitsi's web client goes to tokenAuthUrl without storing a nonce,
    and sso.html stops before redeeming the code. The docs require tokenAuthInline: true
    (and send full-page sign-in to /oidc/auth); doctor reports the setting."""
    site, gw = stack
    await page.goto(f"{site.url}/meeting.html")
    await page.evaluate("loginFullPage('Standup', 'acme')")
    await log_in_at_op(page)
    await page.wait_for_function("document.getElementById('error').textContent !== ''")
    assert await page.inner_text("#error") == "No OAuth nonce found in session"
    assert page.url.startswith(f"{site.url}/static/sso.html?code=")
    events = [e["event"] async for e in gw.store.audit.collection.find({})]
    assert events.count("code_issued") == 1 and events.count("token_issued") == 0


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

    # After logout the refresh token is worth nothing, but Jitsi keeps it and asks again
    # with it. The person signs in anew; the state comes back without the dead token, so
    # Jitsi's page redeems the code and Jitsi has a working refresh token again. (The clock
    # goes back so that the OP's short-lived ID tokens verify again.)
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
    assert third["type"] == "oauth-success", third
    assert third["refreshToken"] not in (first["refreshToken"], second["refreshToken"])
    fourth = await popup_login(page, third["refreshToken"])  # and the next refresh works
    assert fourth["type"] == "oauth-success", fourth

    # No refresh token reached nginx's access log (combined format, query strings and
    # referers logged), while the log itself works.
    log = site.access_log()
    assert "GET /meeting.html" in log
    for body in (first, second, third, fourth):
        assert body["refreshToken"] not in log
    assert "refreshToken" not in log and "sso.html?" not in log


@pytest.mark.parametrize(
    "stack",
    [SNIPPET.read_text().split("\nlocation = /static/sso.html")[0]],
    ids=["without_sso_location"],
    indirect=True,
)
async def test_control_without_the_sso_location_refresh_tokens_reach_the_access_log(
    stack: tuple[SsoSite, GatewayUnderTest], page: Page
) -> None:
    """What the shipped file's /static/sso.html location prevents."""
    site, _ = stack
    await page.goto(f"{site.url}/meeting.html")
    first = await popup_login(page)
    second = await popup_login(page, first["refreshToken"])
    assert second["type"] == "oauth-success"
    assert first["refreshToken"] in site.access_log()


async def test_token_logout_url_on_the_same_origin_behind_nginx(
    stack: tuple[SsoSite, GatewayUnderTest], page: Page
) -> None:
    """Jitsi and the gateway on one origin (nginx): Jitsi's hidden tokenLogoutUrl iframe
    ends the gateway session (Sec-Fetch-Site: same-origin)."""
    site, gw = stack
    await page.goto(f"{site.url}/meeting.html")
    assert (await popup_login(page))["type"] == "oauth-success"
    assert await gw.store.sessions.collection.count_documents({}) == 1
    async with page.expect_response(f"{site.url}/oidc/logout/silent") as answer:
        await page.goto(f"{site.url}/static/logout-frame.html")
    assert (await answer.value).status == 200
    assert await gw.store.sessions.collection.count_documents({}) == 0
    [event] = [e async for e in gw.store.audit.collection.find({"event": "logout"})]
    assert event["outcome"] == "success" and event["silent"] is True
