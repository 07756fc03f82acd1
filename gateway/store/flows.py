"""Pending sign-in flows: one document per authorization request, consumed exactly once.

The document id is the SHA-256 of ``state``; the browser binding is the SHA-256 of a random
value kept in the browser's flow cookie. ``consume`` marks the flow used in one atomic
``find_one_and_update`` that also requires the right browser and an unexpired, unused
record, so two racing callbacks cannot both win. Used records stay (until the TTL index
removes them) so a replay is reported as ``state_reused`` rather than ``state_invalid``.
The update also writes a random ``consumed_by`` of that one call: when the driver retries an
update the store had applied but whose answer was lost (a store that does not deduplicate
retryable writes, such as the embedded one), the call recognises its own write instead of
refusing the person as a replay; any other call still sees ``state_reused``. ``create``
is idempotent the same way (:mod:`gateway.store.inserts`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from pymongo import IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from gateway.errors import GatewayError
from gateway.hashing import sha256_hex
from gateway.store.indexes import index_names
from gateway.store.inserts import insert_own


@dataclass(frozen=True)
class Flow:
    idp: str
    room: str
    tenant: str | None
    nonce: str
    code_verifier: str
    created_at: datetime
    expires_at: datetime
    jitsi_state: str | None = None  # the kept part of Jitsi's login-button state
    return_to: str | None = None  # the token service's /oidc/authorize request, to resume


# Every field is a str, None or datetime: a shallow copy (``dataclasses.asdict`` deep-copies
# each datetime, about 280 Python calls per flow).
FLOW_FIELDS = fields(Flow)


INDEXES = [IndexModel("expires_at", expireAfterSeconds=60)]


class FlowStore:
    def __init__(self, collection: AsyncCollection) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes(INDEXES)

    def expected_indexes(self) -> dict[str, tuple[str, ...]]:
        return {self.collection.name: index_names(INDEXES)}

    async def create(self, state: str, browser_binding: str, flow: Flow) -> None:
        doc: dict[str, Any] = {
            "_id": sha256_hex(state),
            "browser": sha256_hex(browser_binding),
            "consumed_at": None,
            **{f.name: getattr(flow, f.name) for f in FLOW_FIELDS},
        }
        try:
            stored = await insert_own(self.collection, doc)
        except PyMongoError as exc:
            raise GatewayError("store_unavailable", f"flows: {type(exc).__name__}") from None
        if not stored:  # another writer's flow under this state: never ours to overwrite
            raise GatewayError("store_unavailable", "flows: duplicate id of another writer")

    async def consume(self, state: str, browser_binding: str | None, now: datetime) -> Flow:
        key = sha256_hex(state)
        # Marks the write as this call's: a driver retry of a findAndModify the store had
        # applied (its answer lost) then finds the flow consumed by us, not by a replay.
        consumer = secrets.token_hex(16)
        try:
            doc = None
            if browser_binding:
                doc = await self.collection.find_one_and_update(
                    {
                        "_id": key,
                        "browser": sha256_hex(browser_binding),
                        "consumed_at": None,
                        "expires_at": {"$gt": now},
                    },
                    {"$set": {"consumed_at": now, "consumed_by": consumer}},
                    return_document=ReturnDocument.BEFORE,
                )
            if doc is None:
                doc = await self.collection.find_one({"_id": key})
                if doc is None or doc.get("consumed_by") != consumer:
                    raise self._why_refused(doc, now)
        except PyMongoError as exc:
            raise GatewayError("store_unavailable", f"flows: {type(exc).__name__}") from None
        return Flow(**{f.name: doc[f.name] for f in FLOW_FIELDS if f.name in doc})

    @staticmethod
    def _why_refused(doc: dict[str, Any] | None, now: datetime) -> GatewayError:
        if doc is None:
            return GatewayError("state_invalid", "no flow with this state")
        idp = doc["idp"]  # ``flow_idp``: the handler attributes the audit event to it
        if doc.get("consumed_at") is not None:
            return GatewayError("state_reused", f"flow for idp {idp} already used", flow_idp=idp)
        if doc["expires_at"] <= now:
            return GatewayError("state_expired", f"flow for idp {idp} expired", flow_idp=idp)
        return GatewayError("state_browser_mismatch", f"flow for idp {idp}", flow_idp=idp)
