"""Start a real gateway (Tornado server on a free loopback port) for one test."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from gateway.app import build_gateway, make_app, warm_up
from gateway.config import Settings, settings_from_dict
from gateway.context import Gateway
from gateway.store import Store
from tests.support.op import TestOP

JITSI_BASE = "http://127.0.0.1:9/meet"
APP_SECRET = "test-app-secret-0123456789abcdefghij"


@dataclass
class MovableClock:
    """Wall clock plus an offset the test can move."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class GatewayUnderTest:
    url: str
    gateway: Gateway
    settings: Settings
    store: Store
    clock: MovableClock
    client: dict[str, Any] = field(default_factory=dict)

    async def sign_in(
        self,
        browser: httpx.AsyncClient,
        op: TestOP,
        room: str = "standup",
        username: str = "alice",
        password: str = "alice-pw",
        **params: str,
    ) -> httpx.Response:
        """Room request -> IdP login -> callback -> tokenize; returns tokenize's response."""
        callback = await self.start_and_login(browser, op, room, username, password, **params)
        response = await browser.get(callback)
        assert response.status_code == 302, response.text
        return await browser.get(urljoin(self.url, response.headers["location"]))

    async def start_and_login(
        self,
        browser: httpx.AsyncClient,
        op: TestOP,
        room: str = "standup",
        username: str = "alice",
        password: str = "alice-pw",
        **params: str,
    ) -> str:
        """Up to the IdP's redirect back to us; returns the callback URL (not requested)."""
        response = await browser.get(f"{self.url}/oidc/auth", params={"room": room, **params})
        assert response.status_code == 302, response.text
        return await op.login_over_http(browser, response.headers["location"], username, password)


def token_from(location: str) -> str:
    return parse_qs(urlsplit(location).query)["jwt"][0]


def settings_for(
    url: str, op: TestOP, client: dict[str, Any], db: str, mongo_uri: str, **overrides: Any
) -> Settings:
    idp: dict[str, Any] = {
        "id": "testop",
        "adapter": "generic",
        "display_name": "Test OP",
        "issuer": op.issuer,
        "client_id": client["client_id"],
        "client_secret": client["client_secret"],
        "token_endpoint_auth_method": client.get(
            "token_endpoint_auth_method", "client_secret_basic"
        ),
        "scopes": ["openid", "profile", "email", "groups"],
        **overrides.pop("idp", {}),
    }
    data: dict[str, Any] = {
        "public_url": url,
        "mongodb": {"uri": mongo_uri, "database": db, "timeout_seconds": 2},
        "cookies": {"secret": secrets.token_urlsafe(32), "secure": False},
        "jitsi": {
            "base_url": JITSI_BASE,
            "app_id": "test_app",
            "audience": "jitsi",
            "domain": "meet.test",
            "app_secret": APP_SECRET,
        },
        "idps": [idp],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return settings_from_dict(data)


@asynccontextmanager
async def start_gateway(
    op: TestOP,
    mongo_uri: str,
    *,
    auth_method: str = "client_secret_basic",
    client_secret: str | None = None,
    clock: MovableClock | None = None,
    store_uri: str | None = None,
    **overrides: Any,
) -> AsyncIterator[GatewayUnderTest]:
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    port = sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    client = await op.register_client(
        [f"{url}/oidc/redirect"],
        token_endpoint_auth_method=auth_method,
        client_secret=client_secret,
    )
    db = f"jog_test_{secrets.token_hex(6)}"
    settings = settings_for(url, op, client, db, mongo_uri, **overrides)
    clock = clock or MovableClock()
    store = Store.connect(store_uri or mongo_uri, db, settings.mongodb.timeout_seconds)
    gateway = build_gateway(settings, store, clock=clock)
    await warm_up(gateway)
    server = HTTPServer(make_app(gateway))
    server.add_sockets(sockets)
    try:
        yield GatewayUnderTest(url, gateway, settings, store, clock, client)
    finally:
        server.stop()
        await server.close_all_connections()
        if store_uri is None:
            await store.client.drop_database(db)
        await store.close()
