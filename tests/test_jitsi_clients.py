"""Jitsi's own clients against the gateway: the login button's ``{state}`` as Jitsi's code
builds it (web build and app build, run by Node from Jitsi's published source), the room
URL read back by Jitsi's ``parseURLParams``, the apps' hand-over, and silent logout
(``tokenLogoutUrl``) in Chromium."""

from __future__ import annotations

import json
import secrets
import socket
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt
import pytest
from playwright.async_api import Browser
from pydantic import ValidationError
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from gateway.config import Apps
from gateway.devtools.op import TestOP
from gateway.devtools.standin import make_standin
from gateway.jitsi_state import parse_state
from tests.support.browser import sign_in_in_chromium
from tests.support.gateway import APP_SECRET, JITSI_BASE, GatewayUnderTest, start_gateway
from tests.support.jitsi_web import (
    jitsi_hash_params,
    jitsi_reads,
    jitsi_token,
    jitsi_token_auth_url,
)

# A room URL an embedder or a person might open: toolbar, nested config, ICE servers, an
# interface override, a key Jitsi itself does not carry over (foo), and keys Jitsi's login
# button carries but the gateway does not (they point the client at other servers).
LOCATION_HASH = (
    '#config.toolbarButtons=["microphone","camera","hangup"]'
    "&config.startWithVideoMuted=true"
    '&config.breakoutRooms={"hideAddRoomButton":true,"limits":[1,2]}'
    "&interfaceConfig.SHOW_JITSI_WATERMARK=false"
    '&iceServers.replace=[{"targets":["turn"],"urls":"turns:turn.example:443"}]'
    '&config.subject="Stand & up = 100%"'
    '&config.websocket="wss://evil.example/xmpp-websocket"'
    "&config.analytics.watchRTCEnabled=true"
    "&foo=1"
)
# What the gateway never hands back (gateway/jitsi_state.py CONFIG_KEYS).
NOT_CARRIED = ("iceServers.replace", "config.websocket", "config.analytics.watchRTCEnabled")
TOKEN_AUTH_URL = "{gw}/oidc/auth?room={{room}}&state={{state}}&code_challenge={{code_challenge}}"


def decode_jitsi(token: str) -> dict[str, Any]:
    return jwt.decode(token, APP_SECRET, algorithms=["HS256"], audience="jitsi")


async def follow_sign_in(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient, auth_url: str
) -> httpx.Response:
    """From the login button's URL through the IdP to tokenize's answer (with a live
    session, the entry point's own answer: single sign-on mints at once)."""
    response = await browser.get(auth_url)
    location = response.headers.get("location", "")
    if not location.startswith(op.issuer):  # single sign-on
        return response
    callback = await op.login_over_http(browser, location, "alice", "alice-pw")
    response = await browser.get(callback)  # the callback mints at once
    while response.status_code == 302 and response.headers["location"].startswith("/"):
        response = await browser.get(urljoin(gw.url, response.headers["location"]))
    return response


def login_button_url(gw: GatewayUnderTest, room: str, tenant: str | None, **kw: Any) -> str:
    path = f"/{tenant}/{room}" if tenant else f"/{room}"
    url, verifier = jitsi_token_auth_url(
        TOKEN_AUTH_URL.format(gw=gw.url),
        f"{JITSI_BASE}{path}{LOCATION_HASH}",
        room,
        tenant,
        options={"audioMuted": True, "skipPrejoin": True},
        **kw,
    )
    assert verifier is None or len(verifier) == 64
    # What Jitsi's loginWithPopup appends (actions.web.ts).
    return f"{url}&nonce={secrets.token_hex(32)}"


