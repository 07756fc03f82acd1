"""Gateway sessions: who signed in, through which IdP, until when.

The session id lives only in the browser's signed cookie; the database keys sessions by its
SHA-256, so a read of the collection does not hand out live sessions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from adapters.base import Identity
from gateway.errors import GatewayError
from gateway.oidc.pkce import sha256_hex


class SessionStore:
    def __init__(self, collection: AsyncCollection) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_index("expires_at", expireAfterSeconds=0)
        await self.collection.create_index([("identity.idp", 1), ("identity.subject", 1)])

    async def create(
        self,
        session_id: str,
        identity: Identity,
        *,
        created_at: datetime,
        expires_at: datetime,
        idp_session_id: str | None = None,
        id_token: str | None = None,
    ) -> None:
        """Store a new session. ``id_token`` is kept only as the RP-initiated logout hint."""
        doc: dict[str, Any] = {
            "_id": sha256_hex(session_id),
            "identity": identity.to_document(),
            "idp_sid": idp_session_id,
            "id_token": id_token,
            "created_at": created_at,
            "expires_at": expires_at,
        }
        try:
            await self.collection.insert_one(doc)
        except PyMongoError as exc:
            raise GatewayError("store_unavailable", f"sessions: {type(exc).__name__}") from None

    async def get(self, session_id: str, now: datetime) -> Identity | None:
        """The identity of a live session, or None (unknown or expired)."""
        try:
            doc = await self.collection.find_one(
                {"_id": sha256_hex(session_id), "expires_at": {"$gt": now}}
            )
        except PyMongoError as exc:
            raise GatewayError("store_unavailable", f"sessions: {type(exc).__name__}") from None
        return Identity.from_document(doc["identity"]) if doc else None

    async def delete(self, session_id: str) -> bool:
        try:
            result = await self.collection.delete_one({"_id": sha256_hex(session_id)})
        except PyMongoError as exc:
            raise GatewayError("store_unavailable", f"sessions: {type(exc).__name__}") from None
        return result.deleted_count == 1
