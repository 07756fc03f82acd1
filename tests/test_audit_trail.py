"""Every flow path leaves exactly the expected audit events, and nothing secret.

Real parts only: the test OP, the MongoDB-wire server, the gateway over HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from bson import json_util

from gateway.store import audit_query as aq
from tests.support.gateway import (
    APP_SECRET,
    JITSI_BASE,
    GatewayUnderTest,
    start_gateway,
    token_from,
    with_query,
)
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio


async def events(gw: GatewayUnderTest) -> list[dict]:
    await gw.store.audit.flush()
    cursor = gw.store.audit.collection.find({}, sort=[("time", 1), ("_id", 1)])
    return [d async for d in cursor]


def kinds(docs: list[dict]) -> list[tuple[str, str]]:
    return [(d["event"], d["outcome"]) for d in docs]


async def test_happy_path_leaves_three_complete_events(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    response = await gw.sign_in(browser, op, room="StandUp", headers={"User-Agent": "x"})
    claims = jwt.decode(
        token_from(response.headers["location"]), APP_SECRET, ["HS256"], audience="jitsi"
    )
    docs = await events(gw)
    assert kinds(docs) == [
        ("flow_started", "success"),
        ("login_succeeded", "success"),
        ("token_minted", "success"),
    ]
    started, login, minted = docs
    for doc in docs:
        assert doc["v"] == 1
        assert doc["idp"] == "testop"
        assert doc["client_ip"] == "127.0.0.1"
        assert re.fullmatch(r"[0-9a-f]{32}", doc["request_id"])
        assert re.fullmatch(r"[0-9a-f]{32}", doc["_id"])
        assert doc["time"].tzinfo is not None
    assert started["room"] == "standup"  # stored lower-cased for exact filtering
    assert "subject" not in started and "session_hash" not in started
    for doc in (login, minted):
        assert doc["issuer"] == op.issuer
        assert doc["subject"] == "alice-sub"
        assert doc["username"] == "alice"
        assert doc["email"] == "alice@example.org"
        assert doc["email_verified"] is True
        assert any(g.endswith("staff") for g in doc["groups"])  # as the adapter names it
    assert login["session_hash"] == minted["session_hash"]
    assert re.fullmatch(r"[0-9a-f]{32}", login["session_hash"])
    assert minted["jti"] == claims["jti"]
    assert int(minted["token_expires_at"].timestamp()) == claims["exp"]
    assert minted["room"] == "standup"
    # two requests: the entry point, and the callback that signs in and mints at once
    assert len({d["request_id"] for d in docs}) == 2
    assert login["request_id"] == minted["request_id"]


async def test_single_sign_on_into_a_second_room_adds_only_a_token_event(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    await gw.sign_in(browser, op, room="alpha", tenant="Acme")
    before = await events(gw)
    response = await browser.get(f"{gw.url}/oidc/auth", params={"room": "beta"})
    assert response.headers["location"].startswith(f"{JITSI_BASE}/beta?jwt=")  # one hop
    after = await events(gw)
    assert before[-1]["tenant"] == "acme"
    new = after[len(before) :]
    assert kinds(new) == [("token_minted", "success")]
    assert new[0]["room"] == "beta" and "tenant" not in new[0]
    assert new[0]["session_hash"] == before[-1]["session_hash"]


async def test_refusals_are_audited_with_reason_and_room(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op, room="retro")
    assert (await browser.get(callback)).status_code == 302
    assert (await browser.get(callback)).status_code == 400  # replayed state
    bad = await browser.get(f"{gw.url}/oidc/tokenize", params={"room": "a/b"})
    assert bad.status_code == 400
    docs = await events(gw)
    assert kinds(docs) == [
        ("flow_started", "success"),
        ("login_succeeded", "success"),
        ("token_minted", "success"),
        ("login_failed", "failure"),
        ("room_refused", "failure"),
    ]
    reused, refused = docs[3], docs[4]
    assert reused["reason"] == "state_reused" and reused["detail"]
    assert refused["reason"] == "bad_request" and "room" not in refused
    assert reused["request_id"] != refused["request_id"]


async def test_expired_session_is_audited(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    await gw.sign_in(browser, op)
    gw.clock.offset = gw.settings.session.lifetime_seconds + 60
    response = await browser.get(f"{gw.url}/oidc/tokenize", params={"room": "later"})
    assert response.status_code == 302
    docs = await events(gw)
    assert [d["event"] for d in docs][-1] == "session_expired"
    assert docs[-1]["outcome"] == "info"
    assert docs[-1]["session_hash"] == docs[1]["session_hash"]


async def test_no_token_code_or_secret_reaches_the_audit_log(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op)
    flow = await gw.store.flows.collection.find_one({})
    assert flow is not None
    tokenize = await browser.get(callback)  # signs in and mints at once
    session = await gw.store.sessions.collection.find_one({})
    assert session is not None
    query = parse_qs(urlsplit(callback).query)
    used = {
        "code": query["code"][0],
        "state": query["state"][0],
        "jitsi token": token_from(tokenize.headers["location"]),
        "client secret": gw.client["client_secret"],
        "session cookie": browser.cookies.get(gw.settings.cookies.session_name),
        "app secret": APP_SECRET,
        "cookie secret": gw.settings.cookies.secret.get_secret_value(),
        "password": "alice-pw",
        "nonce": flow["nonce"],
        "pkce verifier": flow["code_verifier"],
        "id token": session["id_token"],
        "session id hash": session["_id"],  # the full store key is not in audit either
    }
    dump = json_util.dumps(await events(gw))
    for name, value in used.items():
        assert value, name
        assert value not in dump, f"{name} found in the audit log"


async def test_client_ip_believes_forwarding_headers_only_from_trusted_proxies(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    spoof = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 10.1.2.3"}
    async with start_gateway(op, mongo_uri) as gw:
        await browser.get(f"{gw.url}/oidc/auth", params={"room": "r"}, headers=spoof)
        assert (await events(gw))[-1]["client_ip"] == "127.0.0.1"
    trusted = ["127.0.0.1/32", "10.0.0.0/8"]
    async with start_gateway(op, mongo_uri, trusted_proxies=trusted) as gw:
        await browser.get(f"{gw.url}/oidc/auth", params={"room": "r"}, headers=spoof)
        await browser.get(
            f"{gw.url}/oidc/auth", params={"room": "r"}, headers={"X-Real-IP": "192.0.2.44"}
        )
        docs = await events(gw)
        assert [d["client_ip"] for d in docs] == ["203.0.113.9", "192.0.2.44"]


async def test_store_unavailable_is_audited_through_the_spool_within_a_bound(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    audit = {"write_timeout_seconds": 0.3, "replay_interval_seconds": 60}
    async with start_gateway(op, mongo_uri, store_uri="mongodb://127.0.0.1:9/", audit=audit) as gw:
        began = time.monotonic()
        for room in ("first", "second"):
            response = await browser.get(f"{gw.url}/oidc/auth", params={"room": room})
            assert response.status_code == 503
        elapsed = time.monotonic() - began
        # two store timeouts (2 s each) plus one audit write bound; never an audit stall
        assert elapsed < 2 * gw.settings.mongodb.timeout_seconds + 2, elapsed
        assert gw.store.audit.spool_depth == 2
        assert gw.store.audit.write_failures >= 1
        spool = gw.store.audit.spool
        assert spool is not None and spool.path is not None
        lines = (await asyncio.to_thread(Path(spool.path).read_bytes)).splitlines()
        spooled = [json_util.loads(line) for line in lines]
        assert [(d["event"], d["reason"], d["room"]) for d in spooled] == [
            ("login_failed", "store_unavailable", "first"),
            ("login_failed", "store_unavailable", "second"),
        ]


async def test_events_carry_the_display_name_and_link_the_flow(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    await gw.sign_in(browser, op, room="standup")
    docs = await events(gw)
    started, login, minted = docs
    assert login["name"] == minted["name"] == "Alice Example"
    # one browser flow: the start (before any ID token) and the login share flow_hash
    assert re.fullmatch(r"[0-9a-f]{32}", started["flow_hash"])
    assert started["flow_hash"] == login["flow_hash"]


async def test_a_failure_before_the_id_token_is_found_from_the_person(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    """Why did Alice's sign-in fail? A forged/unknown state carries no identity, but the
    browser's flow cookie links it to the sign-in that names her."""
    callback = await gw.start_and_login(browser, op, room="retro")
    assert (await browser.get(with_query(callback, state="x" * 43))).status_code == 400
    assert (await browser.get(callback)).status_code == 302
    await gw.store.audit.flush()
    collection = gw.store.audit.collection
    q = aq.parse_query({"email": "alice@example.org", "order": "asc"}, now=gw.gateway.now())
    plain, _ = await aq.page(collection, q)
    assert [d["event"] for d in plain] == ["login_succeeded", "token_minted"]
    linked, _ = await aq.page(collection, await aq.link(collection, q))
    assert [(d["event"], d.get("reason")) for d in linked] == [
        ("flow_started", None),
        ("login_failed", "state_invalid"),
        ("login_succeeded", None),
        ("token_minted", None),
    ]
    assert "subject" not in linked[1]  # no identity on the failure itself
    # paging the linked answer one by one gives the same events
    one = aq.parse_query(
        {"email": "alice@example.org", "order": "asc", "limit": "1"}, now=gw.gateway.now()
    )
    seen, cursor = [], None
    while True:
        params = {"email": "alice@example.org", "order": "asc", "limit": "1"}
        page_q = aq.parse_query(
            params | ({"cursor": cursor} if cursor else {}), now=gw.gateway.now()
        )
        docs, cursor = await aq.page(collection, await aq.link(collection, page_q))
        seen += [d["_id"] for d in docs]
        if cursor is None:
            break
    assert one.limit == 1 and seen == [d["_id"] for d in linked]
