"""gateway.store.flows against the real MongoDB-wire store: a flow is consumed once, and a
driver retry of an update the store had already applied is not taken for a replay.

The retry is reproduced by a collection whose writes send the same command twice and answer
with the second reply, which is what a driver retry looks like to a store that does not
deduplicate retryable writes (the embedded one). The consumption's cost must not grow with the
flows kept for replay detection (the embedded store's findAndModify read them all).
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient

from gateway.errors import GatewayError
from gateway.store.flows import Flow, FlowStore

pytestmark = pytest.mark.asyncio
NOW = datetime.now(UTC).replace(microsecond=0)


class AppliedTwice:
    """The real collection, but every conditional write is sent again and the second reply
    is the one returned (the first reply "lost")."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection

    async def find_one_and_update(self, *args: Any, **kwargs: Any) -> Any:
        await self.collection.find_one_and_update(*args, **kwargs)
        return await self.collection.find_one_and_update(*args, **kwargs)

    async def update_one(self, *args: Any, **kwargs: Any) -> Any:
        await self.collection.update_one(*args, **kwargs)
        return await self.collection.update_one(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)


@pytest_asyncio.fixture
async def collection(mongo_uri: str) -> AsyncIterator[Any]:
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    database = client[f"jog_flows_{secrets.token_hex(4)}"]
    yield database["flows"]
    await client.drop_database(database.name)
    await client.close()


def flow() -> Flow:
    return Flow("idp", "room", None, "nonce", "verifier", NOW, NOW + timedelta(minutes=10))


async def test_a_retried_consume_is_the_persons_own(collection: Any) -> None:
    store = FlowStore(AppliedTwice(collection))
    await store.create("state-1", "browser-1", flow())
    assert await store.consume("state-1", "browser-1", NOW) == flow()
    # and the flow is used: a replay, retried or not, is refused
    for replaying in (store, FlowStore(collection)):
        with pytest.raises(GatewayError) as refused:
            await replaying.consume("state-1", "browser-1", NOW)
        assert refused.value.reason == "state_reused"


async def test_a_replay_and_an_unknown_state_are_refused(collection: Any) -> None:
    store = FlowStore(collection)
    await store.create("state-2", "browser-2", flow())
    assert await store.consume("state-2", "browser-2", NOW) == flow()
    with pytest.raises(GatewayError) as refused:
        await store.consume("state-2", "browser-2", NOW)
    assert refused.value.reason == "state_reused"
    with pytest.raises(GatewayError) as refused:
        await FlowStore(collection).consume("state-3", "browser-2", NOW)
    assert refused.value.reason == "state_invalid"


async def test_racing_callbacks_consume_a_flow_once(collection: Any) -> None:
    store = FlowStore(collection)
    await store.create("state-4", "browser-4", flow())
    results = await asyncio.gather(
        *(store.consume("state-4", "browser-4", NOW) for _ in range(8)), return_exceptions=True
    )
    assert results.count(flow()) == 1
    refused = [r for r in results if isinstance(r, GatewayError)]
    assert len(refused) == 7 and {r.reason for r in refused} == {"state_reused"}


async def test_expired_and_foreign_browser_flows_are_refused_and_left_unused(
    collection: Any,
) -> None:
    store = FlowStore(collection)
    await store.create("state-5", "browser-5", flow())
    with pytest.raises(GatewayError) as refused:
        await store.consume("state-5", "someone-else", NOW)
    assert refused.value.reason == "state_browser_mismatch"
    with pytest.raises(GatewayError) as refused:
        await store.consume("state-5", "browser-5", NOW + timedelta(minutes=11))
    assert refused.value.reason == "state_expired"
    assert await store.consume("state-5", "browser-5", NOW) == flow()  # still the person's


async def _consume_ms(store: FlowStore, tag: str, n: int = 15) -> float:
    """Median wall time of one consumption, one at a time."""
    for i in range(n):
        await store.create(f"{tag}-{i}", "browser", flow())
    times = []
    for i in range(n):
        start = time.perf_counter()
        await store.consume(f"{tag}-{i}", "browser", NOW)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


async def test_consuming_a_flow_does_not_slow_down_as_flows_are_kept(collection: Any) -> None:
    """5,000 used flows kept for replay detection (a busy ten minutes). The embedded store's
    findAndModify read them all: 20 -> 230 ms per consumption here; a read and a conditional
    update by ``_id`` stay flat. Generous bound (4x + 25 ms) for a busy machine."""
    store = FlowStore(collection)
    empty = await _consume_ms(store, "empty")
    kept = [
        {"_id": secrets.token_hex(32), "browser": "b", "consumed_at": NOW, "idp": "idp",
         "expires_at": NOW + timedelta(minutes=10)}
        for _ in range(5000)
    ]  # fmt: skip
    for first in range(0, len(kept), 1000):
        await collection.insert_many(kept[first : first + 1000], ordered=False)
    full = await _consume_ms(store, "full")
    assert full < 4 * empty + 25, (empty, full)
