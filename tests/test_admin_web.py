"""``/admin/``: the audit log's web page, in Chromium and over plain HTTP.

The data set is the API tests' (``tests/support/auditdata.py``): 300 events over two IdPs
plus 20 at one and the same millisecond, so pages must split ties exactly.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import re
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from tests.support import auditdata
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

TOKEN = "admin-web-token-for-tests-0123456789"
OTHER = "second-admin-token-abcdefghijklmnop"
N = 300
TIES = list(auditdata.documents(20, auditdata.START + timedelta(hours=1), timedelta(0), N))
DATA = list(auditdata.documents(N)) + TIES
CSP = (
    "default-src 'none'; style-src 'nonce-{}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def admin_settings(name: str = "ops", token: str = TOKEN) -> dict[str, Any]:
    return {"tokens": [{"name": name, "sha256": digest(token)}]}


@pytest_asyncio.fixture
async def admin_gw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    async with start_gateway(op, mongo_uri, admin=admin_settings()) as gw:
        await auditdata.load(gw.store.audit.collection, [dict(d) for d in DATA])
        yield gw


def newest_first(docs: list[dict]) -> list[dict]:
    return sorted(docs, key=lambda d: (d["time"], d["_id"]), reverse=True)


def form_token(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


async def sign_in(
    client: httpx.AsyncClient, gw: GatewayUnderTest, token: str = TOKEN, **headers: str
) -> httpx.Response:
    """The form as a browser fills it: GET the page (form cookie + token), POST the token."""
    page = await client.get(f"{gw.url}/admin/")
    assert page.status_code == 200
    data = {"token": token, "csrf": form_token(page.text)}
    return await client.post(f"{gw.url}/admin/login", data=data, headers=headers)


async def admin_events(gw: GatewayUnderTest, **match: Any) -> list[dict]:
    found = gw.store.audit.collection.find({"event": "admin_query", **match}, sort=[("time", 1)])
    return [e async for e in found]


def set_cookies(response: httpx.Response, name: str) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]


# ---- in Chromium ---------------------------------------------------------------------------


@pytest.mark.browser
async def test_operator_journey_in_chromium(admin_gw: GatewayUnderTest, chromium: Browser) -> None:
    """Sign in by keyboard, filter, page to the end, export, people, chart; only our origin."""
    gw = admin_gw
    context = await chromium.new_context(accept_downloads=True)
    page = await context.new_page()
    requested: list[str] = []
    violations: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("console", lambda m: violations.append(m.text) if "Security Policy" in m.text else None)

    response = await page.goto(f"{gw.url}/admin/")
    assert response is not None and response.status == 200
    nonce = re.search(r"'nonce-([^']+)'", response.headers["content-security-policy"])
    assert nonce and response.headers["content-security-policy"] == CSP.format(nonce.group(1))
    await page.keyboard.press("Tab")  # the token field is the first stop
    await page.keyboard.type(TOKEN)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert page.url == f"{gw.url}/admin/"
    assert await page.inner_text("#admin-name") == "ops"
    assert await page.locator("#events tbody tr").count() == 50
    # the nonce'd style sheet applies (the header is dark), and nothing was blocked
    background = await page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor")
    assert background == "rgb(29, 31, 35)"

    cookies = {c["name"]: c for c in await context.cookies()}
    session = cookies["jog_admin"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert session["path"] == "/admin/" and not session["secure"]  # cookies.secure is off
    assert TOKEN not in session["value"] and digest(TOKEN) not in session["value"]

    # filter: only failures, 25 a page; then every page to the end
    await page.fill("#f-event", "login_failed")
    await page.select_option("#f-limit", "25")
    async with page.expect_navigation():
        await page.click("#apply")
    expected = [d["_id"] for d in newest_first(DATA) if d["event"] == "login_failed"]
    assert len(expected) > 50
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        ids = await page.locator("#events tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.id)"
        )
        events = await page.locator("#events td[data-col=event]").all_inner_texts()
        assert set(events) == {"login_failed"}
        seen += ids
        if await page.locator("#next-page").count() == 0:
            break
        async with page.expect_navigation():
            await page.click("#next-page")
    assert seen == expected
    assert pages == -(-len(expected) // 25)
    assert await page.locator("#last-page").count() == 1

    # export: the filtered range as CSV, oldest first, through the session cookie
    async with page.expect_download() as download_info:
        await page.click("#export-csv")
    download = await download_info.value
    text = await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["_id"] for r in rows] == list(reversed(expected))
    [export_event] = await admin_events(gw, path="/admin/audit")
    assert export_event["admin"] == "ops" and export_event["via"] == "web"
    assert export_event["format"] == "csv" and export_event["count"] == len(expected)

    # people: the distinct persons of the successful sign-ins
    await page.goto(f"{gw.url}/admin/?event=login_succeeded")
    async with page.expect_navigation():
        await page.click("#view-people")
    persons = {(d["idp"], d["subject"]) for d in DATA if d["event"] == "login_succeeded"}
    shown = await page.locator("#people tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.idp, r.dataset.subject])"
    )
    assert {tuple(p) for p in shown} == persons and len(shown) == len(persons)
    await page.fill("#f-idp", "corp")  # the form keeps the people view
    async with page.expect_navigation():
        await page.click("#apply")
    idps = await page.locator("#people tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.idp)"
    )
    assert idps and set(idps) == {"corp"}
    assert len(idps) == len({p for p in persons if p[0] == "corp"})

    # chart: one series per IdP, sign-ins and failures, with its table
    svg = page.locator("svg#chart")
    assert await svg.get_attribute("role") == "img"
    assert await svg.get_attribute("aria-labelledby") == "chart-title chart-desc"
    await page.goto(f"{gw.url}/admin/")
    series = await page.locator("svg#chart g.series").evaluate_all(
        "gs => gs.map(g => [g.dataset.idp, g.querySelectorAll('polyline').length])"
    )
    assert sorted(series) == [["corp", 2], ["social", 2]]
    cells = await page.locator("#chart-table tbody td").all_text_contents()
    sign_ins_and_failures = sum(
        1 for d in DATA if d["event"] in ("login_succeeded", "login_failed")
    )
    assert sum(int(c) for c in cells) == sign_ins_and_failures

    assert requested and all(url.startswith(f"{gw.url}/") for url in requested), requested
    assert violations == []

    # sign out: the cookie goes, the export link no longer works
    async with page.expect_navigation():
        await page.click("#sign-out")
    await page.wait_for_selector("#token")
    assert "jog_admin" not in {c["name"] for c in await context.cookies()}
    assert (await context.request.get(f"{gw.url}/admin/audit?format=csv")).status == 401
    await context.close()


@pytest.mark.browser
async def test_wrong_token_is_refused_in_chromium(
    admin_gw: GatewayUnderTest, chromium: Browser
) -> None:
    context = await chromium.new_context()
    page = await context.new_page()
    await page.goto(f"{admin_gw.url}/admin/")
    await page.fill("#token", TOKEN + "x")
    async with page.expect_response(f"{admin_gw.url}/admin/login") as answer:
        await page.click("#sign-in")
    assert (await answer.value).status == 401
    assert await page.get_attribute("#token", "aria-invalid") == "true"
    assert "not valid" in await page.inner_text("#login-error")
    assert "jog_admin" not in {c["name"] for c in await context.cookies()}
    [event] = await admin_events(admin_gw)
    assert event["outcome"] == "failure" and event["reason"] == "admin_unauthorized"
    assert "admin" not in event
    await context.close()


class AttackHandler(RequestHandler):
    """A page on another site with a form that posts a (valid) token to the gateway."""

    def initialize(self, target: str) -> None:
        self.target = target

    def get(self) -> None:
        self.write(
            f'<form method="post" action="{self.target}"><input name="token" value="{TOKEN}">'
            '<input name="csrf" value="guess"><button id="go">go</button></form>'
        )


@pytest.mark.browser
async def test_sign_in_post_from_another_site_is_refused_in_chromium(
    admin_gw: GatewayUnderTest, chromium: Browser
) -> None:
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    attack_url = f"http://localhost:{sockets[0].getsockname()[1]}/"
    target = f"{admin_gw.url}/admin/login"
    attacker = HTTPServer(Application([(r"/", AttackHandler, {"target": target})]))
    attacker.add_sockets(sockets)
    try:
        context = await chromium.new_context()
        page = await context.new_page()
        await page.goto(f"{admin_gw.url}/admin/")  # the victim has the form cookie
        await page.goto(attack_url)
        async with page.expect_response(target) as answer:
            await page.click("#go")
        assert (await answer.value).status == 403
        assert "jog_admin" not in {c["name"] for c in await context.cookies()}
        [event] = await admin_events(admin_gw)
        assert event["reason"] == "cross_site_request"
        await context.close()
    finally:
        attacker.stop()
        await attacker.close_all_connections()


# ---- over HTTP -----------------------------------------------------------------------------


async def test_sign_in_sets_a_strict_session_cookie_naming_the_token(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    response = await sign_in(browser, admin_gw)
    assert response.status_code == 303 and response.headers["location"] == "/admin/"
    [cookie] = set_cookies(response, "jog_admin")
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "secure" not in attributes  # tests run with cookies.secure off
    assert "Path=/admin/" in cookie and "SameSite=Strict" in cookie and "Max-Age=28800" in cookie
    assert TOKEN not in cookie and digest(TOKEN) not in cookie
    page = await browser.get(f"{admin_gw.url}/admin/")
    assert page.status_code == 200 and 'id="events"' in page.text
    login, view = await admin_events(admin_gw)
    assert (login["path"], login["outcome"], login["admin"]) == ("/admin/login", "success", "ops")
    assert (view["path"], view["admin"], view["via"], view["count"]) == (
        "/admin/",
        "ops",
        "web",
        50,
    )


async def test_secure_cookie_when_cookies_are_secure(op: TestOP, mongo_uri: str) -> None:
    async with start_gateway(op, mongo_uri, admin=admin_settings(), cookies={"secure": True}) as gw:
        async with httpx.AsyncClient() as client:
            page = await client.get(f"{gw.url}/admin/")
            [form_cookie] = set_cookies(page, "jog_admin_form")
            assert "Secure" in form_cookie and "SameSite=Strict" in form_cookie
            data = {"token": TOKEN, "csrf": form_token(page.text)}
            cookie_header = form_cookie.split(";")[0]  # httpx keeps no Secure cookie on http
            response = await client.post(
                f"{gw.url}/admin/login", data=data, headers={"Cookie": cookie_header}
            )
            [cookie] = set_cookies(response, "jog_admin")
            assert "Secure" in cookie


@pytest.mark.parametrize("token", ["wrong-token", ""], ids=["wrong", "missing"])
async def test_wrong_or_missing_token_is_401_without_a_session(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient, token: str
) -> None:
    response = await sign_in(browser, admin_gw, token)
    assert response.status_code == 401
    assert set_cookies(response, "jog_admin") == []
    assert 'id="login-error"' in response.text and "csrf" in response.text  # try again
    [event] = await admin_events(admin_gw)
    assert event["reason"] == "admin_unauthorized"
    assert event["detail"] == ("invalid token" if token else "missing token")
    assert 'id="token"' in (await browser.get(f"{admin_gw.url}/admin/")).text  # no session


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Origin": "http://evil.example"}, "cross_site_request"),
        ({"Sec-Fetch-Site": "cross-site"}, "cross_site_request"),
        ({"Sec-Fetch-Site": "same-site"}, "cross_site_request"),
    ],
    ids=["origin", "fetch-site-cross", "fetch-site-same-site"],
)
async def test_sign_in_post_from_elsewhere_is_refused(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient, headers: dict, reason: str
) -> None:
    response = await sign_in(browser, admin_gw, **headers)
    assert response.status_code == 403
    assert set_cookies(response, "jog_admin") == []
    [event] = await admin_events(admin_gw)
    assert event["reason"] == reason


async def test_sign_in_needs_the_form_token(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    page = await browser.get(f"{admin_gw.url}/admin/")
    for data in ({"token": TOKEN}, {"token": TOKEN, "csrf": form_token(page.text) + "0"}):
        response = await browser.post(f"{admin_gw.url}/admin/login", data=data)
        assert response.status_code == 403
        assert set_cookies(response, "jog_admin") == []
    browser.cookies.clear()  # a page that never showed the form has no form cookie
    response = await browser.post(
        f"{admin_gw.url}/admin/login", data={"token": TOKEN, "csrf": form_token(page.text)}
    )
    assert response.status_code == 403
    reasons = [e["reason"] for e in await admin_events(admin_gw)]
    assert reasons == ["csrf_token_invalid"] * 3


async def test_origin_naming_the_addressed_host_is_accepted(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    """Reached on the gateway's own port (not at public_url): the Host decides."""
    host = "gateway-host.internal:8000"
    page = await browser.get(f"{admin_gw.url}/admin/", headers={"Host": host})
    data = {"token": TOKEN, "csrf": form_token(page.text)}
    url = f"{admin_gw.url}/admin/login"
    other = await browser.post(url, data=data, headers={"Origin": f"http://{host}"})
    assert other.status_code == 403  # the Origin names another host than the addressed one
    ok = await browser.post(url, data=data, headers={"Host": host, "Origin": f"http://{host}"})
    assert ok.status_code == 303


