"""Inserts of the gateway's own random ids are idempotent under driver retries, on every
store path (flows, sessions, token-service codes and refresh tokens, logout-token ids),
against the real MongoDB-wire store.

The retry is reproduced by a collection whose ``insert_one`` sends the same insert twice and
answers with the second reply: the store applied the first and its answer was lost, which is
what a driver retry looks like to a store that does not deduplicate retryable writes (the
embedded one), and what a client retry looks like to any server. A real duplicate (another
writer's document under the same id) is still refused.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from pymongo import AsyncMongoClient

from adapters.base import Identity
from gateway.errors import GatewayError
from gateway.store.flows import Flow, FlowStore
from gateway.store.grants import GrantStore
from gateway.store.replays import ReplayGuard
from gateway.store.sessions import IdpLogin, SessionStore

pytestmark = pytest.mark.asyncio
NOW = datetime.now(UTC).replace(microsecond=0)
LATER = NOW + timedelta(minutes=10)


class InsertAppliedTwice:
    """The real collection, but every insert_one is sent again and the second reply is the
    one returned (the first reply "lost")."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.inserts = 0

    async def insert_one(self, doc: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.inserts += 1
        await self.collection.insert_one(dict(doc), *args, **kwargs)
        return await self.collection.insert_one(dict(doc), *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.collection, name)


@pytest_asyncio.fixture
async def db(mongo_uri: str) -> AsyncIterator[Any]:
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    database = client[f"jog_retries_{secrets.token_hex(4)}"]
    yield database
    await client.drop_database(database.name)
    await client.close()


def flow() -> Flow:
    return Flow("idp", "room", None, "nonce", "verifier", NOW, LATER)


def login() -> IdpLogin:
    identity = Identity("idp", "https://idp", "alice-sub", "alice", "Alice", "a@example.org", True)
    return IdpLogin(identity, "alice-sub", "sid-1", None)


async def test_a_retried_flow_insert_is_the_persons_flow(db: Any) -> None:
    retried = InsertAppliedTwice(db["flows"])
    await FlowStore(retried).create("state-1", "browser-1", flow())
    assert retried.inserts == 1
    assert await FlowStore(db["flows"]).consume("state-1", "browser-1", NOW) == flow()


async def test_a_retried_session_insert_is_the_persons_session(db: Any) -> None:
    retried = InsertAppliedTwice(db["sessions"])
    await SessionStore(retried).create("session-1", login(), created_at=NOW, expires_at=LATER)
    record = await SessionStore(db["sessions"]).record("session-1", NOW)
    assert record is not None and record.identity.username == "alice"


async def test_retried_code_and_refresh_inserts_are_the_grants(db: Any) -> None:
    codes, refresh = InsertAppliedTwice(db["codes"]), InsertAppliedTwice(db["refresh"])
    grants = GrantStore(codes, refresh)
    await grants.create_code("code-1", {"expires_at": LATER, "session": "s"})
    await grants.create_refresh("rt-1", {"expires_at": LATER, "family": "f", "session": "s"})
    used, _ = await GrantStore(db["codes"], db["refresh"]).consume_code("code-1", NOW)
    assert used is not None and used["session"] == "s"
    used, _ = await GrantStore(db["codes"], db["refresh"]).use_refresh("rt-1", NOW)
    assert used is not None and used["family"] == "f"


async def test_a_retried_first_use_is_not_a_replay_and_a_replay_still_is(db: Any) -> None:
    retried = ReplayGuard(InsertAppliedTwice(db["used"]))
    assert await retried.first_use("https://idp", "jti-1", LATER) is True
    # the same token id again, from another call (retried or not): a replay
    assert await retried.first_use("https://idp", "jti-1", LATER) is False
    assert await ReplayGuard(db["used"]).first_use("https://idp", "jti-1", LATER) is False


@pytest.mark.parametrize("path", ["flow", "session", "code", "refresh"])
async def test_a_real_duplicate_is_still_refused(db: Any, path: str) -> None:
    """Another writer's document under the same id is never taken for ours."""

    async def insert() -> None:
        if path == "flow":
            await FlowStore(db["flows"]).create("state-x", "browser-x", flow())
        elif path == "session":
            await SessionStore(db["sessions"]).create(
                "session-x", login(), created_at=NOW, expires_at=LATER
            )
        elif path == "code":
            await GrantStore(db["codes"], db["refresh"]).create_code("c", {"expires_at": LATER})
        else:
            await GrantStore(db["codes"], db["refresh"]).create_refresh("r", {"expires_at": LATER})

    await insert()
    with pytest.raises(GatewayError) as refused:
        await insert()
    assert refused.value.reason == "store_unavailable"
    assert "duplicate" in refused.value.detail
