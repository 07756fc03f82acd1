"""Failed admin authentications per client address: after ``max_failures`` within
``window_seconds`` the address is refused (``admin_rate_limited``, 429 with Retry-After)
until the oldest failure leaves the window, whether its next token is right or wrong, so a
guesser learns nothing while refused.

Counted: a bearer token or a web sign-in token that matches no configured token. Not
counted: a request without a token, or with a valid web session cookie (nothing is guessed).
A success clears the address. The count lives in this process: with ``serve --processes``
or several instances each counts on its own, so put a rate limit in nginx too when the
admin endpoints are reachable from untrusted networks (docs/audit.md).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

MAX_ADDRESSES = 10_000  # addresses remembered; the one failing least recently goes first


class AdminThrottle:
    def __init__(
        self, max_failures: int, window_seconds: float, clock: Callable[[], float]
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str | None) -> int | None:
        """Seconds until ``address`` may try a token again; None when it may now."""
        times = self._recent(address or "")
        if times is None or len(times) < self.max_failures:
            return None
        return max(1, math.ceil(times[0] + self.window - self.clock()))

    def failed(self, address: str | None) -> None:
        key = address or ""
        times = self._recent(key)
        if times is None:
            if len(self._failures) >= MAX_ADDRESSES:
                del self._failures[next(iter(self._failures))]
            times = self._failures[key] = deque(maxlen=self.max_failures)
        else:  # most recently failing last, so the first key is the one to forget
            self._failures[key] = self._failures.pop(key)
        times.append(self.clock())

    def succeeded(self, address: str | None) -> None:
        self._failures.pop(address or "", None)

    def _recent(self, key: str) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times
