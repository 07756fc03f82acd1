"""The embedded store (``gateway/devtools/embedded.py``) is spoken to without retryable writes.

SecantusDB 0.7 records every retryable write (for 30 minutes, up to 10,000) and walks the
whole record on every write, sorting it once the cap is reached: its CPU per insert grew from
0.7 to 1.7 ms over 10,000 writes and then to 9-11 ms, while without retryable writes it stayed
at 0.5 ms. A sign-in is four writes, so the cap came after about 2,500 sign-ins.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from gateway.devtools.embedded import EmbeddedMongo


class Sent(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.mark.asyncio
async def test_writes_to_the_embedded_store_are_not_retryable_writes() -> None:
    server = EmbeddedMongo(durable=False).start()
    sent = Sent()
    client: AsyncMongoClient = AsyncMongoClient(server.uri, event_listeners=[sent])
    try:
        collection = client["jog_embedded"]["flows"]
        await collection.insert_one({"_id": "a"})
        await collection.update_one({"_id": "a"}, {"$set": {"used": True}})
        writes = [c for c in sent.commands if "insert" in c or "update" in c]
        assert len(writes) == 2
        assert all("txnNumber" not in c for c in writes), writes
    finally:
        await client.close()
        server.cleanup()
