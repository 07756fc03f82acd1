"""Shared fixtures: the real MongoDB-wire server, the real test OP, a gateway per test.

Session-scoped: one SecantusDB process (or the server in ``MONGODB_URI``), one test OP and
one Chromium (per xdist worker). All tests and async fixtures share one event loop per session
(pyproject.toml), so a module can share a gateway with read-only data or one nginx. That
loop is the one ``serve`` runs on (``listen.event_loop``, uvloop by default); set
``JOG_TEST_EVENT_LOOP=asyncio`` to run the suite on the standard library's loop instead.
Function-scoped: a gateway on a free port, with its own database (dropped afterwards) and its
own client registered at the OP.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser

from gateway.config import Listen
from gateway.devtools.embedded import EmbeddedMongo
from gateway.devtools.op import TestOP
from tests.support.browser import launch_chromium
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.keycloak import Keycloak

ID_TOKEN_TTL = 120
EVENT_LOOP = os.environ.get("JOG_TEST_EVENT_LOOP") or Listen().event_loop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every async test and fixture runs on the loop the gateway is served on."""
    if EVENT_LOOP == "uvloop":
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    import asyncio

    return {"asyncio": asyncio.new_event_loop}


ACCOUNTS: list[dict[str, Any]] = [
    {
        "sub": "alice-sub",
        "username": "alice",
        "password": "alice-pw",
        "claims": {
            "name": "Alice Example",
            "preferred_username": "alice",
            "email": " Alice@Example.org",
            "email_verified": True,
            "groups": ["staff", "staff"],
        },
    },
    {
        "sub": "carol-sub",
        "username": "carol",
        "password": "carol-pw",
        "claims": {
            "name": "Carol Partner",
            "email": "carol@partner.example",
            "email_verified": True,
            "groups": ["partners"],
        },
    },
    {
        "sub": "bob-sub",
        "username": "bob",
        "password": "bob-pw",
        "claims": {
            "preferred_username": "bob",
            "email": "bob@example.org",
            "email_verified": False,
        },
    },
]


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    external = os.environ.get("MONGODB_URI")
    if external:
        yield external
        return
    # The suite's shared store skips the fsync at every commit (it makes the suite ~1.7x
    # slower); tests/test_faults.py runs its own durable store for the crash test.
    server = EmbeddedMongo(durable=False).start()
    try:
        yield server.uri
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def op() -> Iterator[TestOP]:
    # Short ID-token lifetime so a test can expire a token without expiring its flow.
    with TestOP.start(ACCOUNTS, ttl={"IdToken": ID_TOKEN_TTL}) as provider:
        yield provider


@pytest_asyncio.fixture
async def gw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    async with start_gateway(op, mongo_uri) as running:
        yield running


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that keeps cookies like one browser and never follows redirects."""
    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as client:
        yield client


@pytest.fixture
def db_name() -> str:
    return f"jog_test_{secrets.token_hex(6)}"


@pytest_asyncio.fixture(scope="session")
async def chromium_process() -> AsyncIterator[Browser]:
    """One Chromium for the session (per xdist worker); starting it took about a second."""
    async with launch_chromium() as browser:
        yield browser


@pytest_asyncio.fixture
async def chromium(chromium_process: Browser) -> AsyncIterator[Browser]:
    """The session's Chromium. ``new_page()`` opens a fresh context (its own cookies and
    storage); every context a test opened is closed after it."""
    before = set(chromium_process.contexts)
    yield chromium_process
    for context in chromium_process.contexts:
        if context not in before:
            await context.close()


@pytest.fixture(scope="session")
def keycloak(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Keycloak]:
    """One real Keycloak per test run, started on first use (40-200 s on a busy machine).
    Under pytest-xdist the workers share it (the first that asks starts it; the controlling
    process stops it when all are done, see ``pytest_sessionfinish``), so two Keycloak
    modules on two workers pay one start. Import a realm per module with
    ``await keycloak.import_realm(...)``; see tests/support/keycloak.py.
    ``JOG_KEYCLOAK_URL=http://127.0.0.1:P`` uses a server already running (started as
    ``Keycloak.start`` does, e.g. while writing tests)."""
    attached = os.environ.get("JOG_KEYCLOAK_URL")
    if attached:  # a Keycloak started by hand (same admin password): no start, no stop
        yield Keycloak.attach(attached)
        return
    if hasattr(request.config, "workerinput"):  # an xdist worker: the run's shared server
        yield Keycloak.shared(tmp_path_factory.getbasetemp().parent)
        return
    server = Keycloak.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controlling process of an xdist run stops the Keycloak its workers shared."""
    if hasattr(session.config, "workerinput"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and getattr(session.config.option, "numprocesses", None):
        Keycloak.stop_shared(factory.getbasetemp())
