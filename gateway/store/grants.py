"""What the token service hands out: authorization codes and refresh tokens.

Both are random values stored only as their SHA-256. A code is consumed in one atomic
update (single use; a second redemption finds it used and the caller revokes what the
first one issued). Refresh tokens rotate: each use marks the token used and issues the
next one of the same family; using a used token again is taken as theft and revokes the
whole family (RFC 9700 4.14.2). Every record names the gateway session it belongs to, so
ending the session ends them. TTL indexes remove expired records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from gateway.errors import GatewayError
from gateway.hashing import sha256_hex
from gateway.store.indexes import index_names
from gateway.store.inserts import insert_own

CODE_INDEXES = [IndexModel("expires_at", expireAfterSeconds=300)]
REFRESH_INDEXES = [
    IndexModel("expires_at", expireAfterSeconds=0),
    IndexModel("family"),
    IndexModel("session"),
]


def _unavailable(exc: PyMongoError) -> GatewayError:
    return GatewayError("store_unavailable", f"grants: {type(exc).__name__}")


async def _insert(collection: AsyncCollection, doc: dict[str, Any]) -> None:
    """Idempotent under driver retries (:mod:`gateway.store.inserts`)."""
    try:
        stored = await insert_own(collection, doc)
    except PyMongoError as exc:
        raise _unavailable(exc) from None
    if not stored:
        raise GatewayError("store_unavailable", "grants: duplicate id of another writer")


class GrantStore:
    def __init__(self, codes: AsyncCollection, refresh: AsyncCollection) -> None:
        self.codes = codes
        self.refresh = refresh

    async def ensure_indexes(self) -> None:
        await self.codes.create_indexes(CODE_INDEXES)
        await self.refresh.create_indexes(REFRESH_INDEXES)

    def expected_indexes(self) -> dict[str, tuple[str, ...]]:
        return {
            self.codes.name: index_names(CODE_INDEXES),
            self.refresh.name: index_names(REFRESH_INDEXES),
        }

    async def create_code(self, code: str, doc: dict[str, Any]) -> None:
        await _insert(self.codes, {"_id": sha256_hex(code), "used_at": None, **doc})

    async def consume_code(
        self, code: str, now: datetime
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(the code's record if this call consumed it, else the record as it stands)."""
        key = sha256_hex(code)
        try:
            doc = await self.codes.find_one_and_update(
                {"_id": key, "used_at": None, "expires_at": {"$gt": now}},
                {"$set": {"used_at": now}},
                return_document=ReturnDocument.BEFORE,
            )
            if doc is not None:
                return doc, doc
            return None, await self.codes.find_one({"_id": key})
        except PyMongoError as exc:
            raise _unavailable(exc) from None

    async def create_refresh(self, token: str, doc: dict[str, Any]) -> None:
        await _insert(self.refresh, {"_id": sha256_hex(token), "used_at": None, **doc})

    async def use_refresh(
        self, token: str, now: datetime
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(the record if this call used it, else the record as it stands, or None)."""
        key = sha256_hex(token)
        try:
            doc = await self.refresh.find_one_and_update(
                {"_id": key, "used_at": None, "revoked": {"$ne": True}, "expires_at": {"$gt": now}},
                {"$set": {"used_at": now}},
                return_document=ReturnDocument.BEFORE,
            )
            if doc is not None:
                return doc, doc
            return None, await self.refresh.find_one({"_id": key})
        except PyMongoError as exc:
            raise _unavailable(exc) from None

    async def revoke_family(self, family: str) -> int:
        try:
            done = await self.refresh.update_many(
                {"family": family, "revoked": {"$ne": True}}, {"$set": {"revoked": True}}
            )
        except PyMongoError as exc:
            raise _unavailable(exc) from None
        return done.modified_count
