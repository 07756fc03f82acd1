"""Inserts of the gateway's own random ids that a retry cannot turn into a failure.

Every document the gateway inserts outside the audit log is keyed by a hash of a random
value it just made (a flow's state, a session id, a code, a refresh token, a logout token's
id). When a store call outlasts the timeout, the driver retries the insert; a store that
does not deduplicate retryable writes (the embedded one) has already applied the first
attempt and answers the retry with a duplicate key, and so would any server to a client
that retries after a lost answer. Each insert therefore carries a random ``write_id`` of
that one call: a duplicate key whose document has our ``write_id`` is our own insert and
counts as success; a document with another ``write_id`` is a real duplicate and is refused.
"""

from __future__ import annotations

import secrets
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

WRITE_ID = "write_id"


async def insert_own(collection: AsyncCollection, doc: dict[str, Any]) -> bool:
    """Insert ``doc`` (which has its ``_id``). True when the document in the store is this
    call's (first attempt or a retry of it), False when another writer's holds the id.
    Driver errors other than the duplicate key propagate to the caller."""
    write_id = secrets.token_hex(8)
    doc[WRITE_ID] = write_id
    try:
        await collection.insert_one(doc)
    except DuplicateKeyError:
        found = await collection.find_one({"_id": doc["_id"]}, projection={WRITE_ID: True})
        return found is not None and found.get(WRITE_ID) == write_id
    return True
