"""``/admin/audit`` and ``/admin/audit/stats`` over HTTP against a known data set."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest
import pytest_asyncio

from gateway.store import Store
from gateway.store import audit_query as aq
from tests.support import auditdata
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

TOKEN = "admin-token-for-tests-0123456789"
N = 400
# plus 20 events at one and the same millisecond: pages must split ties correctly
TIES = list(auditdata.documents(20, auditdata.START + timedelta(hours=1), timedelta(0), N))
DATA = list(auditdata.documents(N)) + TIES


DATA_IDS = frozenset(d["_id"] for d in DATA)


@pytest_asyncio.fixture(scope="module")
async def shared_admin_gw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    """One gateway and one data set for the module (the data is never changed, only added to)."""
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    admin = {"tokens": [{"name": "ops", "sha256": digest}]}
    async with start_gateway(op, mongo_uri, admin=admin) as gw:
        # loaded over a client of its own: 420 events with every audit index in place can
        # take more than the gateway's 2 s socket timeout on a busy machine (a retried
        # insert_many then fails on duplicate ids)
        loader = Store.connect(mongo_uri, gw.store.db.name, 60)
        try:
            await loader.audit.collection.insert_many([dict(d) for d in DATA])
        finally:
            await loader.close()
        yield gw


@pytest_asyncio.fixture
async def admin_gw(shared_admin_gw: GatewayUnderTest) -> GatewayUnderTest:
    """The module's gateway with exactly ``DATA`` in its audit log: what earlier tests added
    (their events, their requests' ``admin_query`` events) is removed first."""
    gw = shared_admin_gw
    assert await gw.store.audit.flush()
    collection = gw.store.audit.collection
    stored = [d["_id"] async for d in collection.find({}, {"_id": 1})]
    added = sorted(set(stored) - DATA_IDS)
    if added:  # ($nin over the data set's ids is much slower on the embedded server)
        await collection.delete_many({"_id": {"$in": added}})
    assert len(stored) - len(added) == len(DATA)
    return gw


async def get(gw: GatewayUnderTest, path: str = "/admin/audit", **params: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(
            f"{gw.url}{path}", params=params, headers={"Authorization": f"Bearer {TOKEN}"}
        )


def ids(rows: list[dict]) -> list[str]:
    return [r["_id"] for r in rows]


def newest_first(docs: list[dict]) -> list[dict]:
    return sorted(docs, key=lambda d: (d["time"], d["_id"]), reverse=True)


def iso(i: int) -> str:
    return DATA[i]["time"].isoformat()


@pytest.mark.parametrize(
    ("params", "predicate"),
    [
        ({"event": "login_failed"}, lambda d: d["event"] == "login_failed"),
        (
            {"event": "flow_started,token_minted"},
            lambda d: d["event"] in ("flow_started", "token_minted"),
        ),
        ({"outcome": "failure"}, lambda d: d["outcome"] == "failure"),
        ({"idp": "social"}, lambda d: d["idp"] == "social"),
        ({"subject": "user3-sub"}, lambda d: d.get("subject") == "user3-sub"),
        ({"email": "USER4@example.ORG"}, lambda d: d.get("email") == "user4@example.org"),
        ({"room": "Retro"}, lambda d: d["room"] == "retro"),
        ({"tenant": "acme"}, lambda d: d.get("tenant") == "acme"),
        ({"client_ip": "10.0.1.4"}, lambda d: d["client_ip"] == "10.0.1.4"),
        ({"reason": "policy_denied"}, lambda d: d.get("reason") == "policy_denied"),
        (
            {"since": iso(100), "until": iso(150)},
            lambda d: DATA[100]["time"] <= d["time"] < DATA[150]["time"],
        ),
        (
            {"idp": "corp", "outcome": "success", "room": "standup"},
            lambda d: d["idp"] == "corp" and d["outcome"] == "success" and d["room"] == "standup",
        ),
    ],
    ids=[
        "event",
        "events",
        "outcome",
        "idp",
        "subject",
        "email-any-case",
        "room-any-case",
        "tenant",
        "client-ip",
        "reason",
        "time-range",
        "combined",
    ],
)
async def test_filters_match_the_data_set(admin_gw: GatewayUnderTest, params, predicate) -> None:
    response = await get(admin_gw, **params, limit="1000")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = newest_first([d for d in DATA if predicate(d)])
    assert expected, "the data set must exercise this filter"
    assert ids(body["events"]) == ids(expected)
    assert body["next_cursor"] is None


async def test_pages_stay_correct_while_events_arrive(admin_gw: GatewayUnderTest) -> None:
    collection = admin_gw.store.audit.collection
    later = auditdata.START + timedelta(days=365)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "37", **({"cursor": cursor} if cursor else {})}
        body = (await get(admin_gw, **params)).json()
        seen += ids(body["events"])
        # newer events arrive between pages; also one exactly at the last event's time
        await collection.insert_many(
            list(auditdata.documents(3, start=later, first=1000 + 10 * pages))
        )
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids(newest_first(DATA))
    assert pages == -(-len(DATA) // 37)
    # oldest first: new events land after the cursor and appear exactly once
    seen_asc: list[str] = []
    cursor = None
    extra = list(auditdata.documents(5, start=later + timedelta(days=1), first=9000))
    while True:
        params = {"limit": "150", "order": "asc", **({"cursor": cursor} if cursor else {})}
        body = (await get(admin_gw, **params)).json()
        seen_asc += ids(body["events"])
        if extra:
            await collection.insert_many(extra)
            extra = []
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen_asc) == len(set(seen_asc))
    # every data event, including the 5 added mid-way (admin_query events come and go)
    data_ids = [d["_id"] async for d in collection.find({"event": {"$ne": "admin_query"}})]
    assert len(data_ids) == len(DATA) + 3 * pages + 5
    assert set(data_ids) <= set(seen_asc)


async def test_stats_match_the_data_set(admin_gw: GatewayUnderTest) -> None:
    since, until = DATA[0]["time"], DATA[300]["time"]
    subset = [d for d in DATA if since <= d["time"] < until]
    response = await get(
        admin_gw, "/admin/audit/stats", since=since.isoformat(), until=until.isoformat()
    )
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["total"] == len(subset) == 320
    assert stats["per_outcome"] == dict(Counter(d["outcome"] for d in subset))
    assert stats["per_idp"] == dict(Counter(d["idp"] for d in subset))
    assert stats["per_event"] == dict(Counter(d["event"] for d in subset))
    days = Counter(d["time"].strftime("%Y-%m-%d") for d in subset)
    assert stats["per_bucket"] == [{"time": k, "count": v} for k, v in sorted(days.items())]
    reasons = Counter(d["reason"] for d in subset if d["outcome"] == "failure")
    assert {r["reason"]: r["count"] for r in stats["top_failure_reasons"]} == dict(reasons)
    rooms = Counter(d["room"] for d in subset)
    ranked = sorted(rooms.items(), key=lambda kv: (-kv[1], kv[0]))  # ties: by name
    assert stats["top_rooms"] == [{"room": r, "count": n} for r, n in ranked]
    users = {(d["idp"], d["subject"]) for d in subset if "subject" in d}
    assert stats["distinct_users"] == len(users)
    hourly = (await get(admin_gw, "/admin/audit/stats", bucket="hour", idp="corp")).json()
    hours = Counter(d["time"].strftime("%Y-%m-%dT%H:00Z") for d in DATA if d["idp"] == "corp")
    assert hourly["per_bucket"] == [{"time": k, "count": v} for k, v in sorted(hours.items())]


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
async def test_exports_stream_every_matching_event(admin_gw: GatewayUnderTest, fmt: str) -> None:
    await admin_gw.store.audit.collection.insert_one(
        auditdata.AuditLog(None).prepare(  # type: ignore[arg-type]
            {
                "event": "flow_started",
                "outcome": "success",
                "user_agent": "=HYPERLINK(1)",
                "time": auditdata.START - timedelta(days=1),
            }
        )
    )
    response = await get(admin_gw, format=fmt, outcome="success,info")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        "application/x-ndjson" if fmt == "ndjson" else "text/csv"
    )
    expected = sorted(
        (d for d in DATA if d["outcome"] == "success"), key=lambda d: (d["time"], d["_id"])
    )
    if fmt == "ndjson":
        rows = [json.loads(line) for line in response.text.splitlines()]
    else:
        rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows[0]["user_agent"] == ("=HYPERLINK(1)" if fmt == "ndjson" else "'=HYPERLINK(1)")
    assert [r["_id"] for r in rows[1:]] == ids(expected)
    assert rows[1]["time"].endswith("Z")


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"since": "the day before"}, "since"),
        ({"since": "2025-03-02", "until": "2025-03-01"}, "until"),
        ({"outcome": "maybe"}, "outcome"),
        ({"reason": "no_such_reason"}, "reason"),
        ({"event": "Bad Event"}, "event"),
        ({"client_ip": "10.0.0.300"}, "client_ip"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"format": "xml"}, "format"),
        ({"colour": "red"}, "colour"),
        ({"room": ""}, "room"),
        ({"event": "token_mintd"}, "event"),
        ({"event": "token_minted,login_faild"}, "event"),
        ({"idp": "crop"}, "idp"),
        ({"until": "999999d"}, "until"),
        ({"linked": "maybe"}, "linked"),
        ({"linked": "true"}, "linked"),  # needs a filter naming the person
        ({"exclude_event": "admin_qery"}, "exclude_event"),
        ({"tz": "Berlin"}, "tz"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, dict) else v,
)
async def test_bad_filter_values_get_400_naming_the_parameter(
    admin_gw: GatewayUnderTest, params: dict, parameter: str
) -> None:
    response = await get(admin_gw, **params)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_parameter" and body["parameter"] == parameter
    assert body["message"]


