"""Grouped point reads: one query in flight, later keys in the next one, never a stale answer.

The first half drives ``GroupedReads`` with a scripted fetch (this module alone); the second
reads real sessions from the MongoDB-wire server, concurrently, and counts the commands."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from adapters.base import Identity
from gateway.errors import GatewayError
from gateway.store import Store
from gateway.store.grouped import GroupedReads
from gateway.store.sessions import IdpLogin

pytestmark = pytest.mark.asyncio


class Table:
    """A dict behind a fetch that can be held open, recording every query's keys."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.queries: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.fail_next = False

    async def fetch(self, keys: list[str]) -> dict[str, str]:
        self.queries.append(keys)
        snapshot = {k: self.rows[k] for k in keys if k in self.rows}  # read when sent
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise GatewayError("store_unavailable", "scripted")
        return snapshot


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_read_alone_is_one_query_of_one_key() -> None:
    table = Table()
    table.rows["a"] = "A"
    reads = GroupedReads(table.fetch)
    assert await reads.get("a") == "A"
    assert await reads.get("missing") is None
    assert table.queries == [["a"], ["missing"]]


async def test_reads_that_arrive_during_a_query_share_the_next_one() -> None:
    table = Table()
    table.rows.update({f"k{i}": f"v{i}" for i in range(10)})
    table.gate = asyncio.Event()
    reads = GroupedReads(table.fetch)
    first = asyncio.ensure_future(reads.get("k0"))
    await settle()
    rest = [asyncio.ensure_future(reads.get(f"k{i}")) for i in range(1, 10)]
    await settle()
    table.gate.set()
    assert await first == "v0"
    assert await asyncio.gather(*rest) == [f"v{i}" for i in range(1, 10)]
    assert table.queries == [["k0"], [f"k{i}" for i in range(1, 10)]]


async def test_a_read_never_rides_on_a_query_sent_before_it_arrived() -> None:
    """A write acknowledged before the read was asked for is seen (no staleness)."""
    table = Table()
    table.rows["s"] = "live"
    table.gate = asyncio.Event()
    reads = GroupedReads(table.fetch)
    early = asyncio.ensure_future(reads.get("s"))
    await settle()  # the query for "s" is out, and read "live"
    del table.rows["s"]  # the session ends (logout, back-channel, admin)
    late = asyncio.ensure_future(reads.get("s"))
    await settle()
    table.gate.set()
    assert await early == "live"
    assert await late is None
    assert table.queries == [["s"], ["s"]]


async def test_one_key_asked_twice_is_sent_once_and_answers_both() -> None:
    table = Table()
    table.rows["a"] = "A"
    table.gate = asyncio.Event()
    reads = GroupedReads(table.fetch)
    blocker = asyncio.ensure_future(reads.get("other"))
    await settle()
    both = [asyncio.ensure_future(reads.get("a")) for _ in range(2)]
    await settle()
    table.gate.set()
    await blocker
    assert await asyncio.gather(*both) == ["A", "A"]
    assert table.queries[1] == ["a"]


async def test_batches_are_capped() -> None:
    table = Table()
    table.gate = asyncio.Event()
    reads = GroupedReads(table.fetch, max_batch=4)
    waiting = [asyncio.ensure_future(reads.get(f"k{i}")) for i in range(11)]
    await settle()
    table.gate.set()
    await asyncio.gather(*waiting)
    assert [len(q) for q in table.queries] == [4, 4, 3]
    with pytest.raises(ValueError):
        GroupedReads(table.fetch, max_batch=0)


async def test_a_failed_query_answers_its_waiters_only() -> None:
    table = Table()
    table.rows.update({"a": "A", "b": "B"})
    table.gate = asyncio.Event()
    table.fail_next = True
    reads = GroupedReads(table.fetch)
    doomed = asyncio.ensure_future(reads.get("a"))
    await settle()
    later = asyncio.ensure_future(reads.get("b"))
    await settle()
    table.gate.set()
    with pytest.raises(GatewayError) as failure:
        await doomed
    assert failure.value.reason == "store_unavailable"
    assert await later == "B"


async def test_a_cancelled_waiter_leaves_the_query_and_the_others_alone() -> None:
    table = Table()
    table.rows.update({"a": "A", "b": "B"})
    table.gate = asyncio.Event()
    reads = GroupedReads(table.fetch)
    blocker = asyncio.ensure_future(reads.get("x"))
    await settle()
    gone = asyncio.ensure_future(reads.get("a"))
    kept = asyncio.ensure_future(reads.get("b"))
    await settle()
    gone.cancel()
    table.gate.set()
    await blocker
    assert await kept == "B"
    assert gone.cancelled()
    assert await reads.get("a") == "A"  # the reader still works afterwards


# ---- sessions on the real server ------------------------------------------------------------


@pytest_asyncio.fixture
async def store(mongo_uri: str, db_name: str) -> AsyncIterator[Store]:
    s = Store.connect(mongo_uri, db_name, 5, durable=False)
    try:
        await s.sessions.ensure_indexes()
        yield s
    finally:
        await s.client.drop_database(db_name)
        await s.close()


def person(i: int) -> IdpLogin:
    identity = Identity(
        idp="kc", issuer="https://idp.example", subject=f"sub-{i}", username=f"u{i}", name=f"U {i}"
    )
    return IdpLogin(identity, subject=f"sub-{i}")


def finds(store: Store) -> int:
    return store.commands.counts.get(("find", "sessions"), 0)


async def test_concurrent_session_reads_share_queries_and_each_gets_its_own(store: Store) -> None:
    now = datetime.now(UTC)
    ids = [secrets.token_urlsafe(32) for _ in range(40)]
    for i, sid in enumerate(ids):
        await store.sessions.create(
            sid, person(i), created_at=now, expires_at=now + timedelta(hours=1)
        )
    before = finds(store)
    records = await asyncio.gather(*(store.sessions.record(sid, now) for sid in ids))
    assert [r.identity.subject if r else None for r in records] == [f"sub-{i}" for i in range(40)]
    sent = finds(store) - before
    assert 2 <= sent <= 3, sent  # one for the first, then batches of at most 32
    before = finds(store)
    assert (await store.sessions.record(ids[0], now)) is not None
    assert finds(store) - before == 1  # alone: one query, at once


async def test_expired_ended_and_unknown_sessions_read_as_none(store: Store) -> None:
    now = datetime.now(UTC)
    live, expired, ended = (secrets.token_urlsafe(32) for _ in range(3))
    for i, sid in enumerate((live, expired, ended)):
        expires_at = now - timedelta(seconds=1) if sid == expired else now + timedelta(hours=1)
        await store.sessions.create(sid, person(i), created_at=now, expires_at=expires_at)
    assert await store.sessions.delete(ended)
    got = await asyncio.gather(
        *(store.sessions.get(sid, now) for sid in (live, expired, ended, "never-issued"))
    )
    assert [g.subject if g else None for g in got] == ["sub-0", None, None, None]
    # the expiry is exclusive, as the old {"$gt": now} filter was
    record = await store.sessions.record(live, now)
    assert record is not None and record.expires_at is not None
    assert await store.sessions.get(live, record.expires_at) is None


async def test_an_unreachable_store_answers_store_unavailable_to_every_reader() -> None:
    dead = Store.connect("mongodb://127.0.0.1:9/?directConnection=true", "x", 0.5)
    try:
        results = await asyncio.gather(
            *(dead.sessions.get(f"s{i}", datetime.now(UTC)) for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, GatewayError) for r in results), results
        assert {r.reason for r in results} == {"store_unavailable"}  # type: ignore[union-attr]
    finally:
        await dead.close()
