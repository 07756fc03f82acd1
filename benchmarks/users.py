"""Virtual users over plain HTTP (no browser): a full sign-in, a single sign-on token, and
one request to the bare Tornado redirect.

Each concurrent virtual user has one ``httpx.AsyncClient`` that never follows redirects;
its cookie jar is swapped per person (a new person: an empty jar; single sign-on: that
person's jar). The user follows the gateway's own redirects hop by hop, timing each hop
under the gateway step it hit; the OP's login pages are walked by ``TestOP.login_over_http``
and timed apart as ``op`` (the gateway figures exclude them). A run stops at ``count``
operations or ``max_seconds``, whichever comes first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from gateway.devtools.op import TestOP

MAX_GATEWAY_HOPS = 8

#: Gateway path -> step name (the callback path carries the IdP id).
STEPS = {"/oidc/auth": "auth", "/oidc/tokenize": "tokenize"}


class BenchError(Exception):
    """A virtual user did not get where it should (a refusal, a missing token)."""


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def step_of(url: str) -> str:
    path = urlsplit(url).path
    if path.startswith("/oidc/redirect/"):
        return "callback"
    return STEPS.get(path, path)


@dataclass(frozen=True)
class Target:
    """Where the virtual users go."""

    gateway_url: str
    jitsi_base: str
    op: TestOP
    accounts: list[tuple[str, str]]  # (username, password)


@dataclass
class Outcome:
    """One operation: seconds per step, hops, and the end-to-end time."""

    steps: dict[str, float] = field(default_factory=dict)
    gateway_hops: int = 0
    op_hops: int = 0
    total: float = 0.0

    @property
    def gateway_total(self) -> float:
        """The gateway's share: every step but the OP's pages."""
        return sum(v for k, v in self.steps.items() if k != "op")


AfterHop = Callable[[str], Awaitable[None]]


class VirtualUser:
    """One concurrent user (a client and its connection pool), serving many people."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._gateway = origin(target.gateway_url)
        self._op = origin(target.op.issuer)
        self.requests: dict[tuple[str, str], int] = {}
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=60.0,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            event_hooks={"request": [self._count]},
        )

    async def _count(self, request: httpx.Request) -> None:
        key = (request.url.scheme, request.url.netloc.decode())
        self.requests[key] = self.requests.get(key, 0) + 1

    def _hops_at(self, where: tuple[str, str]) -> int:
        return self.requests.get(where, 0)

    async def close(self) -> None:
        await self.client.aclose()

    async def follow_gateway(
        self, url: str, outcome: Outcome, after_hop: AfterHop | None = None
    ) -> str:
        """GET ``url`` and the gateway's redirects after it; returns the first location
        outside the gateway (the OP, or Jitsi's room URL), not requested."""
        for _ in range(MAX_GATEWAY_HOPS):
            step = step_of(url)
            began = time.perf_counter()
            response = await self.client.get(url)
            outcome.steps[step] = outcome.steps.get(step, 0.0) + time.perf_counter() - began
            if after_hop is not None:
                await after_hop(step)
            if not response.is_redirect:
                raise BenchError(f"{step}: HTTP {response.status_code}, not a redirect")
            location = urljoin(url, response.headers["location"])
            if origin(location) != self._gateway:
                return location
            url = location
        raise BenchError(f"more than {MAX_GATEWAY_HOPS} gateway hops")

    def _room_url(self, location: str, room: str) -> None:
        if not location.startswith(f"{self.target.jitsi_base}/{room}?"):
            raise BenchError(f"ended at {urlsplit(location).path!r}, not room {room!r}")
        if not parse_qs(urlsplit(location).query).get("jwt"):
            raise BenchError("room URL without a token")

    async def sign_in(
        self, room: str, account: tuple[str, str], after_hop: AfterHop | None = None
    ) -> Outcome:
        """A new person (empty cookie jar): room request -> OP login -> room with token."""
        self.client.cookies = httpx.Cookies()
        self.requests.clear()
        outcome = Outcome()
        began = time.perf_counter()
        entry = f"{self.target.gateway_url}/oidc/auth?room={room}"
        at_op = await self.follow_gateway(entry, outcome, after_hop)
        if origin(at_op) != self._op:
            raise BenchError(f"auth sent the person to {origin(at_op)}, not the OP")
        op_began = time.perf_counter()
        callback = await self.target.op.login_over_http(self.client, at_op, *account)
        outcome.steps["op"] = time.perf_counter() - op_began
        if after_hop is not None:
            await after_hop("op")
        self._room_url(await self.follow_gateway(callback, outcome, after_hop), room)
        outcome.total = time.perf_counter() - began
        outcome.gateway_hops = self._hops_at(self._gateway)
        outcome.op_hops = self._hops_at(self._op)
        return outcome

    async def sso(
        self, room: str, jar: httpx.Cookies, after_hop: AfterHop | None = None
    ) -> Outcome:
        """A signed-in person (``jar``) asks for a new room: gateway redirects only."""
        self.client.cookies = jar
        self.requests.clear()
        outcome = Outcome()
        began = time.perf_counter()
        entry = f"{self.target.gateway_url}/oidc/auth?room={room}"
        self._room_url(await self.follow_gateway(entry, outcome, after_hop), room)
        outcome.total = time.perf_counter() - began
        outcome.gateway_hops = self._hops_at(self._gateway)
        outcome.op_hops = self._hops_at(self._op)
        return outcome

    async def bare(self, url: str) -> Outcome:
        """One request to the bare Tornado redirect handler."""
        began = time.perf_counter()
        response = await self.client.get(url)
        took = time.perf_counter() - began
        if response.status_code != 302:
            raise BenchError(f"bare: HTTP {response.status_code}")
        return Outcome({"bare": took}, gateway_hops=1, total=took)


