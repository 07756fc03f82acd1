"""The person's path in a real browser: room URL -> IdP login page -> Jitsi with a token.

Debian's Chromium driven by Playwright (no ``playwright install``: the system browser).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from gateway.devtools.op import TestOP
from gateway.devtools.standin import make_standin
from tests.support.browser import sign_in_in_chromium
from tests.support.gateway import start_gateway

pytestmark = [pytest.mark.asyncio, pytest.mark.browser]


async def test_room_url_to_jitsi_with_token(chromium: Browser, op: TestOP, mongo_uri: str) -> None:
    jitsi_sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    jitsi_url = f"http://127.0.0.1:{jitsi_sockets[0].getsockname()[1]}"
    async with start_gateway(op, mongo_uri, jitsi={"base_url": jitsi_url}) as gw:
        standin = HTTPServer(make_standin(gw.url, gw.settings.jitsi))
        standin.add_sockets(jitsi_sockets)
        try:
            page = await chromium.new_page()
            await page.goto(f"{jitsi_url}/DailyStandup")
            await page.wait_for_selector("#username")
            assert await page.title() != ""
            await page.fill("#username", "alice")
            await page.fill("#password", "alice-pw")
            await page.click("#login")
            await page.wait_for_selector("#claims")
            assert page.url.startswith(f"{jitsi_url}/DailyStandup?jwt=")
            assert await page.inner_text("#status") == "token accepted"
            claims = json.loads(await page.inner_text("#claims"))
            assert claims["room"] == "dailystandup"
            assert claims["context"]["user"]["name"] == "Alice Example"
            assert claims["context"]["user"]["id"] == "testop:alice-sub"

            # Another room in the same browser: single sign-on, no login page.
            await page.goto(f"{jitsi_url}/Retro")
            await page.wait_for_selector("#claims")
            assert json.loads(await page.inner_text("#claims"))["room"] == "retro"
            cookies = {c["name"]: c for c in await page.context.cookies(gw.url)}
            session = cookies[gw.settings.cookies.session_name]
            assert session["httpOnly"] is True and session["sameSite"] == "Lax"
        finally:
            standin.stop()
            await standin.close_all_connections()


@pytest.fixture(scope="module")
def second_op() -> Iterator[TestOP]:
    accounts = [
        {
            "sub": "carol-sub",
            "username": "carol",
            "password": "carol-pw",
            "claims": {"name": "Carol Corp", "email": "carol@corp.example", "email_verified": True},
        }
    ]
    with TestOP.start(accounts) as provider:
        yield provider


async def test_chooser_picks_idp_by_email_domain(
    chromium: Browser, op: TestOP, second_op: TestOP, mongo_uri: str
) -> None:
    jitsi_sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    jitsi_url = f"http://127.0.0.1:{jitsi_sockets[0].getsockname()[1]}"
    more = [
        (second_op, {"id": "corp", "display_name": "Corp SSO", "email_domains": ["corp.example"]})
    ]
    async with start_gateway(op, mongo_uri, jitsi={"base_url": jitsi_url}, more_idps=more) as gw:
        standin = HTTPServer(make_standin(gw.url, gw.settings.jitsi))
        standin.add_sockets(jitsi_sockets)
        try:
            page = await chromium.new_page()
            await page.goto(f"{jitsi_url}/AllHands")
            heading = page.get_by_role("heading", level=1)
            assert await heading.inner_text() == "Sign in to join AllHands"
            providers = page.get_by_role("navigation", name="Sign-in providers")
            assert await providers.get_by_role("link").all_inner_texts() == [
                "Sign in with Test OP",
                "Sign in with Corp SSO",
            ]
            await page.get_by_label("Work e-mail address").fill("carol@corp.example")
            await page.get_by_role("button", name="Continue").click()
            await page.wait_for_selector("#username")
            assert page.url.startswith(second_op.issuer)
            await page.fill("#username", "carol")
            await page.fill("#password", "carol-pw")
            await page.click("#login")
            await page.wait_for_selector("#claims")
            claims = json.loads(await page.inner_text("#claims"))
            assert claims["room"] == "allhands"
            assert claims["context"]["user"]["id"] == "corp:carol-sub"
        finally:
            standin.stop()
            await standin.close_all_connections()


ATTACK_PAGE = """<!doctype html><html><body>
<form id="f" method="post" action="{target}"><input name="csrf" value="{csrf}"></form>
<script>document.getElementById('f').submit();</script></body></html>"""


class AttackHandler(RequestHandler):
    """A page on another origin that submits a logout form to the gateway on load."""

    def initialize(self, target: str) -> None:
        self.target = target

    def get(self) -> None:
        self.write(ATTACK_PAGE.format(target=self.target, csrf="0" * 64))


async def test_sign_out_in_chromium_ends_both_sessions(
    chromium: Browser, op: TestOP, mongo_uri: str
) -> None:
    """Sign in, single sign-on to a second room, sign out through the confirmation page and
    the OP's end-session page; the next room asks for the password again."""
    jitsi_sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    jitsi_url = f"http://127.0.0.1:{jitsi_sockets[0].getsockname()[1]}"
    async with start_gateway(
        op, mongo_uri, jitsi={"base_url": jitsi_url}, logout_client=True
    ) as gw:
        standin = HTTPServer(make_standin(gw.url, gw.settings.jitsi))
        standin.add_sockets(jitsi_sockets)
        try:
            page = await chromium.new_page()
            assert (await sign_in_in_chromium(page, f"{jitsi_url}/Standup"))["room"] == "standup"
            await page.goto(f"{jitsi_url}/Retro")
            await page.wait_for_selector("#claims")  # single sign-on: no password asked

            await page.goto(f"{gw.url}/oidc/logout")
            await page.click("#logout")  # the gateway's confirmation
            await page.wait_for_selector("text=Do you want to sign out from the Test OP?")
            await page.click("#logout")  # the OP's own confirmation
            await page.wait_for_selector("#signed-out")
            assert page.url.startswith(f"{gw.url}/oidc/logged-out?")
            assert "signed out at Test OP" in await page.inner_text("#idp-ended")
            assert [d async for d in gw.store.sessions.collection.find({})] == []

            await page.get_by_role("link", name="Back to meetings").click()
            await page.wait_for_selector("#welcome")
            assert page.url == f"{jitsi_url}/"

            await page.goto(f"{jitsi_url}/Planning")
            await page.wait_for_selector("#username")  # the IdP asks again
            assert page.url.startswith(op.issuer)
        finally:
            standin.stop()
            await standin.close_all_connections()


