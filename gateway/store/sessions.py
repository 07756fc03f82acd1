"""Gateway sessions: who signed in, through which IdP, until when.

The session id lives only in the browser's signed cookie; the database keys sessions by its
SHA-256, so a read of the collection does not hand out live sessions. Each session also
keeps the IdP's session id (``sid``) and subject (``sub``) so an OpenID Connect back-channel
logout can find the sessions it ends, and the ID token as the ``id_token_hint`` for
RP-initiated logout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from adapters.base import Identity
from gateway.errors import GatewayError
from gateway.hashing import sha256_hex
from gateway.store.grouped import GroupedReads
from gateway.store.identity_doc import identity_from_document, identity_to_document
from gateway.store.indexes import index_names
from gateway.store.inserts import insert_own


@dataclass(frozen=True)
class SessionRecord:
    """A live session as logout needs it."""

    identity: Identity
    idp_sid: str | None
    idp_sub: str | None
    id_token: str | None
    expires_at: datetime | None = None
    key: str = ""  # the stored key (SHA-256 of the session id)
    created_at: datetime | None = None
    revalidate_at: datetime | None = None  # None: never asks the IdP again
    idp_refresh: bytes | None = None  # the IdP's refresh token, sealed (gateway.sealing)
    outage_since: datetime | None = None  # first failed revalidation of a running outage


@dataclass(frozen=True)
class IdpLogin:
    """What a verified sign-in hands to a new session: the adapter's identity plus the
    IdP's own ``sub`` and ``sid`` (back-channel logout finds sessions by them; ``sub`` may
    differ from ``identity.subject``, e.g. Entra's ``oid``) and the ID token (the
    RP-initiated logout hint)."""

    identity: Identity
    subject: str
    session_id: str | None = None
    id_token: str | None = None
    refresh_token: str | None = None  # sealed before it is stored


INDEXES = [
    IndexModel("expires_at", expireAfterSeconds=0),
    IndexModel([("identity.idp", 1), ("identity.subject", 1)]),
    IndexModel([("identity.idp", 1), ("idp_sid", 1)]),
    IndexModel([("identity.idp", 1), ("idp_sub", 1)]),
    IndexModel("identity.username"),
    IndexModel("email_key"),
]


def _is_live(doc: dict[str, Any], now: datetime) -> bool:
    """``expires_at`` reads timezone-aware (``Store.connect`` makes a ``tz_aware`` client)."""
    expires_at = doc.get("expires_at")
    return isinstance(expires_at, datetime) and expires_at > now


class SessionStore:
    """Reads by session go through :class:`GroupedReads` (concurrent lookups share one
    ``find``) and ask by ``_id`` alone: the expiry is checked here, not in the query, because
    a filter on ``expires_at`` as well lets a server pick the TTL index over ``_id`` (SecantusDB
    does: four times the cost of the point read). Same answer: unknown or expired is None."""

    def __init__(self, collection: AsyncCollection) -> None:
        self.collection = collection
        self.errors = 0
        self.reads: GroupedReads[str, dict[str, Any]] = GroupedReads(self._find_many)

    def _unavailable(self, exc: PyMongoError) -> GatewayError:
        self.errors += 1
        return GatewayError("store_unavailable", f"sessions: {type(exc).__name__}")

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes(INDEXES)

    def expected_indexes(self) -> dict[str, tuple[str, ...]]:
        return {self.collection.name: index_names(INDEXES)}

    async def create(
        self,
        session_id: str,
        login: IdpLogin,
        *,
        created_at: datetime,
        expires_at: datetime,
        revalidate_at: datetime | None = None,
        idp_refresh: bytes | None = None,
    ) -> None:
        """Store a new session. The ID token is kept only as the RP-initiated logout hint;
        the IdP's refresh token only sealed (``idp_refresh``), for revalidation."""
        identity = login.identity
        doc: dict[str, Any] = {
            "_id": sha256_hex(session_id),
            "identity": identity_to_document(identity),
            "idp_sid": login.session_id,
            "idp_sub": login.subject,
            # the e-mail as operators type it, for session administration
            "email_key": identity.email.strip().lower() if identity.email else None,
            "id_token": login.id_token,
            "created_at": created_at,
            "expires_at": expires_at,
        }
        if revalidate_at is not None:
            doc["revalidate_at"] = revalidate_at
        if idp_refresh is not None:
            doc["idp_refresh"] = idp_refresh
        try:
            stored = await insert_own(self.collection, doc)  # a driver retry is no failure
        except PyMongoError as exc:
            raise self._unavailable(exc) from None
        if not stored:
            self.errors += 1
            raise GatewayError("store_unavailable", "sessions: duplicate id of another writer")

    async def get(self, session_id: str, now: datetime) -> Identity | None:
        """The identity of a live session, or None (unknown or expired)."""
        record = await self.record(session_id, now)
        return record.identity if record else None

    async def record(self, session_id: str, now: datetime) -> SessionRecord | None:
        """A live session with its IdP session id, subject and logout hint, or None."""
        return await self.record_by_hash(sha256_hex(session_id), now)

    async def record_by_hash(self, session_hash: str, now: datetime) -> SessionRecord | None:
        """The same by the stored key (the token service keeps only the hash)."""
        doc = await self.reads.get(session_hash)
        if doc is None or not _is_live(doc, now):
            return None
        return SessionRecord(
            identity_from_document(doc["identity"]),
            doc.get("idp_sid"),
            doc.get("idp_sub"),
            doc.get("id_token"),
            doc.get("expires_at"),
            session_hash,
            doc.get("created_at"),
            doc.get("revalidate_at"),
            doc.get("idp_refresh"),
            doc.get("outage_since"),
        )

    async def claim_revalidation(self, record: SessionRecord, until: datetime) -> bool:
        """Take the due revalidation of ``record`` (one caller of all processes wins): moves
        ``revalidate_at`` to ``until`` only if it is still the value read."""
        try:
            result = await self.collection.update_one(
                {"_id": record.key, "revalidate_at": record.revalidate_at},
                {"$set": {"revalidate_at": until}},
            )
        except PyMongoError as exc:
            raise self._unavailable(exc) from None
        return result.modified_count == 1

    async def revalidated(
        self,
        key: str,
        *,
        next_at: datetime,
        idp_refresh: bytes | None = None,
        id_token: str | None = None,
        outage_since: datetime | None = None,
    ) -> None:
        """The IdP's answer recorded: when to ask next, the rotated refresh token and the
        newer ID token (the logout hint) where it gave them, an outage's start (or none)."""
        changes: dict[str, Any] = {"revalidate_at": next_at, "outage_since": outage_since}
        if idp_refresh is not None:
            changes["idp_refresh"] = idp_refresh
        if id_token is not None:
            changes["id_token"] = id_token
        try:
            await self.collection.update_one({"_id": key}, {"$set": changes})
        except PyMongoError as exc:
            raise self._unavailable(exc) from None

    async def delete_key(self, key: str) -> bool:
        """Delete one session by its stored key."""
        try:
            result = await self.collection.delete_one({"_id": key})
        except PyMongoError as exc:
            raise self._unavailable(exc) from None
        return result.deleted_count == 1

    async def _find_many(self, hashes: list[str]) -> dict[str, dict[str, Any]]:
        query: dict[str, Any] = {"_id": hashes[0] if len(hashes) == 1 else {"$in": hashes}}
        try:
            return {doc["_id"]: doc async for doc in self.collection.find(query)}
        except PyMongoError as exc:
            raise self._unavailable(exc) from None

    async def delete(self, session_id: str) -> bool:
        try:
            result = await self.collection.delete_one({"_id": sha256_hex(session_id)})
        except PyMongoError as exc:
            raise self._unavailable(exc) from None
        return result.deleted_count == 1

    async def end_at_idp(self, idp: str, *, sid: str | None, sub: str | None) -> int:
        """Delete the sessions a back-channel logout names; returns how many ended.

        With ``sid``: that IdP session (and, when ``sub`` is given too, only if it matches).
        With only ``sub``: every session of that person at this IdP.
        """
        if sid is None and sub is None:
            raise ValueError("a logout needs sid or sub")
        query: dict[str, Any] = {"identity.idp": idp}
        if sid is not None:
            query["idp_sid"] = sid
        if sub is not None:
            query["idp_sub"] = sub
        try:
            result = await self.collection.delete_many(query)
        except PyMongoError as exc:
            raise self._unavailable(exc) from None
        return result.deleted_count

    async def keys_at_idp(self, idp: str, sid: str) -> list[str]:
        """The stored keys of the sessions of one IdP session (front-channel logout)."""
        try:
            cursor = self.collection.find(
                {"identity.idp": idp, "idp_sid": sid}, projection={"_id": True}
            )
            return [doc["_id"] async for doc in cursor]
        except PyMongoError as exc:
            raise self._unavailable(exc) from None

    async def find_live(self, query: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
        """Live sessions matching ``query`` (administration), oldest first, no ID tokens."""
        try:
            cursor = self.collection.find(
                {**query, "expires_at": {"$gt": now}},
                projection={"id_token": False, "idp_refresh": False},
                sort=[("created_at", 1)],
            )
            return [doc async for doc in cursor]
        except PyMongoError as exc:
            raise self._unavailable(exc) from None

    async def delete_hashed(self, hashes: list[str]) -> int:
        """Delete sessions by their stored key (the SHA-256 of the session id)."""
        if not hashes:
            return 0
        try:
            result = await self.collection.delete_many({"_id": {"$in": hashes}})
        except PyMongoError as exc:
            raise self._unavailable(exc) from None
        return result.deleted_count
