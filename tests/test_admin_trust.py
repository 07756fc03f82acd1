"""People are never mixed up between IdPs in the admin tools, the audit log or the token.

Two real OPs: ``testop`` owns example.org (Alice's real IdP); ``rogue`` is run by an attacker
and is *not* marked ``external``: its accounts assert Alice's ``sub``, username and address
(verified, in another case, with a trailing dot, with a Cyrillic letter) and the name
"Alice Corp". The sessions API and CLI, the audit API, CLI and people view must match
e-mail and username only where the IdP may speak for them (unless asked for all), show the
IdP and the e-mail's trust on every person row, and audit events must say whether the
gateway believed the e-mail.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
import yaml
from playwright.async_api import Browser

from adapters.base import Identity
from gateway.config import IdP
from gateway.jitsi import gravatar_url
from gateway.trust import IdpTrust
from tests.support.cli import run_cli
from tests.support.gateway import GatewayUnderTest, start_gateway, token_from
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

TOKEN = "admin-token-for-trust-tests-0123456"
CYRILLIC = "alice@ex\u0430mple.org"  # a Cyrillic a


def rogue_account(username: str, email: str) -> dict[str, Any]:
    return {
        "sub": "alice-sub" if username == "alice" else f"{username}-sub",
        "username": username,
        "password": f"{username}-pw",
        "claims": {
            "name": "Alice Corp",
            "preferred_username": "alice",  # Alice's username at her IdP, too
            "email": email,
            "email_verified": True,
        },
    }


ROGUE_ACCOUNTS = [
    rogue_account("alice", "ALICE@Example.org"),
    rogue_account("dot", "alice@example.org."),
    rogue_account("cyr", CYRILLIC),
]


@pytest.fixture(scope="module")
def rogue_op() -> Iterator[TestOP]:
    with TestOP.start(ROGUE_ACCOUNTS) as provider:
        yield provider


@pytest_asyncio.fixture
async def gw(op: TestOP, rogue_op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    admin = {"tokens": [{"name": "helpdesk", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}
    async with start_gateway(
        op,
        mongo_uri,
        idp={"email_domains": ["example.org"]},
        more_idps=[(rogue_op, {"id": "rogue", "display_name": "Rogue"})],
        admin=admin,
    ) as running:
        yield running


async def admin(gw: GatewayUnderTest, method: str, path: str, **params: str) -> Any:
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.request(
            method,
            f"{gw.url}/admin/{path}",
            params=params,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


async def sign_in(gw: GatewayUnderTest, provider: TestOP, username: str, idp: str) -> str:
    async with httpx.AsyncClient(timeout=30) as browser:
        done = await gw.sign_in(
            browser, provider, room="r1", username=username, password=f"{username}-pw", idp=idp
        )
    return done.headers["location"]


async def both_alices(gw: GatewayUnderTest, op: TestOP, rogue_op: TestOP) -> None:
    await sign_in(gw, op, "alice", "testop")
    await sign_in(gw, rogue_op, "alice", "rogue")


async def test_sessions_by_email_and_username_are_alices_only(
    gw: GatewayUnderTest, op: TestOP, rogue_op: TestOP
) -> None:
    await both_alices(gw, op, rogue_op)
    for params in (
        {"email": "alice@example.org"},
        {"email": "ALICE@EXAMPLE.ORG"},
        {"username": "alice"},
    ):
        found = await admin(gw, "GET", "sessions", **params)
        assert [s["idp"] for s in found["sessions"]] == ["testop"], params
        assert found["sessions"][0]["email_trust"] == "owner"
    every = await admin(gw, "GET", "sessions", email="alice@example.org", all_idps="true")
    trust = {s["idp"]: (s["email_trust"], s["organisation_idp"]) for s in every["sessions"]}
    assert trust == {"testop": ("owner", True), "rogue": ("foreign", False)}
    every = await admin(gw, "GET", "sessions", username="alice", all_idps="true")
    assert sorted(s["idp"] for s in every["sessions"]) == ["rogue", "testop"]
    # ending "Alice's" sessions ends hers, not the attacker's
    ended = await admin(gw, "DELETE", "sessions", email="alice@example.org")
    assert [s["idp"] for s in ended["ended"]] == ["testop"]
    left = await admin(gw, "GET", "sessions", idp="rogue", username="alice")
    assert left["count"] == 1


async def test_audit_queries_and_people_are_alices_only(
    gw: GatewayUnderTest, op: TestOP, rogue_op: TestOP
) -> None:
    await both_alices(gw, op, rogue_op)
    await gw.store.audit.flush()
    events = (await admin(gw, "GET", "audit", email="alice@example.org", limit="1000"))["events"]
    assert events and {e["idp"] for e in events} == {"testop"}
    people = (await admin(gw, "GET", "audit/people", email="alice@example.org"))["people"]
    assert [(p["idp"], p["email_trust"]) for p in people] == [("testop", "owner")]
    people = (await admin(gw, "GET", "audit/people", username="alice"))["people"]
    assert [p["idp"] for p in people] == ["testop"]
    every = await admin(gw, "GET", "audit/people", username="alice", all_idps="true")
    assert sorted(p["idp"] for p in every["people"]) == ["rogue", "testop"]
    every = await admin(gw, "GET", "audit/people", email="alice@example.org", all_idps="true")
    rows = {p["idp"]: (p["name"], p["email_trust"]) for p in every["people"]}
    # the name as Jitsi showed it: the rogue's with its IdP's label
    assert rows == {
        "testop": ("Alice Example", "owner"),
        "rogue": ("Alice Corp (Rogue)", "foreign"),
    }
    # the stored events say whether the gateway believed the e-mail
    stored = {
        e["idp"]: e async for e in gw.store.audit.collection.find({"event": "login_succeeded"})
    }
    assert stored["testop"]["email_trust"] == "owner"
    assert stored["rogue"]["email_trust"] == "foreign"
    assert stored["rogue"]["email_verified"] is True  # as the IdP asserted it


async def test_the_cli_matches_alice_only_and_shows_trust(
    gw: GatewayUnderTest, op: TestOP, rogue_op: TestOP, mongo_uri: str, tmp_path: Path
) -> None:
    await both_alices(gw, op, rogue_op)
    await gw.store.audit.flush()
    config = tmp_path / "settings.yaml"
    idps = [
        {"id": i.id, "adapter": "generic", "issuer": i.issuer, "client_id": "c",
         "client_secret": "x", "email_domains": list(i.email_domains)}
        for i in gw.settings.idps
    ]  # fmt: skip
    data = {
        "public_url": "https://meet.example.com",
        "mongodb": {"uri": mongo_uri, "database": gw.settings.mongodb.database},
        "cookies": {"secret": "c" * 40},
        "jitsi": {
            "base_url": "https://meet.example.com",
            "app_id": "app",
            "domain": "meet.example.com",
            "app_secret": "s" * 40,
        },
        "idps": idps,
    }
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    c = ("-c", str(config))

    def cli(*argv: str) -> Any:
        ran = run_cli(*argv, *c, "--format", "json")
        assert ran.returncode == 0, ran.stderr
        return json.loads(ran.stdout)

    listed = await asyncio.to_thread(cli, "sessions", "list", "--username", "alice")
    assert [(s["idp"], s["email_trust"]) for s in listed["sessions"]] == [("testop", "owner")]
    listed = await asyncio.to_thread(cli, "sessions", "list", "--email", "Alice@example.org")
    assert [s["idp"] for s in listed["sessions"]] == ["testop"]
    listed = await asyncio.to_thread(
        cli, "sessions", "list", "--email", "alice@example.org", "--all-idps"
    )
    assert sorted(s["idp"] for s in listed["sessions"]) == ["rogue", "testop"]
    people = await asyncio.to_thread(cli, "audit", "people", "--email", "alice@example.org")
    assert [(p["idp"], p["email_trust"]) for p in people["people"]] == [("testop", "owner")]
    events = await asyncio.to_thread(cli, "audit", "query", "--email", "alice@example.org")
    assert {e["idp"] for e in events["events"]} == {"testop"}
    table = await asyncio.to_thread(run_cli, "audit", "people", "--all-idps", "--email",
                                    "alice@example.org", *c)  # fmt: skip
    rogue_line = next(line for line in table.stdout.splitlines() if " rogue " in line)
    assert "foreign" in rogue_line


async def test_the_web_page_shows_alice_only_until_every_idp_is_asked_for(
    gw: GatewayUnderTest, op: TestOP, rogue_op: TestOP, chromium: Browser
) -> None:
    """The people view in Chromium: by e-mail, Alice's IdP only, with the trust column; the
    "Every IdP" box adds the rogue's row, marked foreign and outside."""
    await both_alices(gw, op, rogue_op)
    page = await chromium.new_page()
    await page.goto(f"{gw.url}/admin/")
    await page.keyboard.press("Tab")  # the token field is the first stop
    await page.keyboard.type(TOKEN)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await page.goto(f"{gw.url}/admin/?view=people&email=alice@example.org")
    rows = page.locator("#people tbody tr")
    assert await rows.count() == 1
    assert await rows.nth(0).get_attribute("data-idp") == "testop"
    assert await rows.nth(0).locator("td.trust").inner_text() == "owner"
    await page.check("#f-all_idps")
    async with page.expect_navigation():
        await page.click("#apply")
    assert "all_idps=true" in page.url
    rogue = page.locator('#people tbody tr[data-idp="rogue"]')
    assert await rogue.locator("td.trust").inner_text() == "foreign"
    assert "(outside)" in await rogue.locator("td").first.inner_text()
    assert await page.is_checked("#f-all_idps")