async def test_a_cursor_is_tied_to_its_order(admin_gw: GatewayUnderTest) -> None:
    cursor = (await get(admin_gw, limit="5")).json()["next_cursor"]
    response = await get(admin_gw, limit="5", order="asc", cursor=cursor)
    assert response.status_code == 400 and response.json()["parameter"] == "cursor"
    stats = await get(admin_gw, "/admin/audit/stats", bucket="week")
    assert stats.status_code == 400 and stats.json()["parameter"] == "bucket"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", f"Basic {TOKEN}", "Bearer wrong-token", f"Bearer {TOKEN}x"],
    ids=["none", "empty", "no-token", "basic", "wrong", "suffixed"],
)
@pytest.mark.parametrize("path", ["/admin/audit", "/admin/audit/stats"])
async def test_missing_or_wrong_admin_tokens_get_401(
    admin_gw: GatewayUnderTest, authorization: str | None, path: str
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{admin_gw.url}{path}", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert response.json()["error"] == "admin_unauthorized"
    await admin_gw.store.audit.flush()
    refused = await admin_gw.store.audit.collection.find_one({"event": "admin_query"})
    assert refused is not None
    assert refused["outcome"] == "failure" and refused["reason"] == "admin_unauthorized"
    assert "admin" not in refused
    if authorization:
        assert authorization.split()[-1] not in json.dumps(refused, default=str)


async def test_admin_api_is_closed_without_configured_tokens(
    gw: GatewayUnderTest,
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{gw.url}/admin/audit", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 401


async def test_every_admin_request_is_audited(admin_gw: GatewayUnderTest) -> None:
    await get(admin_gw, room="retro", limit="3")
    await get(admin_gw, "/admin/audit/stats")
    await get(admin_gw, outcome="nope")
    await admin_gw.store.audit.flush()
    cursor = admin_gw.store.audit.collection.find({"event": "admin_query"}, sort=[("time", 1)])
    events = [d async for d in cursor]
    assert [(e["outcome"], e["path"]) for e in events] == [
        ("success", "/admin/audit"),
        ("success", "/admin/audit/stats"),
        ("failure", "/admin/audit"),
    ]
    assert events[0]["admin"] == "ops"
    assert events[0]["query"] == {"room": "retro", "limit": "3"} and events[0]["count"] == 3
    assert events[2]["reason"] == "bad_request"
    assert TOKEN not in json.dumps(events, default=str)


# ---- issue 15 ------------------------------------------------------------------------------


async def test_oldest_first_paging_ends_while_events_keep_arriving(
    admin_gw: GatewayUnderTest,
) -> None:
    """The snapshot: events stored after the first page are not part of this paging."""
    collection = admin_gw.store.audit.collection
    seen: list[str] = []
    cursor = None
    pages = 0
    arrived: list[str] = []
    while pages < 50:
        params = {"limit": "40", "order": "asc", "event": "login_failed,token_minted"}
        body = (await get(admin_gw, **params, **({"cursor": cursor} if cursor else {}))).json()
        seen += ids(body["events"])
        new = list(auditdata.documents(5, admin_gw.gateway.now(), timedelta(0), 5000 + 5 * pages))
        await collection.insert_many(new)
        arrived += [d["_id"] for d in new if d["event"] in ("login_failed", "token_minted")]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    expected = [d for d in DATA if d["event"] in ("login_failed", "token_minted")]
    assert seen == ids(sorted(expected, key=lambda d: (d["time"], d["_id"])))
    assert arrived and not set(arrived) & set(seen)
    # a new query sees them
    again = await get(admin_gw, order="asc", limit="1000", event="login_failed,token_minted")
    assert set(arrived) <= set(ids(again.json()["events"]))


async def test_since_equal_to_an_event_time_under_a_field_filter(
    admin_gw: GatewayUnderTest,
) -> None:
    minted = [d for d in DATA if d["event"] == "token_minted"]
    for bound in (minted[0]["time"], TIES[3]["time"], max(d["time"] for d in minted)):
        expected = [d for d in minted if d["time"] >= bound]
        for order in ("asc", "desc"):
            params = {"event": "token_minted", "since": bound.isoformat(), "order": order}
            body = (await get(admin_gw, limit="1000", **params)).json()
            asc = sorted(expected, key=lambda d: (d["time"], d["_id"]))
            assert ids(body["events"]) == ids(asc if order == "asc" else asc[::-1])


async def test_far_past_bounds_answer_fast(admin_gw: GatewayUnderTest) -> None:
    for since in ("999999d", "0001-01-01"):
        response = await get(admin_gw, since=since, limit="1")
        assert response.status_code == 200, response.text
        assert len(response.json()["events"]) == 1
        assert response.elapsed.total_seconds() < 2


async def test_an_unencoded_plus_offset_and_a_trailing_slash(admin_gw: GatewayUnderTest) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(
            # "+" left unencoded: the server sees a space
            f"{admin_gw.url}/admin/audit/?since=2025-03-01T02:00:00+01:00&order=asc&limit=2",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    first = [d for d in DATA if d["time"] >= auditdata.START + timedelta(hours=1)]
    assert (
        ids(response.json()["events"])
        == ids(sorted(first, key=lambda d: (d["time"], d["_id"])))[:2]
    )
    stats = await get(admin_gw, "/admin/audit/stats/")
    assert stats.status_code == 200


async def test_more_pages_are_announced(admin_gw: GatewayUnderTest) -> None:
    response = await get(admin_gw, limit="5", room="retro")
    cursor = response.json()["next_cursor"]
    assert cursor
    link = response.headers["link"]
    assert link.endswith('; rel="next"') and f"cursor={cursor}" in link and "room=retro" in link
    last = await get(admin_gw, limit="1000", room="retro")
    assert "link" not in last.headers


async def test_csv_export_is_readable_in_a_spreadsheet(admin_gw: GatewayUnderTest) -> None:
    await get(admin_gw, room="retro", limit="2")
    await admin_gw.store.audit.collection.insert_one(
        auditdata.AuditLog(None).prepare(  # type: ignore[arg-type]
            {
                "event": "flow_started",
                "outcome": "success",
                "user_agent": "-curl/8.5",
                "time": auditdata.START - timedelta(days=2),
            }
        )
    )
    await admin_gw.store.audit.flush()
    response = await get(admin_gw, format="csv", since="2025-02-01")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows[0]["user_agent"] == "-curl/8.5"
    verified = {r["email_verified"] for r in rows if r["email_verified"]}
    assert verified == {"true", "false"}
    queried = [r for r in rows if r["event"] == "admin_query"]
    assert queried[0]["admin"] == "ops" and queried[0]["path"] == "/admin/audit"
    assert json.loads(queried[0]["query"]) == {"room": "retro", "limit": "2"}


async def test_people_for_a_room_and_a_day(admin_gw: GatewayUnderTest) -> None:
    """Who joined room X that day: names, e-mails, IdP, first and last seen, in one call."""
    day, next_day = "2025-03-01", "2025-03-02"
    response = await get(
        admin_gw,
        "/admin/audit/people",
        room="sales",
        since=day,
        until=next_day,
        event="token_minted",
        tz="Europe/Berlin",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    lo = datetime(2025, 3, 1, tzinfo=berlin)
    hi = datetime(2025, 3, 2, tzinfo=berlin)
    joined = [
        d
        for d in DATA
        if d["room"] == "sales" and d["event"] == "token_minted" and lo <= d["time"] < hi
    ]
    persons = {(d["idp"], d["subject"]) for d in joined}
    assert joined and body["count"] == len(persons)
    first = body["people"][0]
    mine = sorted(
        (d for d in joined if d["subject"] == first["subject"] and d["idp"] == first["idp"]),
        key=lambda d: d["time"],
    )
    assert first["name"] == mine[0]["name"] and first["email"] == mine[0]["email"]
    assert first["first_seen"] == aq.iso(mine[0]["time"], berlin)
    assert first["last_seen"] == aq.iso(mine[-1]["time"], berlin)
    assert first["first_seen"].endswith("+01:00")
    assert first["events"] == len(mine)


async def test_stats_per_idp_per_day_without_admin_queries(admin_gw: GatewayUnderTest) -> None:
    await get(admin_gw, limit="1")  # an admin_query event, to be left out
    await admin_gw.store.audit.flush()
    body = (
        await get(admin_gw, "/admin/audit/stats", by="idp,day", exclude_event="admin_query")
    ).json()
    cells = Counter((d["idp"], d["time"].strftime("%Y-%m-%d")) for d in DATA)
    assert body["grid"] == [
        {"idp": idp, "day": day, "count": n} for (idp, day), n in sorted(cells.items())
    ]
    assert body["total"] == len(DATA)
    reasons = (
        await get(admin_gw, "/admin/audit/stats", by="reason,outcome", exclude_event="admin_query")
    ).json()["grid"]
    expected = Counter((d.get("reason"), d["outcome"]) for d in DATA)
    assert {(r["reason"], r["outcome"]): r["count"] for r in reasons} == dict(expected)


async def test_times_in_a_time_zone(admin_gw: GatewayUnderTest) -> None:
    body = (await get(admin_gw, tz="Europe/Berlin", order="asc", limit="1")).json()
    assert body["events"][0]["time"].endswith("+01:00")
    assert body["events"][0]["_id"] == ids(sorted(DATA, key=lambda d: (d["time"], d["_id"])))[0]
    bad = await get(admin_gw, tz="Nowhere/Land")
    assert bad.status_code == 400 and bad.json()["parameter"] == "tz"
