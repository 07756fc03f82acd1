"""Single-use token ids (back-channel logout ``jti``): a replayed token is refused.

One document per used id, keyed by a SHA-256 of issuer and id; the unique ``_id`` makes the
check atomic across instances, and a TTL index forgets ids once their token is too old to be
accepted anyway.
"""

from __future__ import annotations

from datetime import datetime

from pymongo import IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from gateway.errors import GatewayError
from gateway.hashing import sha256_hex
from gateway.store.indexes import index_names
from gateway.store.inserts import insert_own

INDEXES = [IndexModel("expires_at", expireAfterSeconds=0)]


class ReplayGuard:
    def __init__(self, collection: AsyncCollection) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes(INDEXES)

    def expected_indexes(self) -> dict[str, tuple[str, ...]]:
        return {self.collection.name: index_names(INDEXES)}

    async def first_use(self, issuer: str, token_id: str, expires_at: datetime) -> bool:
        """True the first time (issuer, id) is seen; False for a replay."""
        doc = {"_id": sha256_hex(f"{issuer}\n{token_id}"), "expires_at": expires_at}
        try:
            # a driver retry of our own applied insert is the first use, not a replay
            return await insert_own(self.collection, doc)
        except PyMongoError as exc:
            raise GatewayError("store_unavailable", f"replays: {type(exc).__name__}") from None
