"""gateway.store.flows against the real MongoDB-wire store: a flow is consumed once, and a
driver retry of an update the store had already applied is not taken for a replay.

The retry is reproduced by a collection whose ``find_one_and_update`` sends the same command
twice and answers with the second reply, which is what a driver retry looks like to a store
that does not deduplicate retryable writes (the embedded one).
"""

from __future__ import annotations

import secrets
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
    """The real collection, but every findAndModify is sent again and the second reply is
    the one returned (the first reply "lost")."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection

    async def find_one_and_update(self, *args: Any, **kwargs: Any) -> Any:
        await self.collection.find_one_and_update(*args, **kwargs)
        return await self.collection.find_one_and_update(*args, **kwargs)

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
