"""The shipped nginx entry rule, run by Debian's real nginx in front of a real gateway.

nginx serves a static stand-in for Jitsi Meet's document root with the Debian package's site
layout and includes ``deploy/nginx/jitsi-oidc-gateway.conf`` unchanged. Also here: Jitsi's
own login button (``tokenAuthUrl`` with ``{state}``) and fragment delivery with the flag.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import httpx
import jwt
import pytest
import pytest_asyncio
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from tests.support.gateway import (
    APP_SECRET,
    GatewayUnderTest,
    logout_client_metadata,
    start_gateway,
)
from tests.support.jitsi_web import jitsi_token
from tests.support.nginx import SNIPPET, Nginx, PortTaken, free_port
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

ATTEMPTS = 5


@dataclass
class Stack:
    nginx: Nginx
    gw: GatewayUnderTest

    @property
    def url(self) -> str:
        return self.nginx.url


@asynccontextmanager
async def behind_nginx(op: TestOP, mongo_uri: str, **overrides: Any) -> AsyncIterator[Stack]:
    """nginx on a free port in front of a gateway whose public URL is nginx's."""
    for _ in range(ATTEMPTS):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        client = await op.register_client(
            [f"{url}/oidc/redirect/testop"], **logout_client_metadata(url)
        )
        idp = {"client_id": client["client_id"], "client_secret": client["client_secret"]}
        async with start_gateway(
            op, mongo_uri, public_url=url, jitsi={"base_url": url}, idp=idp, **overrides
        ) as gw:
            gw.client = client
            nginx = Nginx(port, int(urlsplit(gw.url).port or 0))
            try:
                nginx.start()
            except PortTaken:
                nginx.cleanup()
                continue
            try:
                yield Stack(nginx, gw)
            finally:
                nginx.cleanup()
            return
    raise RuntimeError(f"no free port for nginx after {ATTEMPTS} attempts")


@pytest_asyncio.fixture(scope="module")
async def stack(op: TestOP, mongo_uri: str) -> AsyncIterator[Stack]:
    """One nginx and gateway for the module: its tests only read through them or sign in
    with their own cookie jar; a test that counts audit events starts its own."""
    async with behind_nginx(op, mongo_uri) as running:
        yield running


def auth_target(stack: Stack, location: str) -> dict[str, list[str]] | None:
    """The query of a redirect to the gateway's entry point, or None for any other."""
    target = urljoin(stack.url + "/", location)
    parts = urlsplit(target)
    if f"{parts.scheme}://{parts.netloc}" != stack.url or parts.path != "/oidc/auth":
        return None
    return parse_qs(parts.query)


DIVERTED = [
    ("room", "/standup", {"room": ["standup"]}),
    ("room_mixed_case", "/DailyStandUp", {"room": ["DailyStandUp"]}),
    ("room_with_other_params", "/standup?lang=de", {"room": ["standup"]}),
    ("tenant_room", "/acme/standup", {"tenant": ["acme"], "room": ["standup"]}),
    ("empty_jwt", "/standup?jwt=", {"room": ["standup"]}),
    # `oidc` is the gateway's prefix only with a slash after it: as a name it is a room.
    ("room_named_oidc", "/oidc", {"room": ["oidc"]}),
    ("tenant_room_named_oidc", "/acme/oidc", {"tenant": ["acme"], "room": ["oidc"]}),
    # Jitsi keeps the last `jwt` (URLSearchParams): a later empty or bare one leaves none.
    ("last_jwt_empty", "/standup?jwt=abc&jwt=", {"room": ["standup"]}),
    ("last_jwt_bare", "/standup?jwt=abc&jwt", {"room": ["standup"]}),
    ("last_jwt_bare_then_more", "/standup?jwt=abc&jwt&lang=de", {"room": ["standup"]}),
    # Jitsi reads only lower-case `jwt`: other spellings carry no usable token.
    ("upper_case_jwt", "/standup?JWT=abc.def.ghi", {"room": ["standup"]}),
    ("mixed_case_jwt", "/standup?Jwt=abc.def.ghi", {"room": ["standup"]}),
    ("upper_case_flag", "/standup?OIDC=1", {"room": ["standup"]}),
    ("jwt_as_suffix", "/standup?xjwt=abc", {"room": ["standup"]}),
    ("tenant_upper_case_jwt", "/acme/standup?JWT=x", {"tenant": ["acme"], "room": ["standup"]}),
    # Health paths on the web host are rooms too (see docs/deploy.md for what to probe).
    ("metrics_is_a_room_here", "/metrics", {"room": ["metrics"]}),
    ("healthz_is_a_room_here", "/healthz", {"room": ["healthz"]}),
    ("two_segments_are_a_tenant_room", "/about/health", {"tenant": ["about"], "room": ["health"]}),
]