@pytest.mark.parametrize(
    "username", ["alice", "dot", "cyr"], ids=["same-address", "trailing-dot", "cyrillic-letter"]
)
async def test_the_rogue_cannot_display_alices_address_or_name(
    gw: GatewayUnderTest, rogue_op: TestOP, username: str
) -> None:
    """No e-mail, no Gravatar of the address, and the name carries the IdP's label (the
    rogue is not marked external: an IdP that owns no domain while another does is not the
    organisation's)."""
    location = await sign_in(gw, rogue_op, username, "rogue")
    user = jwt.decode(token_from(location), options={"verify_signature": False})["context"]["user"]
    assert "email" not in user
    email = next(a["claims"]["email"] for a in ROGUE_ACCOUNTS if a["username"] == username)
    assert user.get("avatar") not in (gravatar_url(email, None), gravatar_url(email[:-1], None))
    assert user["name"] == "Alice Corp (Rogue)"


def idp(id_: str, domains: tuple[str, ...] = (), external: bool | None = None) -> IdP:
    return IdP(
        id=id_,
        adapter="generic",
        issuer=f"https://{id_}.example",
        client_id="c",
        client_secret="x",  # type: ignore[arg-type]
        email_domains=domains,
        external=external,
    )


@pytest.mark.parametrize(
    ("who", "email", "verified", "state"),
    [
        ("corp", "alice@example.org", False, "owner"),
        ("corp", "alice@Example.ORG.", True, "owner"),
        ("other", "alice@example.org", True, "foreign"),
        ("other", "alice@example.org.", True, "foreign"),
        ("other", "alice@EXAMPLE.org", True, "foreign"),
        ("other", CYRILLIC, True, "lookalike"),
        ("other", "alice@xn--exmple-4nf.org", True, "lookalike"),
        ("other", "val@outside.example", True, "verified"),
        ("other", "val@outside.example", False, "unverified"),
        ("other", "val@outside.example", "true", "unverified"),  # a string is not true
        ("other", "no-at-sign", True, "none"),
        ("other", None, True, "none"),
    ],
)
async def test_email_trust_table(who: str, email: str | None, verified: Any, state: str) -> None:
    trust = IdpTrust.of([idp("corp", ("example.org",)), idp("other")])
    assert trust.email_state(who, email, verified) == state


async def test_a_domain_owned_by_two_idps_is_each_ones() -> None:
    trust = IdpTrust.of([idp("kc", ("example.org",)), idp("gws", ("example.org",)), idp("x")])
    assert trust.email_state("kc", "a@example.org", True) == "owner"
    assert trust.email_state("gws", "a@example.org", False) == "owner"
    assert trust.email_state("x", "a@example.org", True) == "foreign"
    assert trust.email_speakers("A@Example.org.") == (["gws", "kc"], False)


async def test_which_idps_are_the_organisations() -> None:
    assert IdpTrust.of([idp("solo")]).organisation == {"solo"}
    assert IdpTrust.of([idp("a"), idp("b")]).organisation == {"a", "b"}
    owning = IdpTrust.of([idp("corp", ("example.org",)), idp("other"), idp("ok", external=False)])
    assert owning.organisation == {"corp", "ok"}
    assert IdpTrust.of([idp("corp", ("example.org",), external=True)]).organisation == set()
    alice = Identity("other", "https://other.example", "s", "alice", "Alice Corp")
    assert owning.shown_name(alice.idp, alice.name) == "Alice Corp (other)"
    assert owning.shown_name("corp", "Alice Example") == "Alice Example"
