"""Session revalidation against the real test OP: access follows the IdP.

The test OP issues refresh tokens to clients registered for the grant (Keycloak's default)
and has test-only switches to disable an account, revoke an account's grants and make its
token endpoint fail. The gateway's clock is moved past ``revalidate_seconds`` instead of
waiting; the OP's clock is not, so its tokens stay valid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio

from gateway.config import ConfigError, settings_from_dict
from gateway.hashing import sha256_hex
from gateway.sealing import Sealer, sealing_key
from tests.support.gateway import JITSI_BASE, GatewayUnderTest, start_gateway
from tests.support.op import TestOP
from tests.support.token_service import CLIENT_ID, token_service_gateway
from tests.test_token_service import SSO, full_grant, token_request

ACCOUNTS: list[dict[str, Any]] = [
    {
        "sub": f"{name}-sub",
        "username": name,
        "password": f"{name}-pw",
        "claims": {"name": name.title(), "email": f"{name}@example.org", "email_verified": True},
    }
    for name in ("carol", "dave", "erin", "frank", "alice")
]
REFRESHING = {"grant_types": ["authorization_code", "refresh_token"]}


@pytest.fixture(scope="module")
def rop() -> Iterator[TestOP]:
    """An OP of this module's own: its accounts are disabled and revoked here."""
    with TestOP.start(ACCOUNTS) as provider:
        yield provider


@pytest_asyncio.fixture
async def rgw(rop: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    async with start_gateway(rop, mongo_uri, client_metadata=lambda _url: REFRESHING) as gw:
        yield gw


async def session_doc(gw: GatewayUnderTest) -> dict[str, Any] | None:
    return await gw.store.sessions.collection.find_one({})


async def events(gw: GatewayUnderTest, name: str) -> list[dict[str, Any]]:
    return [d async for d in gw.store.audit.collection.find({"event": name}, sort=[("time", 1)])]


async def room(gw: GatewayUnderTest, browser: httpx.AsyncClient, name: str = "standup"):
    return await browser.get(f"{gw.url}/oidc/auth", params={"room": name})


def has_token(response: httpx.Response) -> bool:
    return (
        response.status_code == 302
        and response.headers["location"].startswith(f"{JITSI_BASE}/")
        and "jwt=" in response.headers["location"]
    )


def to_idp(response: httpx.Response, op: TestOP) -> bool:
    return response.status_code == 302 and response.headers["location"].startswith(op.issuer)


def token_posts(gw: GatewayUnderTest) -> int:
    return gw.gateway.http.requests.get("POST", 0)


async def sign_in(gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient, who: str) -> None:
    response = await gw.sign_in(browser, op, username=who, password=f"{who}-pw")
    assert has_token(response), response.headers.get("location")


def later(gw: GatewayUnderTest, seconds: float) -> None:
    gw.clock.offset += seconds


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["disabled", "revoked"])
async def test_idp_refusal_ends_access_within_one_interval(
    rgw: GatewayUnderTest, rop: TestOP, browser: httpx.AsyncClient, how: str
) -> None:
    who = "carol" if how == "disabled" else "dave"
    sub = f"{who}-sub"
    await sign_in(rgw, rop, browser, who)
    doc = await session_doc(rgw)
    assert doc is not None and isinstance(doc["idp_refresh"], bytes)
    assert (
        timedelta(seconds=295) < doc["revalidate_at"] - doc["created_at"] <= timedelta(seconds=300)
    )
    try:
        if how == "disabled":
            await rop.set_account_disabled(sub)
        else:
            await rop.revoke_grants(sub)
        # Not due yet: one hop, nothing asked of the IdP.
        posts = token_posts(rgw)
        assert has_token(await room(rgw, browser))
        assert token_posts(rgw) == posts
        later(rgw, 301)
        refused = await room(rgw, browser)
        assert to_idp(refused, rop), refused.headers.get("location")
        assert token_posts(rgw) == posts + 1  # one refresh-token call
        assert await session_doc(rgw) is None
        assert 'jog_session=""' in refused.headers.get("set-cookie", "") or (
            "jog_session=;" in refused.headers.get("set-cookie", "")
        )
        (ended,) = await events(rgw, "session_revalidation_failed")
        assert ended["reason"] == "idp_revoked" and ended["access_kept"] is False
        assert ended["subject"] == sub and ended["outcome"] == "info"
        assert ended["session_hash"] == doc["_id"][:32]
        # The next room request has no session: straight to the IdP.
        assert to_idp(await room(rgw, browser), rop)
    finally:
        if how == "disabled":
            await rop.set_account_disabled(sub, False)
    # Enabled again (or a new grant), a new sign-in brings access back.
    await sign_in(rgw, rop, browser, who)
    assert has_token(await room(rgw, browser))