@pytest.mark.parametrize(("case", "path", "query"), DIVERTED, ids=[d[0] for d in DIVERTED])
async def test_room_without_token_or_flag_goes_to_the_gateway(
    stack: Stack, case: str, path: str, query: dict[str, list[str]]
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(stack.url + path)
    assert response.status_code == 302, (case, response.text)
    assert auth_target(stack, response.headers["location"]) == query


SERVED_BY_JITSI = [
    ("room_with_jwt", "/standup?jwt=abc.def.ghi", "JITSI-INDEX"),
    ("room_with_flag", "/standup?oidc=1", "JITSI-INDEX"),
    ("tenant_room_with_jwt", "/acme/standup?jwt=abc.def.ghi", "JITSI-INDEX"),
    ("tenant_room_with_flag", "/acme/standup?oidc=1", "JITSI-INDEX"),
    ("welcome_page", "/", "JITSI-INDEX"),
    ("config_js", "/config.js", "JITSI-CONFIG"),
    ("interface_config_js", "/interface_config.js", "JITSI-INTERFACE-CONFIG"),
    ("external_api_js", "/external_api.js", "JITSI-EXTERNAL-API"),
    ("libs", "/libs/app.bundle.min.js", "JITSI-LIBS"),
    ("css", "/css/all.css", "JITSI-CSS"),
    ("images", "/images/watermark.svg", "JITSI-IMAGES"),
    ("sounds", "/sounds/ring.mp3", "JITSI-SOUNDS"),
    ("lang", "/lang/main.json", "JITSI-LANG"),
    ("static", "/static/close.html", "JITSI-STATIC"),
    ("fonts", "/fonts/jitsi.woff", "JITSI-FONTS"),
    ("bosh", "/http-bind", "JITSI-BOSH"),
    ("xmpp_websocket", "/xmpp-websocket", "JITSI-XMPP-WEBSOCKET"),
    ("colibri_ws", "/colibri-ws/jvb1/abc", "JITSI-COLIBRI"),
    ("tenant_config_js", "/acme/config.js", "JITSI-CONFIG"),
    ("tenant_bosh", "/acme/http-bind", "JITSI-BOSH"),
    ("tenant_xmpp_websocket", "/acme/xmpp-websocket", "JITSI-XMPP-WEBSOCKET"),
    ("tenant_libs", "/acme/libs/app.bundle.min.js", "JITSI-LIBS"),
    ("name_gateway_refuses", "/caf%C3%A9", "JITSI-INDEX"),
    ("jwt_after_other_params", "/standup?lang=de&jwt=abc.def.ghi", "JITSI-INDEX"),
    ("room_named_oidc_with_jwt", "/oidc?jwt=abc.def.ghi", "JITSI-INDEX"),
    ("tenant_room_named_oidc_with_jwt", "/acme/oidc?jwt=abc.def.ghi", "JITSI-INDEX"),
    ("last_of_two_jwts_has_a_value", "/standup?jwt=&jwt=abc.def.ghi", "JITSI-INDEX"),
    ("jwt_then_other_params", "/standup?jwt=abc.def.ghi&lang=de&xjwt=", "JITSI-INDEX"),
    ("flag_after_other_params", "/standup?lang=de&oidc=1", "JITSI-INDEX"),
    # Encoded characters in the path: never diverted (the raw path differs from $uri).
    ("encoded_slash", "/room%2Fx", "JITSI-INDEX"),
    ("encoded_slash_under_tenant", "/acme/room%2Fx", "JITSI-INDEX"),
    ("encoded_letters", "/st%61ndup", "JITSI-INDEX"),
    ("manifest_json", "/manifest.json", "JITSI-MANIFEST"),
    ("pwa_worker", "/pwa-worker.js", "JITSI-PWA-WORKER"),
    ("conference_request", "/conference-request/v1", "JITSI-CONFERENCE-REQUEST"),
    ("room_info", "/_api/room-info", "JITSI-ROOM-INFO"),
    ("api_public", "/_api/public/x", "JITSI-API-PUBLIC"),
    ("unlock", "/_unlock", "JITSI-UNLOCK"),
    ("well_known", "/.well-known/assetlinks.json", "JITSI-WELL-KNOWN"),
    ("tenant_manifest", "/acme/manifest.json", "JITSI-MANIFEST"),
    ("tenant_pwa_worker", "/acme/pwa-worker.js", "JITSI-PWA-WORKER"),
    ("tenant_conference_request", "/acme/conference-request/v1", "JITSI-CONFERENCE-REQUEST"),
    ("tenant_room_info", "/acme/_api/room-info", "JITSI-ROOM-INFO"),
    ("jaas_tenant", "/vpaas-magic-cookie-1fc5/standup", "JITSI-INDEX"),
]


@pytest.mark.parametrize(
    ("case", "path", "marker"), SERVED_BY_JITSI, ids=[s[0] for s in SERVED_BY_JITSI]
)
async def test_jitsi_paths_and_tokened_rooms_are_never_diverted(
    stack: Stack, case: str, path: str, marker: str
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(stack.url + path)
    assert response.status_code == 200, (case, response.status_code, response.headers)
    assert marker in response.text, case
    if marker == "JITSI-INDEX":  # SSI still works for Jitsi's own pages
        assert "JITSI-SSI-TITLE" in response.text and "<!--#" not in response.text


async def test_non_get_room_requests_are_not_diverted(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(stack.url + "/standup", content=b"x")
    assert (
        "location" not in response.headers
        or auth_target(stack, response.headers["location"]) is None
    )


async def test_gateway_paths_are_proxied_and_internal_ones_are_not(
    stack: Stack, op: TestOP
) -> None:
    async with httpx.AsyncClient() as client:
        auth = await client.get(stack.url + "/oidc/auth", params={"room": "standup"})
        refused = await client.get(stack.url + "/oidc/auth", params={"room": "no.dots"})
        logged_out = await client.get(stack.url + "/oidc/logged-out")
        metrics = await client.get(stack.url + "/metrics?oidc=1")
        direct = await client.get(stack.gw.url + "/metrics")
    assert auth.status_code == 302
    assert auth.headers["location"].startswith(op.issuer)
    assert refused.status_code == 400 and refused.headers["X-Request-Id"]
    assert logged_out.status_code == 200 and 'id="signed-out"' in logged_out.text
    # /metrics through nginx is Jitsi's (a room page), never the gateway's numbers.
    assert "jog_" not in metrics.text and "JITSI-INDEX" in metrics.text
    assert direct.status_code == 200 and "jog_sign_ins" in direct.text


async def follow(client: httpx.AsyncClient, url: str, stop_at: str, hops: int = 10) -> str:
    """Follow redirects until one leaves for ``stop_at``; return that URL (not requested)."""
    for _ in range(hops):
        response = await client.get(url)
        assert response.status_code in (301, 302, 303), (url, response.status_code)
        url = urljoin(url, response.headers["location"])
        if url.startswith(stop_at):
            return url
    raise AssertionError(f"no redirect to {stop_at}")


async def sign_in_through(stack: Stack, op: TestOP, client: httpx.AsyncClient, start: str) -> str:
    """Room URL -> nginx -> gateway -> OP login -> gateway -> back to the room; final URL."""
    authorize = await follow(client, start, op.issuer)
    callback = await op.login_over_http(client, authorize, "alice", "alice-pw")
    assert callback.startswith(stack.url + "/oidc/redirect/testop?")
    return await _finish(stack, client, callback)


async def _finish(stack: Stack, client: httpx.AsyncClient, callback: str) -> str:
    url = callback
    for _ in range(5):
        response = await client.get(url)
        assert response.status_code == 302, response.text
        url = urljoin(url, response.headers["location"])
        if not urlsplit(url).path.startswith("/oidc/"):
            return url
    raise AssertionError("the gateway never sent the browser back to a room")


def jitsi_claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, APP_SECRET, algorithms=["HS256"], audience="jitsi")


async def test_full_sign_in_through_nginx(op: TestOP, mongo_uri: str) -> None:
    async with (
        behind_nginx(op, mongo_uri) as stack,
        httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser,
    ):
        final = await sign_in_through(stack, op, browser, stack.url + "/acme/DailyStandup")
        parts = urlsplit(final)
        assert f"{parts.scheme}://{parts.netloc}" == stack.url
        assert parts.path == "/acme/DailyStandup"
        token = parse_qs(parts.query)["jwt"][0]
        claims = jitsi_claims(token)
        assert claims["room"] == "dailystandup" and claims["sub"] == "acme"
        page = await browser.get(final)  # nginx now lets Jitsi serve the room
        assert page.status_code == 200 and "JITSI-INDEX" in page.text
        # A second room: single sign-on, straight back with a token.
        second = await _finish(stack, browser, stack.url + "/retro")
        assert jitsi_claims(parse_qs(urlsplit(second).query)["jwt"][0])["room"] == "retro"
        await stack.gw.store.audit.flush()
        events = [d["event"] async for d in stack.gw.store.audit.collection.find({})]
    assert events.count("token_minted") == 2 and events.count("login_succeeded") == 1


async def test_fragment_delivery_with_flag_does_not_loop(op: TestOP, mongo_uri: str) -> None:
    async with (
        behind_nginx(op, mongo_uri, delivery={"mode": "fragment"}) as stack,
        httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser,
    ):
        final = await sign_in_through(stack, op, browser, stack.url + "/standup")
        parts = urlsplit(final)
        assert parts.path == "/standup"
        assert parse_qs(parts.query) == {"oidc": ["1"]}
        token = jitsi_token(final)
        assert token is not None and jitsi_claims(token)["room"] == "standup"
        # The browser requests the URL without its fragment: nginx must serve Jitsi.
        page = await browser.get(final.split("#", 1)[0])
        assert page.status_code == 200 and "JITSI-INDEX" in page.text
        # nginx's log never saw the token.
        assert token not in (stack.nginx.prefix / "access.log").read_text()


def jitsi_state(room: str, tenant: str | None = None, **extra: Any) -> str:
    """What Jitsi Meet's getTokenAuthUrl puts in {state}."""
    state: dict[str, Any] = {"room": room, "roomSafe": room.lower(), "tenant": tenant}
    state |= {"config.startWithAudioMuted": True, "config.localSubject": "", **extra}
    return json.dumps(state)


async def test_jitsi_login_button_token_auth_url(stack: Stack, op: TestOP) -> None:
    """config.tokenAuthUrl = '<gateway>/oidc/auth?room={room}&state={state}'."""
    query = urlencode(
        {"room": "Planning", "state": jitsi_state("Planning", "acme")}, quote_via=quote
    )
    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser:
        final = await sign_in_through(stack, op, browser, f"{stack.url}/oidc/auth?{query}")
    parts = urlsplit(final)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{stack.url}/acme/Planning"
    assert jitsi_claims(parse_qs(parts.query)["jwt"][0])["sub"] == "acme"


BAD_STATES = [
    ("not_json", "{room: standup}"),
    ("not_an_object", '["standup"]'),
    ("room_path_trick", json.dumps({"room": "../admin"})),
    ("room_host_trick", json.dumps({"room": "//evil.example"})),
    ("tenant_host_trick", json.dumps({"room": "standup", "tenant": "evil.example"})),
    ("tenant_not_string", json.dumps({"room": "standup", "tenant": ["a"]})),
    ("room_missing", json.dumps({"tenant": "acme"})),
    ("room_disagrees", json.dumps({"room": "other"})),
    ("oversized", json.dumps({"room": "standup", "pad": "x" * 9000})),
]


@pytest.mark.parametrize(("case", "state"), BAD_STATES, ids=[b[0] for b in BAD_STATES])
async def test_jitsi_state_is_validated_strictly(stack: Stack, case: str, state: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            stack.gw.url + "/oidc/auth", params={"room": "standup", "state": state}
        )
    assert response.status_code == 400, case
    assert "location" not in response.headers


async def test_state_cannot_name_a_redirect_target(stack: Stack, op: TestOP) -> None:
    """Extra keys (a would-be redirect) are ignored: the browser only ever goes to Jitsi."""
    state = jitsi_state("standup", redirect="https://evil.example/", url="https://evil.example/")
    query = urlencode({"room": "standup", "state": state})
    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser:
        final = await sign_in_through(stack, op, browser, f"{stack.url}/oidc/auth?{query}")
    assert final.startswith(stack.url + "/standup?jwt=")
    assert "evil" not in final


@contextmanager
def plain_nginx(gateway_port: int, **kwargs: Any) -> Iterator[Nginx]:
    """The test site in front of whatever listens on ``gateway_port`` (or nothing)."""
    for _ in range(ATTEMPTS):
        nginx = Nginx(free_port(), gateway_port, **kwargs)
        try:
            nginx.start()
        except PortTaken:
            nginx.cleanup()
            continue
        try:
            yield nginx
        finally:
            nginx.cleanup()
        return
    raise RuntimeError(f"no free port for nginx after {ATTEMPTS} attempts")


def dead_port() -> int:
    """A loopback port nothing listens on (the gateway is down)."""
    return free_port()


async def test_jaas_site_subrequests_and_endpoints_are_never_diverted() -> None:
    """After Jitsi's move-to-jaas.sh: index-jaas.html includes /jaas-jwt by an SSI
    subrequest, which carries no jwt or flag; the page must embed Jitsi's answer."""
    with plain_nginx(dead_port(), jaas=True) as nginx:
        async with httpx.AsyncClient() as client:
            welcome = await client.get(nginx.url + "/")
            flagged_room = await client.get(nginx.url + "/standup?oidc=1")
            jaas_jwt = await client.get(nginx.url + "/jaas-jwt")
            tenant = await client.get(nginx.url + "/vpaas-magic-cookie-1fc5/standup")
            room = await client.get(nginx.url + "/standup")
    for page in (welcome, flagged_room, tenant):
        assert page.status_code == 200
        assert 'const jaasJwt = "JAAS-JWT-FROM-JITSI";' in page.text, page.text
    assert jaas_jwt.text == '"JAAS-JWT-FROM-JITSI"'
    # A room without token or flag is still the gateway's.
    assert room.status_code == 302
    assert room.headers["location"].endswith("/oidc/auth?room=standup")


class SsiBait(RequestHandler):
    """Stands in for the gateway: a page with SSI directives nginx must not run."""

    def get(self) -> None:
        self.write('<p><!--# echo var="host" --></p><!--#include virtual="/config.js" -->')


async def test_gateway_pages_are_not_processed_as_ssi() -> None:
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    server = HTTPServer(Application([(r"/oidc/.*", SsiBait)]))
    server.add_sockets(sockets)
    try:
        with plain_nginx(sockets[0].getsockname()[1]) as nginx:
            async with httpx.AsyncClient() as client:
                page = await client.get(nginx.url + "/oidc/anything")
    finally:
        server.stop()
    assert '<!--# echo var="host" -->' in page.text
    assert "JITSI-CONFIG" not in page.text and "127.0.0.1" not in page.text


SECRET_CODE = "c0de-SECRET-4f1a"
SECRET_STATE = "st4te-SECRET-9b2e"


@pytest.mark.parametrize("shipped", [True, False], ids=["shipped_snippet", "without_error_log"])
async def test_code_and_state_stay_out_of_nginx_logs_when_the_gateway_is_down(
    shipped: bool,
) -> None:
    """The shipped snippet keeps the callback's request line out of the error log; the
    control row (the same snippet without its error_log line) shows what it prevents."""
    text = SNIPPET.read_text()
    if not shipped:
        text = "\n".join(line for line in text.splitlines() if "error_log" not in line)
    with plain_nginx(dead_port(), snippet=text) as nginx:
        async with httpx.AsyncClient() as client:
            response = await client.get(
                f"{nginx.url}/oidc/redirect/corp?code={SECRET_CODE}&state={SECRET_STATE}"
            )
            room = await client.get(f"{nginx.url}/standup?jwt=abc.def.ghi&lang=de")
        assert response.status_code == 502
        assert room.status_code == 200
        nginx.stop()  # flush
        error_log = nginx.error_log()
        access_log = (nginx.prefix / "access.log").read_text()
    leaked = SECRET_CODE in error_log or SECRET_STATE in error_log
    assert leaked is not shipped, error_log
    assert SECRET_CODE not in access_log and SECRET_STATE not in access_log
    # Jitsi's own redaction: the room request is logged without its query string.
    assert '"GET /standup?[params_redacted]" 200' in access_log
    assert "abc.def.ghi" not in access_log


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


async def test_http_1_0_without_host_gets_a_relative_location() -> None:
    """Without a Host header nginx would build the entry rule's Location from the server's
    address (``http://127.0.0.1:<port>/oidc/auth...``): a relative one names no host."""
    with plain_nginx(dead_port()) as nginx:
        answer = raw_request(nginx.port, b"GET /standup HTTP/1.0\r\n\r\n")
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 302"), head
    assert "Location: /oidc/auth?room=standup" in head.split("\r\n"), head
