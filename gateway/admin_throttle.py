"""Failed admin authentications per client address: after ``max_failures`` within
``window_seconds`` the address is refused (``admin_rate_limited``, 429 with Retry-After)
until the oldest failure leaves the window, whether its next token is right or wrong, so a
guesser learns nothing while refused.

Counted: a bearer token or a web sign-in token that matches no configured token. Not
counted: a request without a token, or with a valid web session cookie (nothing is guessed).
A success clears the address. The count lives in this process: with ``serve --processes``
or several instances each counts on its own, so put a rate limit in nginx too when the
admin endpoints are reachable from untrusted networks (docs/audit.md).

An IPv6 client is counted by its /64 (one host usually holds a whole /64, so its addresses
are one guesser); IPv4 by its address. Memory is bounded without letting anyone buy a
blocked address its freedom: addresses still counting live in one table whose least
recently failing entry is forgotten when ``MAX_ADDRESSES`` is reached, while blocked
addresses move to a second table from which nothing is evicted (an entry leaves only when
its window has passed). Should ``MAX_BLOCKED`` addresses be blocked at once, the throttle
fails closed: every address not yet known is refused until the oldest block ends.
"""

from __future__ import annotations

import ipaddress
import math
from collections import deque
from collections.abc import Callable

MAX_ADDRESSES = 10_000  # addresses counting failures; the one failing least recently goes first
MAX_BLOCKED = 10_000  # blocked addresses, never evicted; when full, new addresses are refused


def client_key(address: str | None) -> str:
    """What is counted: the IPv4 address, or the /64 of an IPv6 address."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AdminThrottle:
    def __init__(
        self, max_failures: int, window_seconds: float, clock: Callable[[], float]
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}  # counting, least recent first
        self._blocked: dict[str, deque[float]] = {}  # blocked, never evicted

    def retry_after(self, address: str | None) -> int | None:
        """Seconds until ``address`` may try a token again; None when it may now."""
        key = client_key(address)
        times = self._still_blocked(key)
        if times is not None:
            return self._wait(times)
        self._release_expired()
        if len(self._blocked) >= MAX_BLOCKED and key not in self._failures:
            return self._wait(next(iter(self._blocked.values())))  # full: fail closed
        return None

    def failed(self, address: str | None) -> None:
        key = client_key(address)
        now = self.clock()
        times = self._still_blocked(key)
        if times is not None:
            times.append(now)
            return
        times = self._counting(key)
        if times is None:
            if len(self._failures) >= MAX_ADDRESSES:
                del self._failures[next(iter(self._failures))]
            times = deque(maxlen=self.max_failures)
        else:
            del self._failures[key]
        times.append(now)
        if len(times) >= self.max_failures:
            self._blocked[key] = times
        else:  # most recently failing last, so the first key is the one to forget
            self._failures[key] = times

    def succeeded(self, address: str | None) -> None:
        key = client_key(address)
        self._failures.pop(key, None)
        self._blocked.pop(key, None)

    def _wait(self, times: deque[float]) -> int:
        return max(1, math.ceil(times[0] + self.window - self.clock()))

    def _prune(self, times: deque[float]) -> None:
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()

    def _still_blocked(self, key: str) -> deque[float] | None:
        """The key's failures while it is blocked; a block that has ended goes back to
        counting what is left of its window."""
        times = self._blocked.get(key)
        if times is None:
            return None
        self._prune(times)
        if len(times) >= self.max_failures:
            return times
        del self._blocked[key]
        if times:
            if len(self._failures) >= MAX_ADDRESSES:
                del self._failures[next(iter(self._failures))]
            self._failures[key] = times
        return None

    def _release_expired(self) -> None:
        """Let blocks whose window has passed go, oldest first (keeps the table honest)."""
        for key in list(self._blocked)[:8]:
            if self._still_blocked(key) is not None:
                break

    def _counting(self, key: str) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        self._prune(times)
        if not times:
            del self._failures[key]
            return None
        return times
