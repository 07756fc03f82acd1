"""``linked=true`` for an active person: 12,000 of their events in 30 days among others'.

Each answer is checked against the same question answered in Python over the inserted data,
and one page must come back within a bound far above what it takes now and far below what
one ``$or`` of the person's filter and their flows' and sessions' hashes took on the
embedded store (274-328 s from the CLI; the API gave up at its 120 s deadline).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from pymongo.errors import BulkWriteError

from gateway.store import Store
from gateway.store import audit_query as aq
from gateway.store.audit import AuditLog

pytestmark = pytest.mark.asyncio

START = datetime(2026, 11, 1, tzinfo=UTC)
NOW = START + timedelta(days=30)
EMAIL = "busy@example.org"
PERSON = 12_000  # the person's own events (identity fields set)
OTHERS = 6_600  # other people's, and failures before the ID token in the person's flows
#: a generous bound for a busy 2-core machine; the old query took minutes
BOUND_SECONDS = 60


def build() -> list[dict[str, Any]]:
    """The person signs in ~40 times a day; every 20 events share a session, every 4 a
    browser flow; some flows also hold a failure with no identity (a reused state)."""
    log = AuditLog(None)  # type: ignore[arg-type]  # prepare() needs no collection
    step = (NOW - START) / (PERSON + OTHERS)
    docs: list[dict[str, Any]] = []
    for i in range(PERSON + OTHERS):
        doc: dict[str, Any] = {
            "time": START + step * i,
            "event": "token_minted",
            "outcome": "success",
            "idp": "corp",
            "client_ip": "10.0.0.1",
            "user_agent": "scale/1.0",
            "request_id": f"req{i:08d}",
            "room": f"room{i % 70}",
        }
        if i % 31 == 30:
            doc |= {"event": "login_failed", "outcome": "failure", "reason": "state_reused"}
            doc["flow_hash"] = f"f{(i // 4):031d}"
        elif i % 3 == 2:
            other = i % 500
            doc |= {"email": f"p{other}@example.org", "subject": f"s{other}"}
            doc["session_hash"] = f"o{(i // 60):031d}"
        else:
            doc |= {"email": EMAIL, "subject": "busy", "username": "busy"}
            doc["session_hash"] = f"s{(i // 30):031d}"
            doc["flow_hash"] = f"f{(i // 4):031d}"
        docs.append(log.prepare(doc))
    return docs


DATA = build()


async def insert_all(store: Store, docs: list[dict[str, Any]]) -> None:
    """``insert_many`` that a driver retry of an applied batch cannot fail (duplicates of
    our own ids are already there)."""
    for first in range(0, len(docs), 5000):
        try:
            await store.audit.collection.insert_many(
                [dict(d) for d in docs[first : first + 5000]], ordered=False
            )
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def store(mongo_uri: str) -> AsyncIterator[Store]:
    name = f"jog_linked_{int(time.time() * 1000) % 10**9}"
    s = Store.connect(mongo_uri, name, 30)
    await s.audit.ensure_indexes()
    await insert_all(s, DATA)
    try:
        yield s
    finally:
        await s.client.drop_database(name)
        await s.close()


def expected(order: str) -> list[str]:
    own = [d for d in DATA if d.get("email") == EMAIL]
    flows = {d["flow_hash"] for d in own if d.get("flow_hash")}
    sessions = {d["session_hash"] for d in own if d.get("session_hash")}
    found = [
        d
        for d in DATA
        if d.get("email") == EMAIL
        or d.get("flow_hash") in flows
        or d.get("session_hash") in sessions
    ]
    found.sort(key=lambda d: (d["time"], d["_id"]), reverse=order == "desc")
    return [d["_id"] for d in found]


async def linked_page(store: Store, params: dict[str, str]) -> tuple[list[str], str | None]:
    q = aq.parse_query({"email": EMAIL, **params}, now=NOW, max_limit=10_000)
    q = await store.audit.reader.link(q)
    docs, cursor = await store.audit.reader.page(q)
    return [d["_id"] for d in docs], cursor


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_one_linked_page_of_a_busy_person_is_fast_and_exact(store: Store, order: str) -> None:
    want = expected(order)
    assert len(want) > PERSON  # the linked failures are in it
    began = time.monotonic()
    got, cursor = await linked_page(store, {"since": "30d", "order": order, "limit": "100"})
    elapsed = time.monotonic() - began
    print(f"linked page of 100 ({order}): {elapsed:.2f} s")
    assert got == want[:100]
    assert cursor is not None
    assert elapsed < BOUND_SECONDS, elapsed
    # the next page continues exactly where this one stopped
    more, _ = await linked_page(
        store, {"since": "30d", "order": order, "limit": "100", "cursor": cursor}
    )
    assert more == want[100:200]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_linked_export_streams_every_event_once(store: Store) -> None:
    q = aq.parse_query({"email": EMAIL, "since": "30d", "order": "asc"}, now=NOW)
    q = await store.audit.reader.link(q)
    began = time.monotonic()
    seen = [d["_id"] async for chunk in store.audit.reader.stream(q, 1000) for d in chunk]
    print(f"linked export of {len(seen)}: {time.monotonic() - began:.2f} s")
    assert seen == expected("asc")
