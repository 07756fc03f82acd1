"""Background loops of the store (maintenance, the audit writer and replayer)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


def stop_requested() -> None:
    """Re-raise a cancellation the driver turned into its own error. PyMongo can answer a
    command whose task was cancelled with ``AutoReconnect``; a background loop that logs
    every ``Exception`` and goes on would then never end, and whoever awaits its
    cancellation (closing the store at shutdown) would wait forever. Call it first in such
    a loop's ``except Exception``."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


STOP_WAIT_SECONDS = 5.0


async def stop(task: asyncio.Task[Any] | None, wait: float = STOP_WAIT_SECONDS) -> None:
    """Cancel a background task and wait for it ``wait`` seconds at most: a driver call
    that ignores its cancellation must not hold up closing the store (shutdown, and every
    test's teardown). A task still running then is left behind with a warning."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait({task}, timeout=wait)
    if not task.done():
        log.warning("%s did not stop within %.0f s of its cancellation", task.get_name(), wait)
