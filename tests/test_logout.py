"""Logout against the real test OP: RP-initiated logout, back-channel logout, and attacks.

Valid logout tokens come from the OP itself (it sends one when the person signs out there);
invalid ones are either signed by the OP's own current key through its test-only
``/__test/sign`` endpoint (so only the named claim is wrong) or by a key the OP never
published.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.oidc.logout_token import LOGOUT_EVENT
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@pytest_asyncio.fixture
async def lgw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    """A gateway whose OP client has logout URIs registered."""
    async with start_gateway(op, mongo_uri, logout_client=True) as running:
        yield running


async def session_docs(gw: GatewayUnderTest) -> list[dict[str, Any]]:
    return [d async for d in gw.store.sessions.collection.find({})]


async def events(gw: GatewayUnderTest, name: str) -> list[dict[str, Any]]:
    return [d async for d in gw.store.audit.collection.find({"event": name}, sort=[("time", 1)])]


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def signed_in(gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient) -> None:
    response = await gw.sign_in(browser, op)
    assert response.status_code == 302 and "jwt=" in response.headers["location"]


async def csrf_from_page(gw: GatewayUnderTest, browser: httpx.AsyncClient) -> str:
    page = await browser.get(f"{gw.url}/oidc/logout")
    assert page.status_code == 200
    match = CSRF_RE.search(page.text)
    assert match, page.text
    return match.group(1)


async def tokenize_needs_login(gw: GatewayUnderTest, browser: httpx.AsyncClient) -> bool:
    response = await browser.get(f"{gw.url}/oidc/tokenize", params={"room": "standup"})
    return response.status_code == 302 and response.headers["location"].startswith("/oidc/auth")


# ---- RP-initiated logout --------------------------------------------------------------------


async def test_rp_initiated_logout_reaches_op_with_id_token_hint(
    lgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    await signed_in(lgw, op, browser)
    [doc] = await session_docs(lgw)
    csrf = await csrf_from_page(lgw, browser)
    assert len(await session_docs(lgw)) == 1  # GET only asks; it ends nothing

    response = await browser.post(
        f"{lgw.url}/oidc/logout", data={"csrf": csrf}, headers={"Origin": lgw.url}
    )
    assert response.status_code == 303
    location = response.headers["location"]
    end_session = (await op.discovery())["end_session_endpoint"]
    assert location.startswith(end_session + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["id_token_hint"] == [doc["id_token"]]
    assert query["post_logout_redirect_uri"] == [f"{lgw.url}/oidc/logged-out"]
    assert query["client_id"] == [lgw.client["client_id"]]
    assert await session_docs(lgw) == []
    assert await tokenize_needs_login(lgw, browser)

    # The OP accepts the hint, signs the person out and sends them back to us.
    landed = await op.logout_over_http(browser, location)
    assert landed.startswith(f"{lgw.url}/oidc/logged-out")
    assert parse_qs(urlsplit(landed).query)["state"] == query["state"]
    page = await browser.get(landed)
    assert page.status_code == 200 and 'id="signed-out"' in page.text
    assert 'id="idp-ended"' in page.text and "signed out at Test OP" in page.text
    # Without the state the IdP returned, the page does not claim the IdP session ended.
    bare = await browser.get(f"{lgw.url}/oidc/logged-out")
    assert 'id="signed-out"' in bare.text and 'id="idp-ended"' not in bare.text
    forged = await browser.get(f"{lgw.url}/oidc/logged-out", params={"state": "testop.00"})
    assert 'id="idp-ended"' not in forged.text

    [event] = await events(lgw, "logout")
    assert event["outcome"] == "success" and event["subject"] == "alice-sub"
    assert event["idp_logout"] is True
    assert event["request_id"] == response.headers["X-Request-Id"]
    # The OP also told us over the back channel; nothing was left to end.
    await wait_for(lambda: _has_backchannel(lgw))
    [bcl] = await events(lgw, "backchannel_logout")
    assert bcl["outcome"] == "success" and bcl["sessions_ended"] == 0


async def _has_backchannel(gw: GatewayUnderTest) -> bool:
    return bool(await events(gw, "backchannel_logout"))


async def test_logout_without_idp_logout_stays_here(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    async with start_gateway(op, mongo_uri, logout={"idp_logout": False}) as gw:
        await signed_in(gw, op, browser)
        csrf = await csrf_from_page(gw, browser)
        response = await browser.post(f"{gw.url}/oidc/logout", data={"csrf": csrf})
        assert response.status_code == 303
        assert response.headers["location"] == "/oidc/logged-out?idp=testop&kept=off"
        assert await session_docs(gw) == []
        # The page says that the IdP session may still be alive, and why.
        page = await browser.get(urljoin(gw.url, response.headers["location"]))
        assert 'id="idp-kept"' in page.text
        assert "may still be signed in at Test OP" in page.text
        assert "set up not to sign you out" in page.text


async def test_logout_when_the_idp_cannot_end_its_session(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    """No id_token kept (or no end_session_endpoint): said so, not claimed otherwise."""
    async with start_gateway(op, mongo_uri) as gw:
        await signed_in(gw, op, browser)
        await gw.store.sessions.collection.update_many({}, {"$unset": {"id_token": ""}})
        csrf = await csrf_from_page(gw, browser)
        response = await browser.post(f"{gw.url}/oidc/logout", data={"csrf": csrf})
        assert response.headers["location"] == "/oidc/logged-out?idp=testop&kept=unavailable"
        page = await browser.get(urljoin(gw.url, response.headers["location"]))
        assert "offers no way for this site to sign you out" in page.text


async def test_logout_pages_answer_head_and_use_same_origin_referrers(
    lgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    await signed_in(lgw, op, browser)
    # /oidc/logged-out with a live session: not this browser's own logout, so the
    # confirmation page instead (the cookie is left alone).
    for path, status in (("/oidc/logout", 200), ("/oidc/logged-out", 303)):
        head = await browser.head(f"{lgw.url}{path}")
        assert head.status_code == status, path
        assert head.content == b""
        assert head.headers["Referrer-Policy"] == "same-origin"
    # Sign-in pages keep no-referrer: their URLs carry codes, state or e-mail addresses.
    auth = await browser.get(f"{lgw.url}/oidc/auth", params={"room": "standup"})
    assert auth.headers["Referrer-Policy"] == "no-referrer"
    assert len(await session_docs(lgw)) == 1  # HEAD ended nothing


@pytest.mark.parametrize(
    ("case", "headers", "use_token"),
    [
        ("no_token", {"Origin": "SELF"}, False),
        ("wrong_token", {"Origin": "SELF"}, "0" * 64),
        ("foreign_origin", {"Origin": "https://evil.example"}, True),
        ("null_origin_without_token", {"Origin": "null"}, False),
        ("null_origin_wrong_token", {"Origin": "null"}, "1" * 64),
        ("cross_site_fetch", {"Sec-Fetch-Site": "cross-site"}, True),
        ("same_site_fetch", {"Sec-Fetch-Site": "same-site"}, True),
        ("null_origin_cross_site", {"Origin": "null", "Sec-Fetch-Site": "cross-site"}, True),
    ],
)
async def test_logout_post_refuses_cross_site_requests(
    lgw: GatewayUnderTest,
    op: TestOP,
    browser: httpx.AsyncClient,
    case: str,
    headers: dict[str, str],
    use_token: bool | str,
) -> None:
    await signed_in(lgw, op, browser)
    csrf = await csrf_from_page(lgw, browser)
    data = {}
    if use_token is True:
        data["csrf"] = csrf
    elif use_token:
        data["csrf"] = use_token
    headers = {k: (lgw.url if v == "SELF" else v) for k, v in headers.items()}
    response = await browser.post(f"{lgw.url}/oidc/logout", data=data, headers=headers)
    assert response.status_code == 403, case
    assert len(await session_docs(lgw)) == 1
    assert not await tokenize_needs_login(lgw, browser)
    [event] = await events(lgw, "logout")
    assert event["outcome"] == "failure"
    assert event["reason"] in {"csrf_token_invalid", "cross_site_request"}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            {"Origin": "null", "Sec-Fetch-Site": "same-origin"}, id="chromium_no_referrer"
        ),
        pytest.param({"Origin": "null"}, id="null_origin_no_fetch_metadata"),
        pytest.param({"Origin": "SELF", "Sec-Fetch-Site": "same-origin"}, id="same_origin"),
        pytest.param({}, id="no_browser_headers"),
    ],
)
async def test_logout_post_from_our_own_form_is_accepted(
    lgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """What a browser sends for the confirmation form, including ``Origin: null``."""
    await signed_in(lgw, op, browser)
    csrf = await csrf_from_page(lgw, browser)
    headers = {k: (lgw.url if v == "SELF" else v) for k, v in headers.items()}
    response = await browser.post(f"{lgw.url}/oidc/logout", data={"csrf": csrf}, headers=headers)
    assert response.status_code == 303
    assert await session_docs(lgw) == []


async def test_csrf_token_is_bound_to_the_session(
    lgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    """A token from another person's session does not sign this one out."""
    await signed_in(lgw, op, browser)
    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as attacker:
        await signed_in(lgw, op, attacker)
        attacker_csrf = await csrf_from_page(lgw, attacker)
    response = await browser.post(f"{lgw.url}/oidc/logout", data={"csrf": attacker_csrf})
    assert response.status_code == 403
    assert len(await session_docs(lgw)) == 2


