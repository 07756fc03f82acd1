"""A gateway running in a thread with its own event loop, for synchronous callers
(Hypothesis drives plain functions; the gateway stays one real server for all examples)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP


@contextmanager
def gateway_in_thread(op: TestOP, mongo_uri: str, **overrides: Any) -> Iterator[GatewayUnderTest]:
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"] = (asyncio.get_running_loop(), stop)
        try:
            async with start_gateway(op, mongo_uri, **overrides) as gw:
                box["gw"] = gw
                ready.set()
                await stop.wait()
        except BaseException as exc:  # surfaced to the caller below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    ready.wait(60)
    if "error" in box:
        raise box["error"]
    try:
        yield box["gw"]
    finally:
        loop, stop = box["stop"]
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
