"""Session administration through the real flow: list a person's sessions, end them from the
admin API and the CLI, and the next room request goes back to the IdP."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from gateway import cli
from tests.support.gateway import JITSI_BASE, GatewayUnderTest, start_gateway
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

TOKEN = "admin-token-for-session-tests-0123"


@pytest_asyncio.fixture
async def admin_gw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    admin = {"tokens": [{"name": "helpdesk", "sha256": digest}]}
    async with start_gateway(op, mongo_uri, admin=admin) as gw:
        yield gw


async def admin(
    gw: GatewayUnderTest, method: str, token: str | None = TOKEN, **params: str
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.request(
            method, f"{gw.url}/admin/sessions", params=params, headers=headers
        )


async def signed_in(gw: GatewayUnderTest, op: TestOP, username: str) -> httpx.AsyncClient:
    browser = httpx.AsyncClient(follow_redirects=False, timeout=15.0)
    response = await gw.sign_in(browser, op, username=username, password=f"{username}-pw")
    assert response.headers["location"].startswith(f"{JITSI_BASE}/standup?jwt=")
    return browser


async def next_room_request(gw: GatewayUnderTest, browser: httpx.AsyncClient) -> str:
    """Where a room request sends this browser: Jitsi (live session) or the IdP."""
    response = await browser.get(f"{gw.url}/oidc/auth", params={"room": "next"})
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    if location.startswith("/oidc/tokenize"):
        response = await browser.get(f"{gw.url}{location}")
        location = response.headers["location"]
    return location


async def audit_events(gw: GatewayUnderTest, event: str) -> list[dict]:
    await gw.store.audit.flush()
    return [d async for d in gw.store.audit.collection.find({"event": event}, sort=[("_id", 1)])]


async def run_cli(gw: GatewayUnderTest, mongo_uri: str, *argv: str) -> int:
    """``jitsi-oidc-gateway sessions ...`` in-process (its own event loop, in a thread)."""
    full = ["sessions", *argv, "--mongodb-uri", mongo_uri]
    full += ["--database", gw.settings.mongodb.database]
    return await asyncio.to_thread(cli.main, full)


async def test_list_and_end_sessions_from_api_and_cli(
    admin_gw: GatewayUnderTest,
    op: TestOP,
    mongo_uri: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    gw = admin_gw
    monkeypatch.chdir(tmp_path)  # no ./settings.yaml: the CLI uses --mongodb-uri only
    authorize = (await op.discovery())["authorization_endpoint"]
    laptop = await signed_in(gw, op, "alice")
    phone = await signed_in(gw, op, "alice")
    other = await signed_in(gw, op, "carol")
    try:
        # Three ways to name alice, each finds her two sessions and nobody else's.
        listed = []
        for params in (
            {"idp": "testop", "subject": "alice-sub"},
            {"username": "alice"},
            {"email": " ALICE@example.ORG "},
        ):
            response = await admin(gw, "GET", **params)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["count"] == 2
            assert {s["subject"] for s in body["sessions"]} == {"alice-sub"}
            listed.append(sorted(s["session"] for s in body["sessions"]))
        assert listed[0] == listed[1] == listed[2]
        # The session reference is the audit events' session_hash (never the session id).
        logins = await audit_events(gw, "login_succeeded")
        alice_hashes = sorted(e["session_hash"] for e in logins if e["subject"] == "alice-sub")
        assert listed[0] == alice_hashes
        laptop_sid = laptop.cookies.get(gw.settings.cookies.session_name)
        assert laptop_sid is not None and laptop_sid not in json.dumps(body)

        # End one session (the laptop's) over the API.
        laptop_ref = next(
            e["session_hash"]
            for e in logins
            if e["subject"] == "alice-sub" and e["_id"] == min(x["_id"] for x in logins)
        )
        response = await admin(gw, "DELETE", username="alice", session=laptop_ref)
        assert response.status_code == 200, response.text
        assert [s["session"] for s in response.json()["ended"]] == [laptop_ref]
        assert (await next_room_request(gw, laptop)).startswith(authorize)
        assert (await next_room_request(gw, phone)).startswith(f"{JITSI_BASE}/next?jwt=")

        # End the rest from the command line, named by e-mail.
        capsys.readouterr()
        assert await run_cli(gw, mongo_uri, "end", "--email", "alice@example.org") == 0
        out = capsys.readouterr().out
        assert "ended 1 session(s); their next room request signs in again" in out
        assert (await next_room_request(gw, phone)).startswith(authorize)
        assert await run_cli(gw, mongo_uri, "list", "--email", "alice@example.org") == 0
        assert capsys.readouterr().out == "no live sessions match\n"
        # carol was never touched
        assert (await next_room_request(gw, other)).startswith(f"{JITSI_BASE}/next?jwt=")
        carol_args = ("--idp", "testop", "--subject", "carol-sub", "--format", "json")
        assert await run_cli(gw, mongo_uri, "list", *carol_args) == 0
        (carol,) = json.loads(capsys.readouterr().out)["sessions"]
        assert carol["email"] == "carol@partner.example"
    finally:
        for browser in (laptop, phone, other):
            await browser.aclose()

    ended = await audit_events(gw, "admin_session_ended")
    assert [(e["admin"], e["via"], e["subject"]) for e in ended] == [
        ("helpdesk", "api", "alice-sub"),
        (f"cli:{getpass.getuser()}", "cli", "alice-sub"),
    ]
    assert ended[0]["session_hash"] == laptop_ref
    assert ended[0]["selector"] == {"username": "alice", "session": laptop_ref}
    queries = await audit_events(gw, "admin_query")
    assert {q.get("path") for q in queries} >= {"/admin/sessions", "cli:sessions list"}
    assert all(q["admin"] for q in queries)


@pytest.mark.parametrize(
    ("method", "params", "status", "parameter"),
    [
        ("GET", {}, 400, "subject"),
        ("GET", {"subject": "alice-sub"}, 400, "idp"),
        ("GET", {"username": "alice", "email": "a@b"}, 400, "email"),
        ("GET", {"username": "alice", "session": "0" * 32}, 400, "session"),
        ("DELETE", {"username": "alice", "session": "not-hex"}, 400, "session"),
        ("DELETE", {"username": "alice", "sort": "x"}, 400, "sort"),
        ("DELETE", {"username": " "}, 400, "username"),
    ],
    ids=[
        "no-selector",
        "subject-without-idp",
        "two-selectors",
        "session-on-list",
        "bad-session-ref",
        "unknown-parameter",
        "blank",
    ],
)
async def test_bad_selectors_get_a_json_400(
    admin_gw: GatewayUnderTest, method: str, params: dict, status: int, parameter: str
) -> None:
    response = await admin(admin_gw, method, **params)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == "invalid_parameter" and body["parameter"] == parameter


async def test_ending_sessions_needs_an_admin_token(admin_gw: GatewayUnderTest, op: TestOP) -> None:
    browser = await signed_in(admin_gw, op, "alice")
    try:
        for token in (None, "wrong-token"):
            response = await admin(admin_gw, "DELETE", token=token, username="alice")
            assert response.status_code == 401
        assert (await next_room_request(admin_gw, browser)).startswith(f"{JITSI_BASE}/next?jwt=")
    finally:
        await browser.aclose()
    refused = await audit_events(admin_gw, "admin_query")
    assert [e["reason"] for e in refused] == ["admin_unauthorized", "admin_unauthorized"]
    assert await audit_events(admin_gw, "admin_session_ended") == []


async def test_cli_selector_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["sessions", "end", "--subject", "x", "--mongodb-uri", "mongodb://127.0.0.1:1"]
    assert await asyncio.to_thread(cli.main, argv) == 2
    assert capsys.readouterr().err == (
        "error: --idp: required with subject (subjects are unique per IdP)\n"
    )