# ---- back-channel logout ----------------------------------------------------------------------


async def test_op_logout_ends_gateway_session_over_back_channel(
    lgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    await signed_in(lgw, op, browser)
    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as bob:
        await lgw.sign_in(bob, op, username="bob", password="bob-pw")
    docs = await session_docs(lgw)
    alice = next(d for d in docs if d["identity"]["subject"] == "alice-sub")
    assert alice["idp_sid"] and alice["idp_sub"] == "alice-sub"

    # Alice signs out at the OP itself (not through the gateway).
    end_session = (await op.discovery())["end_session_endpoint"]
    await op.logout_over_http(
        browser, f"{end_session}?{urlencode({'id_token_hint': alice['id_token']})}"
    )

    async def alice_gone() -> bool:
        return all(d["identity"]["subject"] != "alice-sub" for d in await session_docs(lgw))

    await wait_for(alice_gone)
    assert [d["identity"]["subject"] for d in await session_docs(lgw)] == ["bob-sub"]
    assert await tokenize_needs_login(lgw, browser)
    [event] = await events(lgw, "backchannel_logout")
    assert event["outcome"] == "success" and event["sessions_ended"] == 1
    assert event["idp"] == "testop" and event["subject"] == "alice-sub"
    assert "sid" not in event and alice["idp_sid"] not in str(event)


def base_claims(gw: GatewayUnderTest, op: TestOP, sid: str) -> dict[str, Any]:
    return {
        "iss": op.issuer,
        "aud": gw.client["client_id"],
        "iat": int(time.time()),
        "jti": secrets.token_hex(8),
        "sid": sid,
        "sub": "alice-sub",
        "events": {LOGOUT_EVENT: {}},
    }


def foreign_key_token(claims: dict[str, Any], kid: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "logout+jwt"})


