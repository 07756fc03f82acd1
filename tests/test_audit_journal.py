"""Audit events stored behind the answer (``audit.wait_for_store: false``, the default): the
request waits for a local journal write, the insert follows, a crash loses nothing.

Real files, the real MongoDB-wire server, a real SIGKILL of a child process, the gateway
over HTTP; the rest of the suite runs with ``wait_for_store: true`` (tests/support).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from gateway.config import Audit
from gateway.store import Store
from gateway.store.journal import Journal, encode, read_records, segment_paths
from gateway.store.spool import Spool
from tests.support.gateway import start_gateway
from tests.support.op import TestOP

REPO = Path(__file__).resolve().parents[1]
TOKEN = "admin-token-for-journal-0123456789"


def event(i: int) -> dict:
    return {"_id": f"{i:06d}", "event": "token_minted", "time": datetime(2026, 1, 1, tzinfo=UTC)}


def record(i: int) -> bytes:
    return encode(event(i))


# ---- the journal file ----------------------------------------------------------------------


def test_a_segment_is_emptied_once_all_its_events_are_stored(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "audit-0.spool")
    journal.open()
    a, b = journal.append(record(1)), journal.append(record(2))
    assert a == b == 0
    assert read_records(journal.paths[0]) == [event(1), event(2)]  # datetimes come back aware
    journal.stored(0, 1)
    assert len(read_records(journal.paths[0])) == 2  # one still pending: kept whole
    journal.stored(0, 1)
    assert journal.paths[0].stat().st_size == 0
    journal.append(record(3))  # appends after a truncation start at offset 0
    assert read_records(journal.paths[0]) == [event(3)]
    journal.close()


def test_steady_load_never_lets_a_segment_grow_without_bound(tmp_path: Path) -> None:
    """Events are always pending (each batch is stored while the next arrives), so neither
    segment is ever idle; rotation still keeps both under the limit plus one batch."""
    journal = Journal(tmp_path / "audit-0.spool", rotate_bytes=2000)
    journal.open()
    in_flight: list[int] = []
    biggest = 0
    for batch in range(200):
        segments = [journal.append(record(batch * 10 + k)) for k in range(10)]
        for segment in in_flight:  # the previous batch is stored now
            journal.stored(segment, 1)
        in_flight = segments
        biggest = max(biggest, *(p.stat().st_size for p in journal.paths))
    assert biggest < 2000 + 10 * len(record(0))
    journal.close()


def test_leftover_is_read_before_open_and_a_torn_record_is_not_an_event(tmp_path: Path) -> None:
    spool_path = tmp_path / "audit-0.spool"
    first, second = segment_paths(spool_path)
    first.write_bytes(record(1) + record(2) + record(9)[:20])  # the last write cut short
    second.write_bytes(record(3))
    journal = Journal(spool_path)
    assert journal.leftover() == [event(1), event(2), event(3)]
    journal.open()
    assert first.stat().st_size == second.stat().st_size == 0
    journal.close()


# ---- AuditLog with the journal, against the real server --------------------------------------


@pytest_asyncio.fixture
async def journaled(mongo_uri: str, db_name: str, tmp_path: Path) -> AsyncIterator[Store]:
    store = Store.connect(mongo_uri, db_name, 2)
    store.audit.configure(Audit(spool_dir=str(tmp_path / "spool"), wait_for_store=False))
    await store.audit.start()
    try:
        yield store
    finally:
        await store.audit.close()
        await store.client.drop_database(db_name)
        await store.close()


@pytest.mark.asyncio
async def test_write_returns_once_journaled_and_the_insert_follows(journaled: Store) -> None:
    audit = journaled.audit
    assert audit.journal is not None
    assert await audit.write({"event": "flow_started", "outcome": "success", "room": "r1"})
    # answered before MongoDB has it: the event is queued and on local disk
    assert audit.queued == 1
    [kept] = read_records(audit.journal.paths[0])
    assert kept["room"] == "r1"
    assert await audit.collection.count_documents({}) == 0
    assert await audit.settle()
    assert await audit.collection.count_documents({"room": "r1"}) == 1
    assert audit.journal.paths[0].stat().st_size == 0  # stored: the journal lets go


@pytest.mark.asyncio
async def test_a_failing_journal_write_falls_back_to_waiting(journaled: Store) -> None:
    audit = journaled.audit
    assert audit.journal is not None
    good = audit.journal._fds
    closed = os.open(os.devnull, os.O_WRONLY)
    os.close(closed)
    audit.journal._fds = [closed, closed]  # every write fails (EBADF), as on a full disk
    try:
        assert await audit.write({"event": "flow_started", "outcome": "success", "room": "r2"})
        # the answer waited for MongoDB instead: stored before write() returned
        assert await audit.collection.count_documents({"room": "r2"}) == 1
    finally:
        audit.journal._fds = good


@pytest.mark.asyncio
async def test_concurrent_answers_share_inserts(journaled: Store) -> None:
    audit = journaled.audit
    await asyncio.gather(
        *(audit.write({"event": "token_minted", "outcome": "success"}) for _ in range(200))
    )
    assert await audit.settle()
    assert await audit.collection.count_documents({}) == 200
    assert audit.write_failures == 0 and audit.queued == 0


@pytest.mark.asyncio
async def test_with_mongodb_down_answers_do_not_wait_and_events_reach_the_spool(
    tmp_path: Path,
) -> None:
    dead = Store.connect("mongodb://127.0.0.1:9/", "x", 5)
    dead.audit.configure(
        Audit(
            spool_dir=str(tmp_path),
            wait_for_store=False,
            write_timeout_seconds=0.2,
            replay_interval_seconds=60,
        )
    )
    await dead.audit.start()
    try:
        journal = dead.audit.journal
        assert journal is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        for i in range(5):
            assert await dead.audit.write({"event": "flow_started", "outcome": "success"})
        assert loop.time() - began < 0.5  # nobody waited for the dead store
        assert len(read_records(journal.paths[0])) == 5
        assert await dead.audit.settle(5)  # the writer gave up on MongoDB: spooled, fsync'd
        assert dead.audit.spool_depth == 5 and dead.audit.write_failures >= 1
        assert journal.paths[0].stat().st_size == 0  # the spool holds them now
    finally:
        await dead.close()


CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from gateway.config import Audit
    from gateway.store import Store

    async def main():
        store = Store.connect(sys.argv[1], sys.argv[2], 2)
        store.audit.configure(Audit(spool_dir=sys.argv[3], wait_for_store=False))
        await store.audit.start()
        for i in range(int(sys.argv[4])):
            assert await store.audit.write(
                {"event": "token_minted", "outcome": "success", "room": f"room{i}"}
            )
        print("answered", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # before the writer task ever ran

    asyncio.run(main())
    """
)