@pytest.mark.asyncio
async def test_revalidation_keeps_access_and_rotates(
    rgw: GatewayUnderTest, rop: TestOP, browser: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await sign_in(rgw, rop, browser, "erin")
    before = await session_doc(rgw)
    assert before is not None
    first = rgw.gateway.sealer.open(before["idp_refresh"], before["_id"])
    assert first
    later(rgw, 301)
    posts = token_posts(rgw)
    assert has_token(await room(rgw, browser))
    assert token_posts(rgw) == posts + 1
    after = await session_doc(rgw)
    assert after is not None
    assert after["revalidate_at"] > before["revalidate_at"] + timedelta(seconds=290)
    (done,) = await events(rgw, "session_revalidated")
    assert done["subject"] == "erin-sub" and done["outcome"] == "success"
    second = rgw.gateway.sealer.open(after["idp_refresh"], after["_id"])
    assert second
    # Next request: not due again, no IdP call.
    assert has_token(await room(rgw, browser))
    assert token_posts(rgw) == posts + 1
    # The refresh tokens appear nowhere in clear: not in the session document, the audit
    # log or any log line.
    audit = [d async for d in rgw.store.audit.collection.find({})]
    for token in {first, second}:
        assert token.encode() not in bytes(after["idp_refresh"])
        assert token not in repr(after) and token not in repr(audit)
        assert token not in caplog.text


@pytest.mark.asyncio
async def test_sealed_token_opens_only_in_its_session(rgw: GatewayUnderTest) -> None:
    sealer = rgw.gateway.sealer
    blob = sealer.seal("a-refresh-token", "session-a")
    assert sealer.open(blob, "session-a") == "a-refresh-token"
    assert sealer.open(blob, "session-b") is None  # copied into another session
    assert sealer.open(blob[:-1] + bytes([blob[-1] ^ 1]), "session-a") is None  # tampered
    other = Sealer(b"k" * 32)
    assert other.open(blob, "session-a") is None  # another key


@pytest.mark.asyncio
@pytest.mark.parametrize("outage", ["allow", "refuse"])
async def test_idp_down(
    rop: TestOP, mongo_uri: str, browser: httpx.AsyncClient, outage: str
) -> None:
    async with start_gateway(
        rop,
        mongo_uri,
        client_metadata=lambda _url: REFRESHING,
        idp={"revalidate_outage": outage, "revalidate_outage_grace_seconds": 600},
    ) as gw:
        await sign_in(gw, rop, browser, "frank")
        await rop.token_outage(503)
        try:
            later(gw, 301)
            response = await room(gw, browser)
            if outage == "refuse":
                assert to_idp(response, rop)
                (ended,) = await events(gw, "session_revalidation_failed")
                assert ended["reason"] == "idp_revalidation_unavailable"
                assert ended["access_kept"] is False
                return
            assert has_token(response)  # kept, for at most the grace
            (kept,) = await events(gw, "session_revalidation_failed")
            assert kept["access_kept"] is True and kept["reason"] == "idp_revalidation_unavailable"
            assert "HTTP 503" in kept["detail"]
            # Asked again a minute later, still kept inside the grace.
            later(gw, 61)
            assert has_token(await room(gw, browser))
            # The grace is over: access ends.
            later(gw, 600)
            assert to_idp(await room(gw, browser), rop)
            last = (await events(gw, "session_revalidation_failed"))[-1]
            assert last["access_kept"] is False and "grace over" in last["detail"]
        finally:
            await rop.token_outage(0)


@pytest.mark.asyncio
async def test_outage_recovers(rgw: GatewayUnderTest, rop: TestOP, browser: httpx.AsyncClient):
    await sign_in(rgw, rop, browser, "frank")
    await rop.token_outage(502)
    try:
        later(rgw, 301)
        assert has_token(await room(rgw, browser))
    finally:
        await rop.token_outage(0)
    later(rgw, 61)
    assert has_token(await room(rgw, browser))
    doc = await session_doc(rgw)
    assert doc is not None and doc.get("outage_since") is None
    assert len(await events(rgw, "session_revalidated")) == 1


@pytest.mark.asyncio
async def test_no_refresh_token_means_a_maximum_session_age(
    rop: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    async with start_gateway(rop, mongo_uri, idp={"max_session_age_seconds": 1800}) as gw:
        await sign_in(gw, rop, browser, "carol")
        doc = await session_doc(gw)
        assert doc is not None and "idp_refresh" not in doc
        later(gw, 1700)
        posts = token_posts(gw)
        assert has_token(await room(gw, browser))
        later(gw, 101)
        response = await room(gw, browser)
        assert to_idp(response, rop)
        assert token_posts(gw) == posts  # nothing to ask the IdP with
        (ended,) = await events(gw, "session_revalidation_failed")
        assert ended["reason"] == "session_max_age"
        # The IdP session is alive: back without a password (no login form on the way).
        location = response.headers["location"]
        for _ in range(10):
            hop = await browser.get(location)
            assert 'id="password"' not in hop.text
            location = hop.headers.get("location", "")
            if location.startswith(gw.url) or location.startswith("/oidc/"):
                break
            location = location if location.startswith("http") else rop.issuer + location
        assert "code=" in location
        done = await browser.get(location)
        assert has_token(done)


@pytest.mark.asyncio
async def test_revalidation_off(rop: TestOP, mongo_uri: str, browser: httpx.AsyncClient):
    async with start_gateway(
        rop, mongo_uri, client_metadata=lambda _url: REFRESHING, idp={"revalidate_seconds": 0}
    ) as gw:
        await sign_in(gw, rop, browser, "erin")
        doc = await session_doc(gw)
        assert doc is not None and "idp_refresh" not in doc and "revalidate_at" not in doc
        later(gw, 7200)
        assert has_token(await room(gw, browser))


@pytest.mark.asyncio
async def test_token_service_refresh_revalidates(
    rop: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    """Jitsi's sso.html refreshing its token: the same revalidation; a disabled account's
    refresh is refused and the session's token-service refresh tokens are revoked."""
    async with token_service_gateway(
        rop, mongo_uri, SSO, client_metadata=lambda _url: REFRESHING
    ) as gw:
        body, _ = await full_grant(gw, rop, browser)
        later(gw, 301)
        posts = token_posts(gw)
        ok = await token_request(
            gw, grant_type="refresh_token", refresh_token=body["refresh_token"], client_id=CLIENT_ID
        )
        assert ok.status_code == 200, ok.text
        assert token_posts(gw) == posts + 1  # revalidated at the IdP on the way
        await rop.set_account_disabled("alice-sub")
        try:
            later(gw, 301)
            refused = await token_request(
                gw,
                grant_type="refresh_token",
                refresh_token=ok.json()["refresh_token"],
                client_id=CLIENT_ID,
            )
        finally:
            await rop.set_account_disabled("alice-sub", False)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        assert "IdP ended the sign-in" in refused.json()["error_description"]
        assert await session_doc(gw) is None
        (ended,) = await events(gw, "session_revalidation_failed")
        assert ended["reason"] == "idp_revoked" and ended["refresh_tokens_revoked"] >= 1
        assert await gw.store.grants.refresh.count_documents({"revoked": {"$ne": True}}) == 0


def _base(**session: Any) -> dict[str, Any]:
    return {
        "public_url": "http://127.0.0.1:1",
        "cookies": {"secret": "s" * 40},
        "session": session,
        "jitsi": {
            "base_url": JITSI_BASE,
            "app_id": "a",
            "domain": "meet.test",
            "app_secret": "x" * 40,
        },
        "idps": [
            {
                "id": "x",
                "adapter": "generic",
                "issuer": "http://127.0.0.1:2",
                "client_id": "c",
                "client_secret": "s",
            }
        ],
    }


def test_refresh_token_key_is_checked_and_used() -> None:
    with pytest.raises(ConfigError, match=r"session\.refresh_token_key: .*at least 32"):
        settings_from_dict(_base(refresh_token_key="short"))
    derived = sealing_key(settings_from_dict(_base()))
    configured = sealing_key(settings_from_dict(_base(refresh_token_key="k" * 32)))
    assert len(derived) == len(configured) == 32 and derived != configured
    assert derived != sha256_hex("s" * 40).encode()[:32]


def test_outage_setting_is_checked() -> None:
    data = _base()
    data["idps"][0]["revalidate_outage"] = "maybe"
    with pytest.raises(ConfigError, match=r"idps\[0\]\.revalidate_outage"):
        settings_from_dict(data)


def person_path(gw: GatewayUnderTest) -> dict[tuple[str, str], int]:
    """Store commands so far, audit inserts left out (they go behind the answer)."""
    counts = gw.store.commands.counts
    return {k: v for k, v in counts.items() if k[1] not in ("audit", "") and k[0] != "ping"}


def added(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@pytest.mark.asyncio
async def test_cost_on_the_persons_path(
    rgw: GatewayUnderTest, rop: TestOP, browser: httpx.AsyncClient
) -> None:
    """Nothing due: a room request is one hop and one session read, as without
    revalidation. Due: one token-endpoint call and two session updates more (the claim and
    the answer). The figures are printed for docs/performance.md (run with -s)."""
    await sign_in(rgw, rop, browser, "erin")
    rounds = 10  # the clock moves 301 s each: the OP's ID tokens live an hour
    before, posts, cpu = person_path(rgw), token_posts(rgw), time.process_time()
    for _ in range(rounds):
        assert has_token(await room(rgw, browser))  # one hop: straight to the room
    quiet = added(person_path(rgw), before)
    quiet_cpu = (time.process_time() - cpu) / rounds
    assert quiet == {("find", "sessions"): rounds}
    assert token_posts(rgw) == posts
    before, posts, cpu = person_path(rgw), token_posts(rgw), time.process_time()
    for _ in range(rounds):
        later(rgw, 301)
        assert has_token(await room(rgw, browser))
    due = added(person_path(rgw), before)
    due_cpu = (time.process_time() - cpu) / rounds
    assert due == {("find", "sessions"): rounds, ("update", "sessions"): 2 * rounds}
    assert token_posts(rgw) == posts + rounds
    assert len(await events(rgw, "session_revalidated")) == rounds
    print(
        f"\nroom request, nothing due: {quiet_cpu * 1000:.2f} ms CPU (gateway + test client), "
        f"store {quiet}; due: {due_cpu * 1000:.2f} ms CPU, store per request "
        f"{ {k: v / rounds for k, v in due.items()} }, 1 IdP call"
    )
