"""Trust between IdPs, through the real flow with two real OPs: ``testop`` owns example.org
(``email_domains``); ``rogue`` is a second OP whose account asserts a *verified* example.org
address, Alice's name and a picture. Neither the policy nor the Jitsi token may believe it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio

from adapters.base import Identity
from gateway.jitsi import gravatar_url
from tests.support.gateway import (
    JITSI_BASE,
    GatewayUnderTest,
    start_gateway,
    token_from,
    with_query,
)
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

ROGUE_ACCOUNTS: list[dict[str, Any]] = [
    {
        "sub": "mallory-sub",
        "username": "mallory",
        "password": "mallory-pw",
        "claims": {
            "name": "Alice Example",
            "email": "alice@example.org",
            "email_verified": True,
            "picture": "https://evil.example/alice.png",
        },
    },
    {
        "sub": "mel-sub",
        "username": "mel",
        "password": "mel-pw",
        "claims": {
            "name": "Mel Outside",
            "email": "mel@outside.example",
            "email_verified": False,
            "picture": "https://pics.outside.example/mel.png",
        },
    },
    {
        "sub": "val-sub",
        "username": "val",
        "password": "val-pw",
        "claims": {
            "name": "Val Outside",
            "email": "val@outside.example",
            "email_verified": True,
            "picture": "http://pics.outside.example/val.png",
        },
    },
]

POLICY = {
    "default": "deny",
    "rules": [
        {"name": "colleagues", "email_domains": ["example.org"], "affiliation": "owner"},
        {"name": "rogue-guests", "idps": ["rogue"], "rooms": ["open-*"], "affiliation": "member"},
    ],
}


@pytest.fixture(scope="module")
def rogue_op() -> Iterator[TestOP]:
    with TestOP.start(ROGUE_ACCOUNTS) as provider:
        yield provider


@pytest_asyncio.fixture
async def two(op: TestOP, rogue_op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    more = [
        (
            rogue_op,
            {
                "id": "rogue",
                "display_name": "Partner sign-in",
                "external": True,
                "picture_avatar": True,
            },
        )
    ]
    async with start_gateway(
        op,
        mongo_uri,
        idp={"email_domains": ["example.org"]},
        more_idps=more,
        policy=POLICY,
    ) as gw:
        yield gw


def user_of(location: str) -> dict[str, Any]:
    claims = jwt.decode(token_from(location), options={"verify_signature": False})
    return claims["context"]["user"]


async def test_owner_idp_email_domain_counts(two: GatewayUnderTest, op: TestOP) -> None:
    async with httpx.AsyncClient() as browser:
        done = await two.sign_in(browser, op, room="board", idp="testop")
    assert done.headers["location"].startswith(f"{JITSI_BASE}/board?jwt=")
    user = user_of(done.headers["location"])
    assert user["affiliation"] == "owner"
    assert user["email"] == "Alice@Example.org"
    assert user["name"] == "Alice Example"
    assert user["avatar"] == gravatar_url("alice@example.org", None)


async def test_another_idp_asserting_the_domain_does_not_match(
    two: GatewayUnderTest, rogue_op: TestOP
) -> None:
    """A verified alice@example.org from the rogue IdP is not a colleague: the sign-in is
    admitted only by the rogue-guests rule, and the board room is refused."""
    async with httpx.AsyncClient() as browser:
        callback = await two.start_and_login(
            browser, rogue_op, room="board", username="mallory", password="mallory-pw", idp="rogue"
        )
        board = await browser.get(callback)  # signed in (audited), then the room refused
    assert board.status_code == 403
    events = [e async for e in two.store.audit.collection.find({"idp": "rogue"})]
    login = next(e for e in events if e["event"] == "login_succeeded")
    assert login["rule"] == 'rule 2 "rogue-guests"'
    refused = next(e for e in events if e["event"] == "room_refused")
    assert refused["rule"] == "default"


async def test_rogue_display_cannot_pass_for_the_colleague(
    two: GatewayUnderTest, rogue_op: TestOP
) -> None:
    """Same name and address as Alice: the token carries no e-mail and no Gravatar of
    example.org (another IdP's domain), the IdP's own picture (picture_avatar), and the name
    marked with the external IdP's label."""
    async with httpx.AsyncClient() as browser:
        done = await two.sign_in(
            browser, rogue_op, room="open-x", username="mallory", password="mallory-pw", idp="rogue"
        )
    user = user_of(done.headers["location"])
    assert user["id"] == "rogue:mallory-sub"
    assert user["name"] == "Alice Example (Partner sign-in)"
    assert "email" not in user
    assert user["avatar"] == "https://evil.example/alice.png"
    assert user["affiliation"] == "member"


@pytest.mark.parametrize(
    ("username", "email", "avatar"),
    [
        ("mel", None, "https://pics.outside.example/mel.png"),
        ("val", "val@outside.example", gravatar_url("val@outside.example", None)),
    ],
    ids=["unverified-email-hidden", "verified-unowned-email-shown-http-picture-ignored"],
)
async def test_unverified_email_is_not_shown(
    two: GatewayUnderTest, rogue_op: TestOP, username: str, email: str | None, avatar: str
) -> None:
    async with httpx.AsyncClient() as browser:
        done = await two.sign_in(
            browser,
            rogue_op,
            room="open-x",
            username=username,
            password=f"{username}-pw",
            idp="rogue",
        )
    user = user_of(done.headers["location"])
    assert user.get("email") == email
    assert user["avatar"] == avatar


async def test_unverified_email_of_the_owner_idp_is_shown(
    two: GatewayUnderTest, op: TestOP
) -> None:
    """bob@example.org is unverified, but testop owns example.org: shown (and its Gravatar);
    the policy still wants it verified, so bob matches no rule."""
    async with httpx.AsyncClient() as browser:
        callback = await two.start_and_login(
            browser, op, room="board", username="bob", password="bob-pw", idp="testop"
        )
        refused = await browser.get(callback)
    assert refused.status_code == 403
    tokens = two.gateway.tokens
    bob = Identity("testop", op.issuer, "bob-sub", "bob", "bob", "bob@example.org", False)
    assert tokens.user_context(bob)["email"] == "bob@example.org"


# ---- audit attribution (issue 14, item 4) ------------------------------------------------


@pytest_asyncio.fixture
async def pinned(op: TestOP, rogue_op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    """testop serves every room but ``open-*``, which is pinned to rogue."""
    more = [(rogue_op, {"id": "rogue", "rooms": ["open-*"]})]
    async with start_gateway(op, mongo_uri, more_idps=more) as gw:
        yield gw


async def failures(gw: GatewayUnderTest) -> list[dict[str, Any]]:
    await gw.store.audit.flush()
    cursor = gw.store.audit.collection.find({"outcome": "failure"}).sort("_id", 1)
    return [e async for e in cursor]


async def test_refused_states_are_attributed_to_the_flows_idp(
    pinned: GatewayUnderTest, op: TestOP
) -> None:
    async with httpx.AsyncClient() as victim, httpx.AsyncClient() as attacker:
        callback = await pinned.start_and_login(victim, op, room="board", idp="testop")
        # Another browser brings the callback: state_browser_mismatch.
        assert (await attacker.get(callback)).status_code == 400
        # The right browser: signs in; the same callback again: state_reused.
        assert (await victim.get(callback)).status_code == 302
        assert (await victim.get(callback)).status_code == 400
        # The used state delivered at the other IdP's callback: still the flow's IdP.
        foreign = callback.replace("/oidc/redirect/testop?", "/oidc/redirect/rogue?")
        assert (await victim.get(foreign)).status_code == 400
        # An unknown state at testop's callback: the callback's IdP is all there is.
        assert (await victim.get(with_query(callback, state="forged"))).status_code == 400
        # ...and at a callback path no IdP is configured for.
        nowhere = with_query(callback, state="forged").replace("/testop?", "/nosuch?")
        assert (await victim.get(nowhere)).status_code == 400
    got = [(e["reason"], e.get("idp"), e.get("callback_idp")) for e in await failures(pinned)]
    assert got == [
        ("state_browser_mismatch", "testop", None),
        ("state_reused", "testop", None),
        ("state_reused", "testop", "rogue"),
        ("state_invalid", "testop", None),
        ("state_invalid", None, "nosuch"),
    ]


async def test_flow_answered_at_another_idps_callback_names_both(
    pinned: GatewayUnderTest, op: TestOP
) -> None:
    async with httpx.AsyncClient() as browser:
        callback = await pinned.start_and_login(browser, op, room="board", idp="testop")
        foreign = callback.replace("/oidc/redirect/testop?", "/oidc/redirect/rogue?")
        assert (await browser.get(foreign)).status_code == 400
    [event] = await failures(pinned)
    assert (event["reason"], event["idp"], event["callback_idp"]) == (
        "issuer_mismatch",
        "testop",
        "rogue",
    )


@pytest.mark.parametrize(
    ("params", "idp", "requested"),
    [
        ({"room": "board", "idp": "rogue"}, "rogue", None),
        ({"room": "board", "idp": "nosuch"}, None, "nosuch"),
        ({"room": "bad room!", "idp": "testop"}, "testop", None),
    ],
    ids=["configured-idp-not-serving-room", "unconfigured-idp", "bad-room-names-idp"],
)
async def test_auth_refusals_are_attributed_to_the_named_idp(
    pinned: GatewayUnderTest, params: dict[str, str], idp: str | None, requested: str | None
) -> None:
    async with httpx.AsyncClient() as browser:
        response = await browser.get(f"{pinned.url}/oidc/auth", params=params)
    assert response.status_code == 400
    [event] = await failures(pinned)
    assert (event.get("idp"), event.get("requested_idp")) == (idp, requested)


# ---- login CSRF: an IdP chosen by a link from another site (item 5) ---------------------


@pytest.mark.parametrize(
    ("site", "params", "confirmed"),
    [
        ("cross-site", {"idp": "rogue"}, True),
        ("same-site", {"idp": "rogue"}, True),
        ("cross-site", {"login_hint": "alice@example.org"}, True),
        ("same-origin", {"idp": "rogue"}, False),
        ("none", {"idp": "rogue"}, False),
        (None, {"idp": "rogue"}, False),
    ],
    ids=[
        "cross-site-idp",
        "same-site-idp",
        "cross-site-login-hint",
        "same-origin",
        "typed",
        "no-header",
    ],
)
async def test_idp_chosen_by_a_foreign_link_needs_a_click(
    two: GatewayUnderTest, site: str | None, params: dict[str, str], confirmed: bool
) -> None:
    headers = {"Sec-Fetch-Site": site} if site else {}
    async with httpx.AsyncClient() as browser:
        response = await browser.get(
            f"{two.url}/oidc/auth", params={"room": "board", **params}, headers=headers
        )
    flows = await two.store.flows.collection.count_documents({})
    if confirmed:
        assert response.status_code == 200
        assert 'id="confirm"' in response.text
        assert 'data-idp="rogue"' in response.text and 'data-idp="testop"' in response.text
        assert flows == 0
        await two.store.audit.flush()
        event = await two.store.audit.collection.find_one({"event": "idp_choice_confirm"})
        assert event is not None and event["outcome"] == "info"
    else:
        assert response.status_code == 302
        assert flows == 1


async def test_extra_claims_are_visible_in_the_audit(op: TestOP, mongo_uri: str) -> None:
    """Identity.extra (the allow-listed extra_claims) is recorded with identity events."""
    idp = {"options": {"extra_claims": ["preferred_username", "absent_claim"]}}
    async with start_gateway(op, mongo_uri, idp=idp) as gw:
        async with httpx.AsyncClient() as browser:
            await gw.sign_in(browser, op, room="board")
        await gw.store.audit.flush()
        for event in ("login_succeeded", "token_minted"):
            doc = await gw.store.audit.collection.find_one({"event": event})
            assert doc is not None and doc["extra"] == {"preferred_username": "alice"}, event
