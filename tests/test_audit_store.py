"""The audit write path: spool file, replay, idempotent ids, flush, indexes, retention.

The spool tests use real files; the AuditLog tests use the real MongoDB-wire server (or a
dead address for an outage), never a fake collection.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.config import Audit
from gateway.store import Store
from gateway.store.audit import INDEXED_FIELDS, RETENTION_INDEX, AuditLog
from gateway.store.spool import Spool, SpoolFull

DEAD = "mongodb://127.0.0.1:9/"


def doc(i: int) -> dict:
    return AuditLog(None).prepare(  # type: ignore[arg-type]
        {"event": "flow_started", "outcome": "success", "room": f"R{i}", "time": at(i)}
    )


def at(i: int) -> datetime:
    return datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i)


# ---- the spool file ------------------------------------------------------------------------


def test_spool_appends_replays_in_order_and_truncates(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append([doc(0), doc(1)])
    spool.append([doc(2)])
    assert spool.depth == 3
    batch, end, lines = spool.read_batch(2)
    assert [d["room"] for d in batch] == ["r0", "r1"] and lines == 2
    assert batch[0]["time"] == at(0)  # datetimes survive the file
    spool.commit(end, lines)
    assert spool.depth == 1
    rest, end, lines = spool.read_batch(10)
    assert [d["room"] for d in rest] == ["r2"]
    spool.commit(end, lines)
    assert spool.depth == 0 and spool.path is not None
    assert spool.path.stat().st_size == 0


def test_spool_survives_a_restart_mid_replay_and_ignores_a_torn_line(tmp_path: Path) -> None:
    first = Spool(tmp_path, 1 << 20)
    first.append([doc(0), doc(1), doc(2)])
    _, end, lines = first.read_batch(1)
    first.commit(end, lines)
    path = first.path
    assert path is not None
    with path.open("ab") as f:
        f.write(b'{"_id": "torn')  # a crash in the middle of a write
    first.close()
    second = Spool(tmp_path, 1 << 20)
    second.open()
    assert second.path == path  # the orphaned file is adopted
    assert second.depth == 2
    batch, _, _ = second.read_batch(10)
    assert [d["room"] for d in batch] == ["r1", "r2"]


def test_two_processes_get_two_spool_files(tmp_path: Path) -> None:
    a, b = Spool(tmp_path, 1 << 20), Spool(tmp_path, 1 << 20)
    a.open()
    b.open()
    assert a.path != b.path
    a.close()
    b.close()


def test_full_spool_refuses_with_a_clear_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 4096)
    with pytest.raises(SpoolFull, match=r"is full .* audit.spool_max_bytes"):
        for i in range(100):
            spool.append([doc(i)])
    assert 0 < spool.depth < 100


# ---- AuditLog against a real server ----------------------------------------------------------


@pytest_asyncio.fixture
async def store(mongo_uri: str, db_name: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = Store.connect(mongo_uri, db_name, 2)
    s.audit.configure(Audit(spool_dir=str(tmp_path / "spool"), replay_interval_seconds=0.2))
    try:
        yield s
    finally:
        await s.audit.close()
        await s.client.drop_database(db_name)
        await s.close()


@pytest.mark.asyncio
async def test_concurrent_writes_are_batched_and_all_stored(store: Store) -> None:
    results = await asyncio.gather(
        *(store.audit.write({"event": "flow_started", "outcome": "success"}) for _ in range(300))
    )
    assert all(results)
    assert await store.audit.collection.count_documents({}) == 300
    assert store.audit.write_failures == 0 and store.audit.queued == 0


@pytest.mark.asyncio
async def test_leftover_spool_is_replayed_at_start_without_duplicates(
    store: Store, tmp_path: Path
) -> None:
    already = doc(0)
    await store.audit.collection.insert_one(already)  # landed before a client-side timeout
    left = Spool(tmp_path / "spool", 1 << 20)
    left.append([already, doc(1), doc(2)])
    left.close()
    await store.audit.start()
    assert await store.audit.flush(10)
    stored = await store.audit.collection.find({}, sort=[("time", 1)]).to_list()
    assert [d["room"] for d in stored] == ["r0", "r1", "r2"]
    assert store.audit.spool_depth == 0 and store.audit.replayed == 3


@pytest.mark.asyncio
async def test_dead_store_spools_within_the_bound_and_close_keeps_the_queue(
    tmp_path: Path,
) -> None:
    dead = Store.connect(DEAD, "x", 5)
    settings = Audit(spool_dir=str(tmp_path), write_timeout_seconds=0.2, replay_interval_seconds=60)
    dead.audit.configure(settings)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await dead.audit.write({"event": "flow_started", "outcome": "success"})
    assert await dead.audit.write({"event": "login_failed", "outcome": "failure"})
    assert loop.time() - began < 2  # one timed-out insert, then straight to the spool
    assert dead.audit.spool_depth == 2 and dead.audit.write_failures == 1
    await dead.close()
    reopened = Spool(tmp_path, 1 << 20)
    reopened.open()
    assert reopened.depth == 2


@pytest.mark.asyncio
async def test_full_spool_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    dead = Store.connect(DEAD, "x", 5)
    dead.audit.configure(
        Audit(spool_dir=str(tmp_path), spool_max_bytes=4096, write_timeout_seconds=0.1)
    )
    results = [
        await dead.audit.write({"event": "flow_started", "outcome": "success", "detail": "x" * 400})
        for _ in range(20)
    ]
    assert results[0] is True and results[-1] is False
    assert dead.audit.dropped > 0
    assert dead.audit.spool_depth + dead.audit.dropped == 20
    await dead.close()


@pytest.mark.asyncio
async def test_indexes_back_every_filter_and_retention_is_configurable(store: Store) -> None:
    await store.audit.ensure_indexes()
    info = await store.audit.collection.index_information()
    for field in INDEXED_FIELDS:
        assert [k for k, _ in info[f"{field}_time_id"]["key"]] == [field, "time", "_id"]
    assert RETENTION_INDEX not in info
    store.audit.retention_days = 30
    await store.audit.ensure_indexes()
    info = await store.audit.collection.index_information()
    assert info[RETENTION_INDEX]["expireAfterSeconds"] == 30 * 86400
    store.audit.retention_days = 7
    await store.audit.ensure_indexes()
    info = await store.audit.collection.index_information()
    assert info[RETENTION_INDEX]["expireAfterSeconds"] == 7 * 86400
    store.audit.retention_days = None
    await store.audit.ensure_indexes()
    assert RETENTION_INDEX not in await store.audit.collection.index_information()


@pytest.mark.asyncio
async def test_secret_looking_fields_are_dropped(store: Store) -> None:
    secret = secrets.token_urlsafe(16)
    await store.audit.write({"event": "x", "outcome": "info", "code": secret, "id_token": secret})
    stored = await store.audit.collection.find_one({})
    assert stored is not None and "code" not in stored and "id_token" not in stored