INVALID = [
    # (id, claim changes, header overrides)
    ("wrong_aud", {"aud": "someone-else"}, {}),
    ("wrong_iss", {"iss": "http://127.0.0.1:9/other"}, {}),
    ("nonce_present", {"nonce": "n-0S6_WzA2Mj"}, {}),
    ("iat_expired", {"iat": int(time.time()) - 3600}, {}),
    ("iat_in_future", {"iat": int(time.time()) + 3600}, {}),
    ("iat_missing", {"iat": None}, {}),
    ("events_missing", {"events": None}, {}),
    ("events_wrong_event", {"events": {"http://schemas.openid.net/event/other": {}}}, {}),
    ("events_as_list", {"events": [LOGOUT_EVENT]}, {}),
    ("no_sid_no_sub", {"sid": None, "sub": None}, {}),
    ("jti_missing", {"jti": None}, {}),
    ("typ_access_token", {}, {"typ": "at+jwt"}),
    ("alg_not_allowed", {}, {"alg": "RS512"}),
]


@pytest.mark.parametrize(("case", "changes", "header"), INVALID, ids=[c[0] for c in INVALID])
async def test_backchannel_rejects_invalid_op_signed_tokens(
    lgw: GatewayUnderTest,
    op: TestOP,
    browser: httpx.AsyncClient,
    case: str,
    changes: dict[str, Any],
    header: dict[str, Any],
) -> None:
    await signed_in(lgw, op, browser)
    [doc] = await session_docs(lgw)
    claims = base_claims(lgw, op, doc["idp_sid"])
    for key, value in changes.items():
        if value is None:
            claims.pop(key)
        else:
            claims[key] = value
    token = await op.sign(claims, **header)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{lgw.url}/oidc/backchannel-logout", data={"logout_token": token}
        )
    assert response.status_code == 400, case
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json()["error"] == "invalid_request"
    assert len(await session_docs(lgw)) == 1
    [event] = await events(lgw, "backchannel_logout")
    assert event["outcome"] == "failure" and event["reason"] == "logout_token_invalid"
    assert token not in str(event)


async def test_backchannel_accepts_a_crafted_valid_token(
    lgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    """The control row of the table above: the same construction, nothing wrong."""
    await signed_in(lgw, op, browser)
    [doc] = await session_docs(lgw)
    token = await op.sign(base_claims(lgw, op, doc["idp_sid"]))
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{lgw.url}/oidc/backchannel-logout", data={"logout_token": token}
        )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert await session_docs(lgw) == []


