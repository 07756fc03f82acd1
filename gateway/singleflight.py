"""One call in flight whose outcome answers every waiter, and a short memory of failure.

go-oidc's remote key set and Go's ``singleflight``: callers arriving while a fetch runs wait
for that fetch and get its result or its exception; none of them starts another, and none
retries after it one by one (a lock would make the k-th caller wait k timeouts when the
upstream hangs). After a failure the same failure is answered for ``negative_ttl`` seconds
without calling again, so a dead IdP is not hammered and people get their answer at once.
A waiter that is cancelled does not cancel the shared call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self, negative_ttl: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.negative_ttl = negative_ttl
        self._clock = clock
        self._task: asyncio.Future[T] | None = None
        self._failure: BaseException | None = None
        self._failed_until = 0.0
        self.calls = 0

    @property
    def in_flight(self) -> bool:
        return self._task is not None

    def recent_failure(self) -> BaseException | None:
        if self._failure is not None and self._clock() < self._failed_until:
            return self._failure
        return None

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        failure = self.recent_failure()
        if failure is not None:
            raise failure
        if self._task is None:
            self.calls += 1
            self._task = asyncio.ensure_future(self._wrap(call))
        return await asyncio.shield(self._task)

    async def _wrap(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await call()
        except Exception as exc:
            self._failure = exc
            self._failed_until = self._clock() + self.negative_ttl
            raise
        else:
            self._failure = None
            return result
        finally:
            self._task = None