async def test_standin_room_page_signs_out_as_jitsi_does(
    chromium: Browser, op: TestOP, mongo_uri: str
) -> None:
    """The demo's room page offers what Jitsi's logout does: tokenLogoutUrl in a hidden
    iframe ends the gateway session (the IdP's stays); and a full sign-out link."""
    jitsi_sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    jitsi_url = f"http://127.0.0.1:{jitsi_sockets[0].getsockname()[1]}"
    async with start_gateway(op, mongo_uri, jitsi={"base_url": jitsi_url}) as gw:
        standin = HTTPServer(make_standin(gw.url, gw.settings.jitsi))
        standin.add_sockets(jitsi_sockets)
        try:
            page = await chromium.new_page()
            assert (await sign_in_in_chromium(page, f"{jitsi_url}/Standup"))["room"] == "standup"
            assert await gw.store.sessions.collection.count_documents({}) == 1
            everywhere = await page.get_attribute("#signout-everywhere", "href")
            assert everywhere == f"{gw.url}/oidc/logout"
            async with page.expect_response(f"{gw.url}/oidc/logout/silent") as answer:
                await page.click("#signout")
            assert (await answer.value).status == 200
            await page.wait_for_function(
                "document.getElementById('signout-status').textContent !== ''"
            )
            assert await gw.store.sessions.collection.count_documents({}) == 0
            [event] = [e async for e in gw.store.audit.collection.find({"event": "logout"})]
            assert event["silent"] is True and event["outcome"] == "success"
        finally:
            standin.stop()
            await standin.close_all_connections()


@pytest.mark.parametrize(
    "attacker_host", ["localhost", "127.0.0.1"], ids=["cross_site", "same_site"]
)
async def test_another_origin_cannot_sign_a_person_out(
    chromium: Browser, op: TestOP, mongo_uri: str, attacker_host: str
) -> None:
    """A page elsewhere that auto-submits a logout form: refused, the session lives on."""
    jitsi_sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    jitsi_url = f"http://127.0.0.1:{jitsi_sockets[0].getsockname()[1]}"
    attack_sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    attack_url = f"http://{attacker_host}:{attack_sockets[0].getsockname()[1]}"
    async with start_gateway(
        op, mongo_uri, jitsi={"base_url": jitsi_url}, logout_client=True
    ) as gw:
        standin = HTTPServer(make_standin(gw.url, gw.settings.jitsi))
        standin.add_sockets(jitsi_sockets)
        attacker = HTTPServer(
            Application([(r"/", AttackHandler, {"target": f"{gw.url}/oidc/logout"})])
        )
        attacker.add_sockets(attack_sockets)
        try:
            page = await chromium.new_page()
            await sign_in_in_chromium(page, f"{jitsi_url}/Standup")
            async with page.expect_response(f"{gw.url}/oidc/logout") as answer:
                await page.goto(f"{attack_url}/")
            assert (await answer.value).status == 403
            assert len([d async for d in gw.store.sessions.collection.find({})]) == 1
            await page.goto(f"{jitsi_url}/Retro")
            await page.wait_for_selector("#claims")  # still signed in: no password asked
            [event] = [e async for e in gw.store.audit.collection.find({"event": "logout"})]
            assert event["outcome"] == "failure"
            assert event["reason"] == "cross_site_request"
        finally:
            for server in (standin, attacker):
                server.stop()
                await server.close_all_connections()


async def test_idp_link_from_another_site_needs_a_click(
    chromium: Browser, op: TestOP, second_op: TestOP, mongo_uri: str
) -> None:
    """Login CSRF: a page on another site (``localhost`` is another site than ``127.0.0.1``)
    links to ``/oidc/auth?idp=corp``; Chromium marks the navigation cross-site, so the
    chooser asks first, and the person's own click then goes to the IdP."""
    more = [(second_op, {"id": "corp", "display_name": "Corp SSO"})]
    async with start_gateway(op, mongo_uri, more_idps=more) as gw:
        target = f"{gw.url}/oidc/auth?room=board&idp=corp"

        class Lure(RequestHandler):
            def get(self) -> None:
                self.write(f'<a id="lure" href="{target}">Join the board meeting</a>')

        sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        lure = HTTPServer(Application([(r"/", Lure)]))
        lure.add_sockets(sockets)
        try:
            page = await chromium.new_page()
            await page.goto(f"http://localhost:{sockets[0].getsockname()[1]}/")
            await page.click("#lure")
            await page.wait_for_selector("#confirm")
            assert page.url == target
            assert await gw.store.flows.collection.count_documents({}) == 0
            await page.get_by_role("link", name="Sign in with Corp SSO").click()
            await page.wait_for_selector("#username")
            assert page.url.startswith(second_op.issuer)
        finally:
            lure.stop()
            await lure.close_all_connections()