def expected_overrides() -> dict[str, Any]:
    """What Jitsi itself puts in {state}: its own choices plus the allowed hash overrides."""
    params = jitsi_hash_params(f"{JITSI_BASE}/x{LOCATION_HASH}")
    kept = {
        k: v
        for k, v in params.items()
        if k.split(".")[0] in {"config", "interfaceConfig", "iceServers"} and k not in NOT_CARRIED
    }
    return kept | {"config.startWithAudioMuted": True, "config.prejoinConfig.enabled": False}


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["query", "fragment"])
@pytest.mark.parametrize("tenant", [None, "acme"])
async def test_login_button_state_comes_back_as_jitsi_reads_it(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient, mode: str, tenant: str | None
) -> None:
    async with start_gateway(op, mongo_uri, delivery={"mode": mode}) as gw:
        auth_url = login_button_url(gw, "Standup", tenant)
        final = await follow_sign_in(gw, op, browser, auth_url)
        assert final.status_code == 302, final.text
        url = final.headers["location"]
        path = f"/{tenant}/Standup" if tenant else "/Standup"
        assert urlsplit(url)._replace(query="", fragment="").geturl() == JITSI_BASE + path
        # Jitsi's web client gets the token and every override, value for value.
        token = jitsi_token(url)
        assert token is not None and decode_jitsi(token)["room"] == "standup"
        hash_params = jitsi_hash_params(url)
        hash_params.pop("jwt", None)
        assert hash_params == expected_overrides()
        assert "foo" not in url
        # Overrides never reach the query string (only the token or the flag does).
        assert set(parse_qs(urlsplit(url).query)) == ({"jwt"} if mode == "query" else {"oidc"})
        # Single sign-on into another room keeps them too.
        again = await follow_sign_in(gw, op, browser, login_button_url(gw, "Retro", tenant))
        params = jitsi_hash_params(again.headers["location"])
        params.pop("jwt", None)
        assert params == expected_overrides()