@dataclass
class Run:
    """What one bounded run produced. A run by an external load generator (wrk) has no
    outcomes of its own: it gives its count, percentiles and hops instead."""

    outcomes: list[Outcome]
    errors: list[str]
    seconds: float
    stopped_by_time: bool
    count: int | None = None
    latency_ms: dict[str, dict[str, float]] | None = None
    hops: float | None = None
    failed: int | None = None  # errors counted, with ``errors`` holding samples only
    driver: str = "httpx"

    @property
    def ops(self) -> int:
        return self.count if self.count is not None else len(self.outcomes)

    @property
    def error_count(self) -> int:
        return self.failed if self.failed is not None else len(self.errors)


Operation = Callable[[VirtualUser, int, Any], Awaitable[Outcome]]


async def run_bounded(
    users: list[VirtualUser],
    count: int,
    max_seconds: float,
    operation: Operation,
    contexts: list[Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Run:
    """``count`` operations spread over ``users`` (one in flight per user), stopping early
    at ``max_seconds``. ``operation(user, index, context)`` gets the user's own context
    (its signed-in person's cookie jar for single sign-on)."""
    outcomes: list[Outcome] = []
    errors: list[str] = []
    next_index = 0
    deadline = time.perf_counter() + max_seconds
    timed_out = False

    async def worker(user: VirtualUser, context: Any) -> None:
        nonlocal next_index, timed_out
        while next_index < count:
            if time.perf_counter() > deadline:
                timed_out = True
                return
            index = next_index
            next_index += 1
            try:
                outcomes.append(await operation(user, index, context))
            except (BenchError, AssertionError, httpx.HTTPError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            if progress is not None:
                progress(len(outcomes) + len(errors))

    began = time.perf_counter()
    await asyncio.gather(
        *(worker(u, contexts[i] if contexts else None) for i, u in enumerate(users))
    )
    return Run(outcomes, errors, time.perf_counter() - began, timed_out)