async def test_backchannel_replayed_token_is_refused(
    lgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    """A captured logout token cannot end sessions created after it."""
    claims = base_claims(lgw, op, "sid-before-login")
    claims.pop("sid")
    token = await op.sign(claims)
    async with httpx.AsyncClient() as client:
        first = await client.post(
            f"{lgw.url}/oidc/backchannel-logout", data={"logout_token": token}
        )
        assert first.status_code == 200
        await signed_in(lgw, op, browser)
        again = await client.post(
            f"{lgw.url}/oidc/backchannel-logout", data={"logout_token": token}
        )
    assert again.status_code == 400
    assert len(await session_docs(lgw)) == 1
    failure = (await events(lgw, "backchannel_logout"))[-1]
    assert failure["outcome"] == "failure" and failure["detail"].startswith("jti:")


async def test_backchannel_picks_the_idp_named_in_aud(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    """Two IdP entries on one issuer (two clients of one realm): the token's aud decides."""
    more = [(op, {"id": "second", "display_name": "Second client"})]
    async with start_gateway(op, mongo_uri, more_idps=more) as gw:
        await gw.sign_in(browser, op, idp="second")
        [doc] = await session_docs(gw)
        second = gw.settings.idp("second")
        assert second is not None and doc["identity"]["idp"] == "second"
        claims = base_claims(gw, op, doc["idp_sid"]) | {"aud": second.client_id}
        token = await op.sign(claims)
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{gw.url}/oidc/backchannel-logout", data={"logout_token": token}
            )
        assert response.status_code == 200, response.text
        assert await session_docs(gw) == []


async def test_backchannel_sub_only_ends_every_session_of_that_person(
    lgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    await signed_in(lgw, op, browser)
    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as laptop:
        await signed_in(lgw, op, laptop)
    claims = base_claims(lgw, op, "unused")
    claims.pop("sid")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{lgw.url}/oidc/backchannel-logout",
            data={"logout_token": await op.sign(claims)},
        )
    assert response.status_code == 200
    assert await session_docs(lgw) == []


@pytest.mark.parametrize("case", ["foreign_key", "alg_none", "hs256_with_client_secret"])
async def test_backchannel_rejects_tokens_not_signed_by_the_op(
    lgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient, case: str
) -> None:
    await signed_in(lgw, op, browser)
    [doc] = await session_docs(lgw)
    claims = base_claims(lgw, op, doc["idp_sid"])
    kid = jwt.get_unverified_header(await op.sign(claims))["kid"]
    if case == "foreign_key":
        token = foreign_key_token(claims, kid)
    elif case == "alg_none":
        token = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    else:
        secret = lgw.client["client_secret"]
        token = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{lgw.url}/oidc/backchannel-logout", data={"logout_token": token}
        )
    assert response.status_code == 400
    assert len(await session_docs(lgw)) == 1


async def test_backchannel_refuses_a_number_too_large_for_the_clock(
    lgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    """Anyone may post a logout token: an ``iat`` of 400 digits cannot be compared with the
    clock (it crashed with a 500 and no audit event); it is refused as ``iat`` before any
    key is looked up, with the usual answer and audit event."""
    await signed_in(lgw, op, browser)
    [doc] = await session_docs(lgw)
    claims = {**base_claims(lgw, op, doc["idp_sid"]), "iat": 10**400}
    kid = jwt.get_unverified_header(await op.sign(base_claims(lgw, op, doc["idp_sid"])))["kid"]
    token = foreign_key_token(claims, kid)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{lgw.url}/oidc/backchannel-logout", data={"logout_token": token}
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert len(await session_docs(lgw)) == 1
    [event] = await events(lgw, "backchannel_logout")
    assert event["outcome"] == "failure" and event["reason"] == "logout_token_invalid"


@pytest.mark.parametrize(
    ("case", "body", "content_type"),
    [
        ("missing", "", "application/x-www-form-urlencoded"),
        ("not_a_jwt", "logout_token=abc", "application/x-www-form-urlencoded"),
        ("repeated", "logout_token=a.b.c&logout_token=a.b.c", "application/x-www-form-urlencoded"),
        ("json_body", '{"logout_token": "a.b.c"}', "application/json"),
        ("oversized", "logout_token=" + "a" * 20000, "application/x-www-form-urlencoded"),
    ],
)
async def test_backchannel_rejects_malformed_requests(
    lgw: GatewayUnderTest, case: str, body: str, content_type: str
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{lgw.url}/oidc/backchannel-logout",
            content=body,
            headers={"Content-Type": content_type},
        )
    assert response.status_code == 400, case
    assert response.headers["Cache-Control"] == "no-store"


async def test_backchannel_can_be_switched_off(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    async with start_gateway(op, mongo_uri, logout={"backchannel": False}) as gw:
        await signed_in(gw, op, browser)
        [doc] = await session_docs(gw)
        token = await op.sign(base_claims(gw, op, doc["idp_sid"]))
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{gw.url}/oidc/backchannel-logout", data={"logout_token": token}
            )
        assert response.status_code == 404
        assert len(await session_docs(gw)) == 1


async def test_logout_page_without_session(lgw: GatewayUnderTest) -> None:
    async with httpx.AsyncClient() as client:
        page = await client.get(urljoin(lgw.url, "/oidc/logout"))
    assert page.status_code == 200 and 'id="signed-out"' in page.text
