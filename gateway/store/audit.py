"""The audit log: one document per step of every sign-in.

Writing an event must never break or stall a sign-in: each write is bounded by a short
timeout and a failure is logged (without the event's personal data) and swallowed. The
callers build events from fixed fields only; tokens, codes and secrets are never passed in.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class AuditLog:
    def __init__(self, collection: AsyncCollection, write_timeout: float = 2.0) -> None:
        self.collection = collection
        self.write_timeout = write_timeout
        self.failures = 0

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("time", DESCENDING)])
        for field in ("subject", "idp", "event", "room"):
            await self.collection.create_index([(field, 1), ("time", DESCENDING)])

    async def write(self, event: dict[str, Any]) -> bool:
        doc = {"_id": uuid.uuid4().hex, "v": SCHEMA_VERSION, **event}
        try:
            await asyncio.wait_for(self.collection.insert_one(doc), self.write_timeout)
        except (PyMongoError, TimeoutError) as exc:
            self.failures += 1
            log.error("audit write failed (%s) for event %s", type(exc).__name__, event["event"])
            return False
        return True
