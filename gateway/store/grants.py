"""What the token service hands out: authorization codes and refresh tokens.

Both are random values stored only as their SHA-256. A code is consumed in one atomic
update (single use; a second redemption finds it used and the caller revokes what the
first one issued). Refresh tokens rotate: each use marks the token used and issues the
next one of the same family; using a used token again is taken as theft and revokes the
whole family (RFC 9700 4.14.2). Every record names the gateway session it belongs to, so
ending the session ends them. TTL indexes remove expired records.

A revocation must outlive every refresh or redemption already past its atomic check (that
one still inserts its new token afterwards). So a revocation first writes a family marker
(``_id`` ``family:<id>``, one document, upserted) and only then marks the family's records;
an issuer inserts its new token first and then reads the marker (:meth:`family_revoked`).
Whichever comes first, the new token is caught: the marker read after the insert sees the
revocation, or the revocation's update that follows the marker sees the inserted record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

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

FAMILY_MARKER = "family:"


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

    async def revoke_session(self, session_hash: str) -> int:
        """Revoke every refresh token of one gateway session (the IdP ended it)."""
        try:
            done = await self.refresh.update_many(
                {"session": session_hash, "revoked": {"$ne": True}}, {"$set": {"revoked": True}}
            )
        except PyMongoError as exc:
            raise _unavailable(exc) from None
        return done.modified_count

    async def live_refresh(self, token: str, now: datetime) -> dict[str, Any] | None:
        """The refresh token's record if it could still be used now (unused, not revoked,
        unexpired); read only, nothing is used or revoked."""
        query = {
            "_id": sha256_hex(token),
            "used_at": None,
            "revoked": {"$ne": True},
            "expires_at": {"$gt": now},
        }
        try:
            return await self.refresh.find_one(query)
        except PyMongoError as exc:
            raise _unavailable(exc) from None

    async def family_revoked(self, family: str) -> bool:
        """Whether the family was revoked: read after inserting its newest token."""
        try:
            return await self.refresh.find_one({"_id": FAMILY_MARKER + family}) is not None
        except PyMongoError as exc:
            raise _unavailable(exc) from None

    async def revoke_family(self, family: str, keep_until: datetime) -> int:
        """Revoke the family for good (the marker lives until ``keep_until``, the family's
        latest possible expiry); returns how many live records it ended."""
        marker = {"_id": FAMILY_MARKER + family}
        try:
            for attempt in (1, 2):  # two first revocations at once: one upsert loses the race
                try:
                    await self.refresh.update_one(
                        marker,
                        {"$set": {"revoked": True}, "$max": {"expires_at": keep_until}},
                        upsert=True,
                    )
                    break
                except DuplicateKeyError:
                    if attempt == 2:
                        raise
            done = await self.refresh.update_many(
                {"family": family, "revoked": {"$ne": True}}, {"$set": {"revoked": True}}
            )
        except PyMongoError as exc:
            raise _unavailable(exc) from None
        return done.modified_count