@pytest.mark.asyncio
async def test_login_button_through_the_chooser(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    more = [(op, {"id": "second", "display_name": "Second"})]
    async with start_gateway(op, mongo_uri, more_idps=more) as gw:
        chooser = await browser.get(login_button_url(gw, "Standup", None))
        assert chooser.status_code == 200
        link = next(
            part.split('"')[1]
            for part in chooser.text.split("href=")[1:]
            if 'data-idp="second"' in part
        )
        final = await follow_sign_in(gw, op, browser, urljoin(gw.url, link.replace("&amp;", "&")))
        params = jitsi_hash_params(final.headers["location"])
        assert {k: params[k] for k in expected_overrides()} == expected_overrides()


@pytest.mark.asyncio
async def test_jitsi_code_challenge_and_nonce_never_reach_the_idp(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    """Jitsi's {code_challenge} and appended nonce are accepted, and the IdP gets the
    gateway's own PKCE challenge and nonce, never Jitsi's."""
    async with start_gateway(op, mongo_uri) as gw:
        auth_url = login_button_url(gw, "Standup", None)
        theirs = parse_qs(urlsplit(auth_url).query)
        response = await browser.get(auth_url)
        assert response.status_code == 302
        ours = parse_qs(urlsplit(response.headers["location"]).query)
        assert ours["code_challenge"] != theirs["code_challenge"]
        assert ours["nonce"] != theirs["nonce"]
        assert ours["code_challenge_method"] == ["S256"]
        assert response.headers["location"].startswith(op.issuer)


# Keys that could point Jitsi's client at another server, script or TURN relay: never carried.
POINTERS = {
    "config.hosts.domain": "evil.example",
    "config.hosts.muc": "conference.evil.example",
    "config.bosh": "https://evil.example/http-bind",
    "config.websocket": "wss://evil.example/xmpp-websocket",
    "config.serviceUrl": "wss://evil.example/xmpp-websocket",
    "config.analytics.scriptURLs": ["https://evil.example/a.js"],
    "config.analytics.watchRTCEnabled": True,
    "config.analytics.watchRTCConfigParams": {"rtcApiKey": "x"},
    "config.p2p.stunServers": [{"urls": "stun:evil.example"}],
    "config.dynamicBrandingUrl": "https://evil.example/brand.json",
    "iceServers.replace": [{"targets": ["turn"], "urls": "turns:evil.example:443"}],
    "interfaceConfig.SUPPORT_URL": "https://evil.example/help",
    "interfaceConfig.JITSI_WATERMARK_LINK": "https://evil.example/",
}


def test_state_keeps_no_key_that_points_elsewhere() -> None:
    state = json.dumps({"room": "standup", "config.startWithAudioMuted": True, **POINTERS})
    parsed = parse_state(state, "standup")
    assert parsed.overrides == {"config.startWithAudioMuted": True}


BAD_STATES = [
    ("too_deep", {"room": "standup", "config.x": [[[[[[[[["deep"]]]]]]]]]}),
    ("oversized", {"room": "standup", "config.pad": "x" * 9000}),
    ("too_many_keys", {"room": "standup", **{f"config.k{i}": i for i in range(130)}}),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("case", "state"), BAD_STATES, ids=[b[0] for b in BAD_STATES])
async def test_state_bounds(gw: GatewayUnderTest, case: str, state: dict[str, Any]) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{gw.url}/oidc/auth", params={"room": "standup", "state": json.dumps(state)}
        )
    assert response.status_code == 400, case
    assert "location" not in response.headers


@pytest.mark.asyncio
async def test_override_keys_cannot_smuggle_parameters(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    """Keys outside Jitsi's shape (``&``, ``=``, ``#``, prototype names) are dropped; values
    are encoded, so nothing can add a parameter or a second token."""
    state = {
        "room": "standup",
        "config.a&jwt": "x",
        "config.b=1": "x",
        "config.__proto__.x": 1,
        "config.c#d": 1,
        "config.subject": "&jwt=forged#x",
    }
    async with start_gateway(op, mongo_uri) as gw:
        final = await follow_sign_in(
            gw,
            op,
            browser,
            f"{gw.url}/oidc/auth?" + httpx.QueryParams(state=json.dumps(state)).__str__(),
        )
        url = final.headers["location"]
        params = jitsi_hash_params(url)
        assert params == {"config.subject": "&jwt=forged#x"}
        token = jitsi_token(url)
        assert token is not None and decode_jitsi(token)["room"] == "standup"


# ---- the apps ----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("platform", "prefix"),
    [
        ("ios", "org.jitsi.meet://"),
        ("android", "intent://"),
        ("electron", "jitsi-meet://"),
    ],
)
async def test_a_sign_in_started_by_an_app_ends_in_the_app(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient, platform: str, prefix: str
) -> None:
    async with start_gateway(op, mongo_uri) as gw:
        auth_url = login_button_url(gw, "Standup", "acme", platform=platform)
        page = await follow_sign_in(gw, op, browser, auth_url)
        assert page.status_code == 200, page.text
        app_link = page.text.split('id="app-link" href="')[1].split('"')[0].replace("&amp;", "&")
        assert app_link.startswith(prefix)
        assert f'content="0; url={app_link}' in page.text.replace("&amp;", "&")
        if platform == "android":
            data, _, intent = app_link.rpartition("#Intent;")
            assert intent == "scheme=org.jitsi.meet;package=org.jitsi.meet;end"
            data = "org.jitsi.meet://" + data[len("intent://") :]
        else:
            data = app_link
        # The app reads the deep link as the web client reads the room URL.
        web_form = "https://" + data.split("://", 1)[1]
        jitsi = urlsplit(JITSI_BASE)
        assert web_form.startswith(f"https://{jitsi.netloc}{jitsi.path}/acme/Standup?jwt=")
        token = jitsi_token(web_form)
        assert token is not None and decode_jitsi(token)["sub"] == "acme"
        params = jitsi_hash_params(web_form)
        assert {k: params[k] for k in expected_overrides()} == expected_overrides()
        web_link = page.text.split('id="web-link" href="')[1].split('"')[0].replace("&amp;", "&")
        assert web_link.startswith(JITSI_BASE + "/acme/Standup?jwt=")


@pytest.mark.asyncio
async def test_white_labelled_app_schemes_and_apps_switched_off(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    apps = {"ios_scheme": "com.example.meet", "electron_scheme": None}
    async with start_gateway(op, mongo_uri, delivery={"apps": apps}) as gw:
        ios = await follow_sign_in(gw, op, browser, login_button_url(gw, "A", None, platform="ios"))
        assert 'href="com.example.meet://' in ios.text
        desktop = await follow_sign_in(
            gw, op, browser, login_button_url(gw, "B", None, platform="electron")
        )
        assert desktop.status_code == 302
        assert desktop.headers["location"].startswith(JITSI_BASE + "/B?jwt=")


@pytest.mark.parametrize(
    "apps",
    [
        {"ios_scheme": "javascript"},
        {"electron_scheme": "https"},
        {"electron_scheme": "view-source"},  # browser schemes a deny-list would miss
        {"ios_scheme": "intent"},
        {"android_scheme": "ms-settings"},
        {"ios_scheme": "chrome"},
        {"android_scheme": "Org Jitsi"},
        {"android_package": "jitsi"},
    ],
)
def test_app_settings_refuse_unsafe_values(apps: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Apps(**apps)


# ---- silent logout (config.tokenLogoutUrl) ------------------------------------------------

IFRAME_PAGE = """<!doctype html><html><body>
<iframe id="logout" src="{src}" width="10" height="10"></iframe></body></html>"""


class IframeHandler(RequestHandler):
    def initialize(self, src: str) -> None:
        self.src = src

    def get(self) -> None:
        self.write(IFRAME_PAGE.format(src=self.src))


def serve(app: Application, host: str = "127.0.0.1") -> tuple[HTTPServer, str]:
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    server = HTTPServer(app)
    server.add_sockets(sockets)
    return server, f"http://{host}:{sockets[0].getsockname()[1]}"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("framer", "ends"),
    [("jitsi", True), ("same_site_other", False), ("cross_site", False)],
)
async def test_token_logout_url_in_a_hidden_iframe(
    chromium: Browser, op: TestOP, mongo_uri: str, framer: str, ends: bool
) -> None:
    """Jitsi's page frames /oidc/logout/silent: the session ends. Another page, same-site
    or cross-site, framing it ends nothing."""
    jitsi_sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    jitsi_url = f"http://127.0.0.1:{jitsi_sockets[0].getsockname()[1]}"
    async with start_gateway(op, mongo_uri, jitsi={"base_url": jitsi_url}) as gw:
        standin = make_standin(gw.url, gw.settings.jitsi)
        silent = f"{gw.url}/oidc/logout/silent"
        standin.add_handlers(r".*", [(r"/static/logout\.html", IframeHandler, {"src": silent})])
        jitsi_server = HTTPServer(standin)
        jitsi_server.add_sockets(jitsi_sockets)
        other, other_url = serve(
            Application([(r"/", IframeHandler, {"src": silent})]),
            host="localhost" if framer == "cross_site" else "127.0.0.1",
        )
        try:
            page = await chromium.new_page()
            await sign_in_in_chromium(page, f"{jitsi_url}/Standup")
            framing = f"{jitsi_url}/static/logout.html" if framer == "jitsi" else f"{other_url}/"
            async with page.expect_response(silent) as answer:
                await page.goto(framing)
            status = (await answer.value).status
            sessions = [d async for d in gw.store.sessions.collection.find({})]
            events = [e async for e in gw.store.audit.collection.find({"event": "logout"})]
            if ends:
                assert status == 200 and sessions == []
                assert events[0]["outcome"] == "success" and events[0]["silent"] is True
            else:
                assert status == 403 and len(sessions) == 1
                assert events[0]["outcome"] == "failure"
                await page.goto(f"{jitsi_url}/Retro")
                await page.wait_for_selector("#claims")  # still signed in
        finally:
            for server in (jitsi_server, other):
                server.stop()
                await server.close_all_connections()


@pytest.mark.asyncio
async def test_only_the_silent_logout_page_may_be_framed_and_only_by_jitsi(
    gw: GatewayUnderTest,
) -> None:
    async with httpx.AsyncClient() as client:
        silent = await client.get(f"{gw.url}/oidc/logout/silent")
        confirm = await client.get(f"{gw.url}/oidc/logout")
    jitsi_origin = "{0.scheme}://{0.netloc}".format(urlsplit(JITSI_BASE))
    assert f"frame-ancestors {jitsi_origin}" in silent.headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in silent.headers
    assert confirm.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in confirm.headers["Content-Security-Policy"]


def test_jitsi_harness_sees_unknown_keys() -> None:
    """Control: the harness really runs Jitsi's parser (it drops __proto__ itself)."""
    [params] = jitsi_reads([{"op": "hash", "url": "https://x/r#config.a=1&__proto__.b=2"}])
    assert params == {"config.a": 1}
