"""The policy through the real test OP: owners, members, refused people and rooms, audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
import yaml

from gateway.store.identity_doc import identity_from_document
from tests.support.gateway import (
    APP_SECRET,
    JITSI_BASE,
    GatewayUnderTest,
    start_gateway,
    token_from,
)
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

# The YAML an operator writes for "staff may create and moderate any room, partners may join
# rooms under partner-* as members, everyone else is refused" (plus a guest lobby).
POLICY_YAML = """
default: deny
guest_rooms: ["lobby-*"]
rules:
  - name: staff-moderators
    groups: ["testop:staff"]
    affiliation: owner
    features: {recording: true, livestreaming: true, transcription: false}
  - name: partners
    groups: ["testop:partners"]
    rooms: ["partner-*"]
    affiliation: member
    token_lifetime_seconds: 120
  - name: everyone-else
    allow: false
"""
POLICY: dict[str, Any] = yaml.safe_load(POLICY_YAML)


@pytest_asyncio.fixture
async def gw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    async with start_gateway(op, mongo_uri, policy=POLICY) as running:
        yield running


def claims_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 302, response.text
    return jwt.decode(
        token_from(response.headers["location"]), APP_SECRET, algorithms=["HS256"], audience="jitsi"
    )


async def last_event(gw: GatewayUnderTest, **query: Any) -> dict[str, Any]:
    docs = [d async for d in gw.store.audit.collection.find(query, sort=[("time", -1)], limit=1)]
    assert docs, f"no audit event {query}"
    return docs[0]


async def test_staff_member_gets_owner_and_features(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    claims = claims_of(
        await gw.sign_in(browser, op, room="board", username="alice", password="alice-pw")
    )
    assert claims["context"]["user"]["affiliation"] == "owner"
    assert claims["context"]["user"]["moderator"] is True
    assert claims["context"]["features"] == {
        "recording": True,
        "livestreaming": True,
        "transcription": False,
    }
    minted = await last_event(gw, event="token_minted")
    assert minted["rule"] == 'rule 1 "staff-moderators"'
    assert minted["affiliation"] == "owner"
    assert minted["features"] == {"recording": True, "livestreaming": True, "transcription": False}
    login = await last_event(gw, event="login_succeeded")
    assert login["rule"] == 'rule 1 "staff-moderators"'


async def test_partner_is_member_in_partner_rooms_only(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    claims = claims_of(
        await gw.sign_in(browser, op, room="partner-sync", username="carol", password="carol-pw")
    )
    user = claims["context"]["user"]
    assert (user["affiliation"], user["moderator"]) == ("member", False)
    assert "features" not in claims["context"]
    assert claims["exp"] - claims["iat"] == 120
    # The same session is refused a staff room at tokenize time...
    refused = await browser.get(f"{gw.url}/oidc/auth", params={"room": "board"})
    assert refused.status_code == 403
    assert "Access refused" in refused.text
    assert 'id="guest"' not in refused.text
    event = await last_event(gw, event="room_refused")
    assert (event["reason"], event["room"], event["rule"]) == (
        "policy_denied",
        "board",
        'rule 3 "everyone-else"',
    )
    assert event["subject"] == "carol-sub"
    # ...and can still open another partner room.
    again = await browser.get(f"{gw.url}/oidc/tokenize", params={"room": "partner-review"})
    assert claims_of(again)["room"] == "partner-review"


async def test_refused_room_that_allows_guests_offers_the_guest_link(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    await gw.sign_in(browser, op, room="partner-a", username="carol", password="carol-pw")
    page = await browser.get(f"{gw.url}/oidc/tokenize", params={"room": "Lobby-1"})
    assert page.status_code == 403
    assert f'href="{JITSI_BASE}/Lobby-1?oidc=guest"' in page.text


async def test_outsider_is_refused_at_sign_in(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(
        browser, op, room="board", username="bob", password="bob-pw"
    )
    page = await browser.get(callback)
    assert page.status_code == 403
    assert "Access refused" in page.text
    assert browser.cookies.get(gw.settings.cookies.session_name) is None
    assert await gw.store.sessions.collection.count_documents({}) == 0
    event = await last_event(gw, event="login_failed")
    assert event["reason"] == "policy_denied"
    assert event["rule"] == 'rule 3 "everyone-else"'
    assert event["detail"] == 'rule 3 "everyone-else" matched (no conditions)'
    assert event["subject"] == "bob-sub"


async def test_url_tenant_condition_at_tokenize(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    policy = {"default": "deny", "rules": [{"name": "acme-only", "url_tenants": ["acme"]}]}
    async with start_gateway(op, mongo_uri, policy=policy) as gw:
        allowed = await gw.sign_in(browser, op, room="r1", tenant="Acme")
        assert claims_of(allowed)["sub"] == "acme"
        refused = await browser.get(
            f"{gw.url}/oidc/tokenize", params={"room": "r1", "tenant": "globex"}
        )
        assert refused.status_code == 403
        event = await last_event(gw, event="room_refused")
        assert (event["tenant"], event["rule"]) == ("globex", "default")


ROOMS_TO_TRY = ("standup", "secret-x", "secret-board", "board", "partner-a")


@pytest.mark.parametrize(
    ("rules", "wildcard"),
    [
        pytest.param(
            [
                {"name": "secret", "allow": False, "rooms": ["secret-*"]},
                {"name": "everyone", "room_scope": "any"},
            ],
            False,
            id="refused_rooms_keep_tokens_room_scoped",
        ),
        pytest.param([{"name": "everyone", "room_scope": "any"}], True, id="nothing_refused"),
    ],
)
async def test_a_token_never_opens_a_room_the_policy_refuses(
    op: TestOP,
    mongo_uri: str,
    browser: httpx.AsyncClient,
    rules: list[dict[str, Any]],
    wildcard: bool,
) -> None:
    """Every room the minted token opens (as Prosody reads ``room``) is one the policy
    allows this person, checked by asking the gateway's own policy for each room."""
    policy = {"default": "deny", "rules": rules}
    async with start_gateway(op, mongo_uri, policy=policy, jitsi={"room_wildcard": True}) as gw:
        claims = claims_of(await gw.sign_in(browser, op, room="standup"))
        assert (claims["room"] == "*") is wildcard
        doc = await gw.store.sessions.collection.find_one({})
        assert doc is not None
        identity = identity_from_document(doc["identity"])
        for room in ROOMS_TO_TRY:
            if claims["room"] in ("*", room):
                decision = gw.gateway.policy.room(identity, room)
                assert decision.allowed, f"token for {claims['room']!r} opens refused {room}"
        minted = await last_event(gw, event="token_minted")
        assert minted["room"] == claims["room"]
