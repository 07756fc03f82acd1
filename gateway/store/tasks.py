"""Background loops of the store (maintenance, the audit writer and replayer)."""

from __future__ import annotations

import asyncio


def stop_requested() -> None:
    """Re-raise a cancellation the driver turned into its own error. PyMongo can answer a
    command whose task was cancelled with ``AutoReconnect``; a background loop that logs
    every ``Exception`` and goes on would then never end, and whoever awaits its
    cancellation (closing the store at shutdown) would wait forever. Call it first in such
    a loop's ``except Exception``."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