async def test_session_cookie_reads_the_audit_endpoints_only(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, admin_gw)
    url = admin_gw.url
    assert (await browser.get(f"{url}/admin/audit", params={"limit": "3"})).status_code == 200
    export = await browser.get(f"{url}/admin/audit", params={"format": "ndjson", "idp": "corp"})
    assert export.status_code == 200
    assert len(export.text.splitlines()) == sum(1 for d in DATA if d["idp"] == "corp")
    assert (await browser.get(f"{url}/admin/audit/stats")).status_code == 200
    assert (await browser.get(f"{url}/admin/audit/people")).status_code == 200
    # not the sessions API, and never a write
    assert (
        await browser.get(f"{url}/admin/sessions", params={"email": "a@b.c"})
    ).status_code == 401
    deleted = await browser.delete(f"{url}/admin/sessions", params={"email": "a@b.c"})
    assert deleted.status_code == 401
    # a wrong bearer header is not rescued by the cookie
    wrong = await browser.get(f"{url}/admin/audit", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    reads = [(e["path"], e["via"]) for e in await admin_events(admin_gw, outcome="success")]
    assert reads == [
        ("/admin/login", "web"),
        ("/admin/audit", "web"),
        ("/admin/audit", "web"),
        ("/admin/audit/stats", "web"),
        ("/admin/audit/people", "web"),
    ]


async def test_session_expires(admin_gw: GatewayUnderTest, browser: httpx.AsyncClient) -> None:
    await sign_in(browser, admin_gw)
    admin_gw.clock.offset = 8 * 3600 - 5
    assert 'id="events"' in (await browser.get(f"{admin_gw.url}/admin/")).text
    admin_gw.clock.offset = 8 * 3600 + 1
    assert 'id="token"' in (await browser.get(f"{admin_gw.url}/admin/")).text
    assert (await browser.get(f"{admin_gw.url}/admin/audit")).status_code == 401


@pytest.mark.parametrize(
    ("admin", "kept"),
    [
        (admin_settings("ops", TOKEN), True),
        (admin_settings("ops", OTHER), False),  # rotated: same name, another token
        (admin_settings("other", TOKEN), False),  # renamed (or removed)
    ],
    ids=["unchanged", "rotated", "renamed"],
)
async def test_session_ends_when_its_token_is_rotated_or_removed(
    admin_gw: GatewayUnderTest, op: TestOP, mongo_uri: str, admin: dict, kept: bool
) -> None:
    async with httpx.AsyncClient() as client:
        await sign_in(client, admin_gw)
        session = client.cookies["jog_admin"]
    secret = admin_gw.settings.cookies.secret.get_secret_value()
    async with start_gateway(op, mongo_uri, admin=admin, cookies={"secret": secret}) as restarted:
        async with httpx.AsyncClient(cookies={"jog_admin": session}) as client:
            page = await client.get(f"{restarted.url}/admin/")
            assert ('id="events"' in page.text) is kept
            assert ('id="token"' in page.text) is not kept


async def test_tampered_cookie_is_ignored(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, admin_gw)
    value = browser.cookies["jog_admin"]
    browser.cookies.clear()
    browser.cookies.set("jog_admin", value[:-2] + ("00" if value[-2:] != "00" else "11"))
    assert 'id="token"' in (await browser.get(f"{admin_gw.url}/admin/")).text


async def test_logout_needs_its_form_token_and_clears_the_cookie(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, admin_gw)
    page = await browser.get(f"{admin_gw.url}/admin/")
    refused = await browser.post(f"{admin_gw.url}/admin/logout", data={"csrf": "nope"})
    assert refused.status_code == 403 and set_cookies(refused, "jog_admin") == []
    cross = await browser.post(
        f"{admin_gw.url}/admin/logout",
        data={"csrf": form_token(page.text)},
        headers={"Origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    response = await browser.post(
        f"{admin_gw.url}/admin/logout", data={"csrf": form_token(page.text)}
    )
    assert response.status_code == 303
    [cleared] = set_cookies(response, "jog_admin")
    value, *attributes = [a.strip() for a in cleared.split(";")]
    assert value in ('jog_admin=""', "jog_admin=") and "Path=/admin/" in attributes
    assert "SameSite=Strict" in attributes
    assert any(a.lower().startswith("expires=") for a in attributes)  # in the past
    assert 'id="token"' in (await browser.get(f"{admin_gw.url}/admin/")).text


async def test_pages_carry_a_csp_that_allows_nothing_else(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    login = await browser.get(f"{admin_gw.url}/admin/")
    await sign_in(browser, admin_gw)
    page = await browser.get(f"{admin_gw.url}/admin/")
    nonces = []
    for response in (login, page):
        policy = response.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", policy)
        assert nonce and policy == CSP.format(nonce.group(1))
        assert f'<style nonce="{nonce.group(1)}">' in response.text
        assert "<script" not in response.text and " style=" not in response.text
        assert not re.search(r'(src|href|action)="(https?:)?//', response.text)
        nonces.append(nonce.group(1))
    assert nonces[0] != nonces[1]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


async def test_bad_filter_is_a_400_page_naming_the_field(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, admin_gw)
    response = await browser.get(f"{admin_gw.url}/admin/", params={"event": "nope", "room": ""})
    assert response.status_code == 400
    assert 'role="alert"' in response.text and "event:" in response.text
    assert re.search(r'id="f-event"[^>]*value="nope"[^>]*aria-invalid="true"', response.text)
    people_paged = await browser.get(
        f"{admin_gw.url}/admin/", params={"view": "people", "cursor": "x"}
    )
    assert people_paged.status_code == 400
    [*_, event] = await admin_events(admin_gw)
    assert event["reason"] == "bad_request" and event["admin"] == "ops"


async def test_event_text_is_escaped(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    [doc] = auditdata.documents(1, auditdata.START + timedelta(days=400), first=1)
    doc["detail"] = '<img src="x">"quoted"'
    await admin_gw.store.audit.collection.insert_one(doc)
    await sign_in(browser, admin_gw)
    page = await browser.get(f"{admin_gw.url}/admin/", params={"event": "login_failed"})
    assert "&lt;img src=&quot;x&quot;&gt;" in page.text and '<img src="x">' not in page.text


async def test_chart_counts_follow_the_filters(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    await sign_in(browser, admin_gw)
    only_failures = await browser.get(f"{admin_gw.url}/admin/", params={"outcome": "failure"})
    assert 'class="series" data-idp="corp"' in only_failures.text
    assert 'class="ok"' in only_failures.text  # the sign-in line is there, flat at zero
    token_events = await browser.get(f"{admin_gw.url}/admin/", params={"event": "token_minted"})
    assert 'id="chart-empty"' in token_events.text and "<svg" not in token_events.text


async def test_head_answers_without_a_query_or_an_audit_event(
    admin_gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    """Probes send HEAD: 200 with the page's headers, signed in or not; nothing is queried,
    audited or set (it was a 405)."""
    before = len(await admin_events(admin_gw))
    anonymous = await browser.head(f"{admin_gw.url}/admin/")
    await sign_in(browser, admin_gw)
    after_login = len(await admin_events(admin_gw))
    signed_in = await browser.head(f"{admin_gw.url}/admin/")
    for response in (anonymous, signed_in):
        assert response.status_code == 200 and response.content == b""
        assert response.headers["Content-Type"].startswith("text/html")
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert "set-cookie" not in response.headers
    assert after_login == before + 1  # the sign-in only
    assert len(await admin_events(admin_gw)) == after_login