def crash_after_answers(mongo_uri: str, db: str, spool: Path, n: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mongo_uri, db, str(spool), str(n)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "answered"


@pytest.mark.asyncio
async def test_events_answered_before_a_crash_are_stored_after_the_restart(
    mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    await asyncio.to_thread(crash_after_answers, mongo_uri, db_name, spool, 25)
    store = Store.connect(mongo_uri, db_name, 2)
    try:
        assert await store.audit.collection.count_documents({}) == 0  # only on local disk
        store.audit.configure(Audit(spool_dir=str(spool), wait_for_store=False))
        await store.audit.start()
        assert await store.audit.flush(10)
        rooms = {d["room"] async for d in store.audit.collection.find({})}
        assert rooms == {f"room{i}" for i in range(25)}
        assert all(p.stat().st_size == 0 for p in spool.glob("audit-*.journal-*"))
    finally:
        await store.audit.close()
        await store.client.drop_database(db_name)
        await store.close()


@pytest.mark.asyncio
async def test_a_live_process_adopts_the_journal_of_one_that_crashed(
    mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    survivor = Spool(spool, 1 << 20)
    survivor.open()  # holds audit-0: the crashed child journals as audit-1
    await asyncio.to_thread(crash_after_answers, mongo_uri, db_name, spool, 7)
    assert len(read_records(spool / "audit-1.journal-a")) == 7
    assert survivor.adopt_orphans() == [("audit-1.spool", 7)]
    assert survivor.depth == 7
    assert (spool / "audit-1.journal-a").stat().st_size == 0
    survivor.close()


# ---- the gateway ---------------------------------------------------------------------------


@pytest_asyncio.fixture
async def default_gw(op: TestOP, mongo_uri: str) -> AsyncIterator:
    admin = {"tokens": [{"name": "ops", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}
    async with start_gateway(op, mongo_uri, admin=admin, audit={"wait_for_store": False}) as gw:
        yield gw


@pytest.mark.asyncio
async def test_a_sign_in_leaves_the_same_events_and_the_api_shows_them_at_once(
    default_gw, op: TestOP, browser: httpx.AsyncClient
) -> None:
    gw = default_gw
    assert gw.store.audit.journal is not None
    gw.store.audit.linger = 0.5  # the inserts surely trail the answers
    response = await gw.sign_in(browser, op, room="Journaled")
    assert await gw.store.audit.collection.count_documents({"room": "journaled"}) < 3
    assert response.status_code == 302
    async with httpx.AsyncClient(timeout=30) as client:
        body = (
            await client.get(
                f"{gw.url}/admin/audit",
                params={"room": "journaled", "order": "asc"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        ).json()
    assert [(e["event"], e["outcome"]) for e in body["events"]] == [
        ("flow_started", "success"),
        ("login_succeeded", "success"),
        ("token_minted", "success"),
    ]
