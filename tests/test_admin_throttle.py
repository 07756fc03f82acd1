"""Wrong admin tokens per client address (gateway/admin_throttle.py): the rule on its own
with a fake clock, then a real gateway over HTTP, both ways in (bearer token, web sign-in),
with addresses told apart by X-Forwarded-For from a trusted proxy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from gateway import admin_throttle
from gateway.admin_throttle import AdminThrottle
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP

TOKEN = "throttle-test-admin-token-0123456789"
WINDOW = 60
ATTACKER = {"X-Forwarded-For": "198.51.100.7"}
OPERATOR = {"X-Forwarded-For": "192.0.2.10"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refused_after_max_failures_until_the_oldest_leaves_the_window() -> None:
    clock = Clock()
    throttle = AdminThrottle(3, 60, clock)
    for _ in range(2):
        throttle.failed("a")
        clock.now += 10
    assert throttle.retry_after("a") is None  # two of three
    throttle.failed("a")  # at 1020; the first was at 1000
    assert throttle.retry_after("a") == 40
    assert throttle.retry_after("b") is None  # per address
    clock.now = 1059.5
    assert throttle.retry_after("a") == 1
    clock.now = 1060  # the first failure has left the window
    assert throttle.retry_after("a") is None
    throttle.failed("a")
    assert throttle.retry_after("a") == 10  # the oldest now: 1010 + 60 - 1060


def test_success_clears_and_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    throttle = AdminThrottle(3, 60, clock)
    throttle.failed("a")
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.retry_after("a") is None  # the count started again
    monkeypatch.setattr(admin_throttle, "MAX_ADDRESSES", 3)
    for address in ("b", "c", "a", "d"):  # "a" failed again: "b" is the stalest
        throttle.failed(address)
    assert len(throttle._failures) == 3 and "b" not in throttle._failures
    throttle.failed("a")
    assert throttle.retry_after("a") is not None


def test_a_blocked_address_cannot_be_evicted_by_many_others() -> None:
    """10,001 other failing addresses used to push a blocked one out (429 -> 401)."""
    clock = Clock()
    throttle = AdminThrottle(10, 300, clock)
    for _ in range(10):
        throttle.failed("203.0.113.7")
    assert throttle.retry_after("203.0.113.7") is not None
    for n in range(admin_throttle.MAX_ADDRESSES + 1):
        address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        assert throttle.retry_after(address) is None
        throttle.failed(address)
    assert throttle.retry_after("203.0.113.7") is not None
    assert len(throttle._failures) <= admin_throttle.MAX_ADDRESSES
    clock.now += 300  # the window passes: the block ends on its own
    assert throttle.retry_after("203.0.113.7") is None


def test_ipv6_is_counted_by_its_64() -> None:
    clock = Clock()
    throttle = AdminThrottle(10, 300, clock)
    tries = 0
    for n in range(40):  # four addresses of one /64, ten tries each
        address = f"2001:db8:1:2::{n % 4 + 1:x}"
        if throttle.retry_after(address) is None:
            tries += 1
            throttle.failed(address)
    assert tries == 10
    assert throttle.retry_after("2001:db8:1:3::1") is None  # the next /64 is another client
    assert throttle.retry_after("::ffff:198.51.100.1") is None
    for _ in range(10):
        throttle.failed("::ffff:198.51.100.1")
    assert throttle.retry_after("198.51.100.1") is not None  # IPv4-mapped is the IPv4


def test_a_table_full_of_blocked_addresses_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(admin_throttle, "MAX_BLOCKED", 3)
    throttle = AdminThrottle(2, 60, clock)
    for address in ("a", "b", "c"):
        throttle.failed(address)
        throttle.failed(address)
    assert throttle.retry_after("new") == 60  # refused until the oldest block ends
    clock.now += 60
    assert throttle.retry_after("new") is None


@pytest_asyncio.fixture
async def gw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    admin = {
        "tokens": [{"name": "ops", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}],
        "max_failures": 3,
        "failure_window_seconds": WINDOW,
    }
    async with start_gateway(op, mongo_uri, admin=admin, trusted_proxies=["127.0.0.1/32"]) as g:
        yield g


async def api(gw: GatewayUnderTest, token: str, who: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(
            f"{gw.url}/admin/audit",
            params={"limit": "1"},
            headers={"Authorization": f"Bearer {token}", **who},
        )


async def web_sign_in(gw: GatewayUnderTest, token: str, who: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        page = await client.get(f"{gw.url}/admin/", headers=who)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text
        return await client.post(
            f"{gw.url}/admin/login", data={"token": token, "csrf": csrf.group(1)}, headers=who
        )


async def refusals(gw: GatewayUnderTest, reason: str) -> list[dict]:
    found = gw.store.audit.collection.find({"event": "admin_query", "reason": reason})
    return [e async for e in found]


@pytest.mark.asyncio
async def test_bearer_guessing_is_refused_even_with_the_right_token(gw: GatewayUnderTest) -> None:
    for _ in range(3):
        assert (await api(gw, "guess", ATTACKER)).status_code == 401
    refused = await api(gw, TOKEN, ATTACKER)
    assert refused.status_code == 429
    assert refused.json()["error"] == "admin_rate_limited"
    assert 0 < int(refused.headers["Retry-After"]) <= WINDOW
    assert "WWW-Authenticate" not in refused.headers
    [event] = await refusals(gw, "admin_rate_limited")
    assert event["outcome"] == "failure" and event["client_ip"] == "198.51.100.7"
    assert TOKEN not in str(event)
    # another address is not held back, and no token is no guess
    assert (await api(gw, TOKEN, OPERATOR)).status_code == 200
    gw.clock.offset += WINDOW + 1
    assert (await api(gw, TOKEN, ATTACKER)).status_code == 200


@pytest.mark.asyncio
async def test_web_sign_in_counts_with_the_api(gw: GatewayUnderTest) -> None:
    """Both ways in share one count: two wrong bearer tokens and a wrong form token, then the
    right form token is refused with 429, no session cookie, the form and a wait."""
    for _ in range(2):
        assert (await api(gw, "guess", ATTACKER)).status_code == 401
    assert (await web_sign_in(gw, "guess", ATTACKER)).status_code == 401
    refused = await web_sign_in(gw, TOKEN, ATTACKER)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert "jog_admin=" not in refused.headers.get("set-cookie", "")
    assert "Too many wrong tokens" in refused.text and 'name="csrf"' in refused.text
    assert len(await refusals(gw, "admin_rate_limited")) == 1
    operator = await web_sign_in(gw, TOKEN, OPERATOR)
    assert operator.status_code == 303


@pytest.mark.asyncio
async def test_a_success_clears_the_count(gw: GatewayUnderTest) -> None:
    for _ in range(2):
        assert (await api(gw, "guess", OPERATOR)).status_code == 401
    assert (await api(gw, TOKEN, OPERATOR)).status_code == 200  # a typo, then the token
    for _ in range(2):
        assert (await api(gw, "guess", OPERATOR)).status_code == 401
    assert (await api(gw, TOKEN, OPERATOR)).status_code == 200
