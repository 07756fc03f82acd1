"""Pending sign-in flows: one document per authorization request, consumed exactly once.

The document id is the SHA-256 of ``state``; the browser binding is the SHA-256 of a random
value kept in the browser's flow cookie. ``consume`` reads the flow by ``_id`` and then marks
it used with one conditional ``update_one`` that also requires the right browser and an
unexpired, unused record: the store applies the update to one document atomically, so of two
racing callbacks exactly one sees ``matched_count == 1``. Used records stay (until the TTL
index removes them) so a replay is reported as ``state_reused`` rather than ``state_invalid``.
The update also writes a random ``consumed_by`` of that one call: when the driver retries an
update the store had applied but whose answer was lost (a store that does not deduplicate
retryable writes, such as the embedded one), the call recognises its own write instead of
refusing the person as a replay; any other call still sees ``state_reused``. ``create``
is idempotent the same way (:mod:`gateway.store.inserts`).

Why a read and an update rather than one ``findAndModify``: the embedded store (SecantusDB
0.7) re-checks a findAndModify's write with a filter its planner does not serve from the
``_id`` index, so every consumption read the whole collection: 4 ms of store CPU with no kept
flows, 70 ms at 5,000, 273 ms at 20,000, while this point read and update stay at 0.3 and
1.5 ms (store CPU, fsync at every commit). A busy deployment keeps ten minutes of flows.
MongoDB serves both shapes by ``_id``; the read is one more round trip on the person's path.
A bad state costs only the read.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from pymongo import IndexModel
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
        # Marks the write as this call's: a driver retry of an update the store had applied
        # (its answer lost) then finds the flow consumed by us, not by a replay.
        consumer = secrets.token_hex(16)
        try:
            doc = await self.collection.find_one({"_id": key})
            browser = sha256_hex(browser_binding) if browser_binding else None
            if not self._usable(doc, browser, now):
                raise self._why_refused(doc, now)
            done = await self.collection.update_one(
                {"_id": key, "browser": browser, "consumed_at": None, "expires_at": {"$gt": now}},
                {"$set": {"consumed_at": now, "consumed_by": consumer}},
            )
            if done.matched_count != 1:
                # Another callback won between the read and the update, or this update was
                # retried after the store had applied it: the flow says which.
                again = await self.collection.find_one({"_id": key})
                if again is None or again.get("consumed_by") != consumer:
                    raise self._why_refused(again, now)
        except PyMongoError as exc:
            raise GatewayError("store_unavailable", f"flows: {type(exc).__name__}") from None
        assert doc is not None  # _usable said so
        return Flow(**{f.name: doc[f.name] for f in FLOW_FIELDS if f.name in doc})

    @staticmethod
    def _usable(doc: dict[str, Any] | None, browser: str | None, now: datetime) -> bool:
        """What the conditional update requires, checked on the read first."""
        return (
            doc is not None
            and browser is not None
            and doc.get("browser") == browser
            and doc.get("consumed_at") is None
            and doc["expires_at"] > now
        )

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
