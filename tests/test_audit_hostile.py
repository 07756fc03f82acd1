"""No one event can stop the audit log: every field is bounded, and an event MongoDB refuses
is set aside (log line, counter, refused.ndjson) while the rest is stored. Real store, real
spool files, and the real token service for the unauthenticated request that started it."""

from __future__ import annotations

import decimal
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from gateway.config import Audit
from gateway.store import Store
from gateway.store.audit import REFUSED_FILE
from gateway.store.audit_bounds import MAX_EVENT_TEXT, MAX_ITEMS, MAX_TEXT, bounded
from tests.support.op import TestOP
from tests.support.token_service import token_service_gateway

pytestmark = pytest.mark.asyncio

SSO = "http://127.0.0.1:9/meet/static/sso.html"
BIG = 17 * 1024 * 1024  # past MongoDB's 16 MiB document limit


@pytest_asyncio.fixture
async def store(mongo_uri: str, db_name: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = Store.connect(mongo_uri, db_name, 5)
    s.audit.configure(Audit(spool_dir=str(tmp_path / "spool"), replay_interval_seconds=0.2))
    await s.audit.start()
    try:
        yield s
    finally:
        await s.audit.close()
        await s.client.drop_database(db_name)
        await s.close()


def event(room: str, **extra: object) -> dict[str, object]:
    return {"event": "flow_started", "outcome": "info", "room": room, **extra}


async def rooms(store: Store) -> list[str]:
    return sorted([d["room"] async for d in store.audit.collection.find({}, {"room": 1})])


async def test_a_huge_client_id_at_the_token_endpoint_is_cut_and_the_log_goes_on(
    op: TestOP, mongo_uri: str
) -> None:
    async with token_service_gateway(op, mongo_uri, SSO) as gw:
        async with httpx.AsyncClient(timeout=60.0) as client:
            huge = await client.post(
                f"{gw.url}/oidc/token",
                data={"grant_type": "authorization_code", "client_id": "x" * BIG},
            )
            assert huge.status_code == 400 and huge.json()["error"] == "invalid_request"
            later = await client.post(
                f"{gw.url}/oidc/token",
                content=b"grant_type=%FF%FE&client_id=x",  # not UTF-8
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert later.status_code == 400 and later.json()["error"] == "unsupported_grant_type"
        await gw.store.audit.settle()
        refused = [
            d
            async for d in gw.store.audit.collection.find(
                {"event": "token_refused"}, sort=[("_id", 1)]
            )
        ]
        assert len(refused) == 2  # both reached MongoDB, in order
        assert refused[1]["grant_type"] == "\ufffd\ufffd"
        client_id = refused[0]["client_id"]
        assert client_id.startswith("x" * MAX_TEXT) and client_id.endswith(
            f"[cut {BIG - MAX_TEXT} chars]"
        )
        assert len(client_id) < MAX_TEXT + 40
        assert gw.store.audit.spool_depth == 0 and gw.store.audit.refused == 0


async def test_every_field_is_bounded() -> None:
    doc = bounded(
        {
            "detail": "d" * 5000,
            "groups": [f"g{i}" for i in range(MAX_ITEMS + 50)],
            "extra": {"deep": [[[[[[[["x"]]]]]]]], **{f"k{i}": i for i in range(150)}},
            "big": 2**70,
            "name": "Eve \ud800",
            "many": ["y" * MAX_TEXT] * 150,
        }
    )
    assert doc["detail"] == "d" * MAX_TEXT + f"…[cut {5000 - MAX_TEXT} chars]"
    assert len(doc["groups"]) == MAX_ITEMS + 1 and doc["groups"][-1] == "…[cut 50 items]"
    assert "nested too deep" in json.dumps(doc["extra"]["deep"])
    assert len(doc["extra"]) == 101 and doc["extra"]["…"] == "[cut 51 keys]"
    assert doc["big"] == str(2**70) and doc["name"] == "Eve \ufffd"
    text = json.dumps(doc, ensure_ascii=False)
    assert len(text) < MAX_EVENT_TEXT + 20_000  # the whole event has a text budget
    assert doc["many"][-1] == "…[cut: event too large]"


async def test_an_event_the_store_refuses_is_set_aside_and_its_batch_is_stored(
    store: Store, tmp_path: Path
) -> None:
    audit = store.audit
    audit.enqueue(event("before"))
    audit.enqueue(event("poison", amount=decimal.Decimal("1.5")))  # BSON cannot encode it
    assert await audit.write(event("after"))  # the same batch
    assert await audit.settle(30)
    assert await rooms(store) == ["after", "before"]
    assert audit.refused == 1
    kept = (tmp_path / "spool" / REFUSED_FILE).read_text().splitlines()
    assert len(kept) == 1 and '"poison"' in kept[0]
    # The writer task is alive: later events are stored as before.
    assert await audit.write(event("later"))
    assert await audit.settle(30)
    assert await rooms(store) == ["after", "before", "later"]
    assert audit.spool_depth == 0 and audit.dropped == 0


async def test_a_spooled_event_too_large_for_mongodb_does_not_block_the_replay(
    store: Store,
) -> None:
    """An event too large for MongoDB in the spool (left by an older version): the replay
    sets it aside and copies everything behind it."""
    audit = store.audit
    assert audit.spool is not None
    docs = [audit.prepare(event(f"s{i}")) for i in range(3)]
    huge = audit.prepare(event("huge"))
    huge["detail"] = "z" * BIG  # not prepared: written as an old version would have
    audit.spool.append([docs[0], huge, docs[1], docs[2]])
    while audit.spool_depth:
        await audit.replay_once()
    assert await rooms(store) == ["s0", "s1", "s2"]
    assert audit.refused == 1


async def test_with_mongodb_down_a_poison_event_does_not_take_its_batch_down(
    db_name: str, tmp_path: Path
) -> None:
    s = Store.connect("mongodb://127.0.0.1:9/", db_name, 0.5)
    s.audit.configure(Audit(spool_dir=str(tmp_path / "spool"), write_timeout_seconds=0.5))
    await s.audit.start()
    try:
        audit = s.audit
        audit.enqueue(event("good1"))
        audit.enqueue(event("poison", amount=decimal.Decimal("1.5")))
        assert await audit.write(event("good2"))
        assert await audit.settle(30)
        assert audit.spool_depth == 2 and audit.refused == 1 and audit.dropped == 0
        assert (tmp_path / "spool" / REFUSED_FILE).exists()
    finally:
        await s.audit.close(timeout=1)
        await s.close()


async def test_only_the_event_s_own_faults_set_it_aside() -> None:
    """An event is set aside only for what it is; a store that refuses every write (no
    permission, a stepped-down primary) keeps the batch in the spool to try again."""
    from pymongo.errors import BulkWriteError, DocumentTooLarge, OperationFailure

    from gateway.store.audit import _refuses_event

    def bulk(*codes: int, concern: bool = False) -> BulkWriteError:
        return BulkWriteError(
            {
                "writeErrors": [{"index": i, "code": c} for i, c in enumerate(codes)],
                "writeConcernErrors": [{"code": 64}] if concern else [],
            }
        )

    assert _refuses_event(DocumentTooLarge("too large"))
    assert _refuses_event(bulk(10334)) and _refuses_event(bulk(11000, 2))
    assert _refuses_event(OperationFailure("too large", code=17419))
    assert not _refuses_event(bulk(13))  # Unauthorized: the store's problem
    assert not _refuses_event(bulk(10334, concern=True))
    assert not _refuses_event(OperationFailure("not primary", code=10107))
    assert not _refuses_event(TimeoutError())
