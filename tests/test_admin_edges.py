"""Odd admin inputs and the operator's defaults: time zones that are no IANA zone, flags that
are not ``true``/``false``, cursors nested or oversized, a bad page parameter on the web page
(answered before any statistics run), ``linked`` on the web page, the web page's table
without the operators' own page views, the CLI's grid heading for events without an IdP, and
a query past its budget named as such (not "MongoDB unavailable")."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pymongo.errors import NetworkTimeout, ServerSelectionTimeoutError

from gateway.errors import GatewayError
from gateway.store import Store
from gateway.store import audit_query as aq
from tests.support import auditdata
from tests.support.cli import run_cli
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP

TOKEN = "admin-edges-token-0123456789abcdef"
DATA = list(auditdata.documents(120))
NESTED = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=")


@pytest.mark.parametrize("name", ["localtime", "posixrules", "Factory", "Mars/Base", "../etc"])
def test_tz_must_be_an_iana_zone(name: str) -> None:
    with pytest.raises(aq.FilterError) as raised:
        aq.parse_tz(name)
    assert raised.value.parameter == "tz"


def test_iana_zones_pass() -> None:
    assert str(aq.parse_tz("Europe/Berlin")) == "Europe/Berlin"
    assert aq.parse_tz("UTC") is aq.parse_tz(None)


@pytest.mark.parametrize("value", ["yes", "1", "on", "no", "0", "TRUE", "ture"])
def test_flags_are_true_or_false_only(value: str) -> None:
    with pytest.raises(aq.FilterError, match="must be true or false"):
        aq.parse_flag("linked", value)
    assert aq.parse_flag("linked", "true") is True
    assert aq.parse_flag("linked", "false") is aq.parse_flag("linked", None) is False


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param(NESTED, id="nested_5000"),
        pytest.param("A" * 5000, id="long"),
        pytest.param(base64.urlsafe_b64encode(b"[" * 300).decode(), id="nested_short"),
    ],
)
def test_odd_cursors_are_a_400(cursor: str) -> None:
    with pytest.raises(aq.FilterError) as raised:
        aq.decode_cursor(cursor, "desc")
    assert raised.value.parameter == "cursor"


@pytest.mark.asyncio
async def test_a_query_past_its_budget_is_query_timeout_not_store_unavailable() -> None:
    reader = aq.AuditReader(None)  # type: ignore[arg-type]  # the deadline needs no collection
    with pytest.raises(GatewayError) as raised:
        with reader.deadline(0.2):
            await asyncio.sleep(0.25)
            raise NetworkTimeout("timed out")
    assert raised.value.reason == "query_timeout"
    assert raised.value.info.status == 503
    with pytest.raises(GatewayError) as down:
        with reader.deadline(0.2):
            await asyncio.sleep(0.25)
            raise ServerSelectionTimeoutError("no server")
    assert down.value.reason == "store_unavailable"
    with pytest.raises(GatewayError) as early:
        with reader.deadline(30):
            raise NetworkTimeout("timed out")  # long before the budget: the store
    assert early.value.reason == "store_unavailable"


# ---- over HTTP -----------------------------------------------------------------------------


@pytest_asyncio.fixture
async def admin_gw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    admin = {"tokens": [{"name": "ops", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}
    async with start_gateway(op, mongo_uri, admin=admin) as gw:
        await gw.store.audit.collection.insert_many([dict(d) for d in DATA])
        yield gw


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def web_client(gw: GatewayUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in to the web page by its form."""
    async with httpx.AsyncClient(follow_redirects=False) as client:
        page = await client.get(f"{gw.url}/admin/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        data = {"token": TOKEN, "csrf": csrf.group(1)}
        login = await client.post(f"{gw.url}/admin/login", data=data)
        assert login.status_code == 303
        yield client


@pytest.mark.asyncio
async def test_api_refuses_odd_inputs_with_a_400_and_no_uri_in_the_log(
    admin_gw: GatewayUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    caplog.set_level(logging.DEBUG, logger="tornado")
    async with httpx.AsyncClient() as client:
        for params, parameter in (
            ({"cursor": NESTED}, "cursor"),
            ({"email": "user1@example.org", "linked": "yes"}, "linked"),
            ({"tz": "localtime"}, "tz"),
            ({"tz": "posixrules"}, "tz"),
        ):
            answer = await client.get(
                f"{admin_gw.url}/admin/audit", params=params, headers=bearer()
            )
            assert answer.status_code == 400, (params, answer.text)
            assert answer.json()["parameter"] == parameter
    ours = [r for r in caplog.records if r.name.startswith(("gateway", "tornado"))]
    assert ours  # the access log saw the requests
    logged = "\n".join(r.getMessage() for r in ours)
    assert "[[[[" not in logged and NESTED[:40] not in logged


@pytest.mark.asyncio
async def test_web_page_checks_page_parameters_before_any_statistics(
    admin_gw: GatewayUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = admin_gw.store.audit.reader
    calls: list[Any] = []
    real_grid = reader.grid

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return await real_grid(*args, **kwargs)

    monkeypatch.setattr(reader, "grid", counted)
    async with web_client(admin_gw) as client:
        for params in ({"limit": "abc"}, {"cursor": NESTED}, {"limit": "0"}, {"tz": "localtime"}):
            page = await client.get(f"{admin_gw.url}/admin/", params=params)
            assert page.status_code == 400, params
            assert not calls, f"statistics ran before the 400 for {params}"
        assert (await client.get(f"{admin_gw.url}/admin/")).status_code == 200
        assert len(calls) == 1  # the chart's one grid, for a good request


@pytest.mark.asyncio
async def test_web_page_takes_linked_like_the_api(admin_gw: GatewayUnderTest) -> None:
    gw = admin_gw
    flow = "f" * 32
    person = next(d for d in DATA if d.get("email"))
    later = person["time"] + timedelta(milliseconds=1)
    failure = {"time": later, "event": "login_failed", "outcome": "failure", "idp": "corp"}
    await gw.store.audit.collection.update_one(
        {"_id": person["_id"]}, {"$set": {"flow_hash": flow}}
    )
    await gw.store.audit.write(failure | {"reason": "state_reused", "flow_hash": flow})
    await gw.store.audit.flush()
    email = person["email"]
    async with web_client(gw) as client:
        plain = await client.get(f"{gw.url}/admin/", params={"email": email})
        linked = await client.get(f"{gw.url}/admin/", params={"email": email, "linked": "true"})
        bad = await client.get(f"{gw.url}/admin/", params={"email": email, "linked": "yes"})
    assert plain.status_code == linked.status_code == 200, linked.text
    assert 'data-col="reason">state_reused<' not in plain.text
    assert 'data-col="reason">state_reused<' in linked.text
    assert 'name="linked" value="true" checked' in linked.text
    assert bad.status_code == 400 and "linked: must be true or false" in bad.text


@pytest.mark.asyncio
async def test_web_table_leaves_out_admin_page_views_unless_asked(
    admin_gw: GatewayUnderTest,
) -> None:
    gw = admin_gw
    async with web_client(gw) as client:
        for _ in range(3):
            first = await client.get(f"{gw.url}/admin/", params={"limit": "25"})
        own = await client.get(f"{gw.url}/admin/", params={"event": "admin_query"})
    assert first.status_code == own.status_code == 200
    assert 'data-col="event">admin_query<' not in first.text
    assert 'name="exclude_event" value="admin_query"' in first.text  # the form says so
    assert own.text.count('data-col="event">admin_query<') >= 3


def test_cli_grid_names_events_without_an_idp(tmp_path: Path, mongo_uri: str) -> None:
    db = f"jog_edges_{int(time.time() * 1000) % 10**9}"

    async def insert() -> None:
        store = Store.connect(mongo_uri, db, 10)
        docs = [dict(d) for d in DATA[:20]]
        for doc in docs[:5]:
            doc.pop("idp")
        await store.audit.collection.insert_many(docs)
        await store.close()

    async def drop() -> None:
        store = Store.connect(mongo_uri, db, 10)
        await store.client.drop_database(db)
        await store.close()

    asyncio.run(insert())
    try:
        config = auditdata.cli_settings(tmp_path / "settings.yaml", mongo_uri, db)
        args = ("--by", "idp,day", "--since", "2025-01-01", "--exclude-event", "admin_query")
        grid = run_cli("audit", "stats", *args, "-c", str(config))
        assert grid.returncode == 0, grid.stderr
        names = [line.split()[0] for line in grid.stdout.splitlines()[1:]]
        assert "(none)" in names and "None" not in grid.stdout
        flat = run_cli("audit", "stats", "-c", str(config), "--since", "2025-01-01")
        assert "None" not in flat.stdout
    finally:
        asyncio.run(drop())
