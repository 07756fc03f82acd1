"""Start a real gateway (Tornado server on a free loopback port) for one test."""

from __future__ import annotations

import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import pymongo
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
    direct_url: str = ""  # where the gateway itself listens (url may be a proxy's)

    async def sign_in(
        self,
        browser: httpx.AsyncClient,
        op: TestOP,
        room: str = "standup",
        username: str = "alice",
        password: str = "alice-pw",
        **params: str,
    ) -> httpx.Response:
        """Room request -> IdP login -> callback; returns the response that sends the
        browser on to the room (the callback mints at once; a gateway path in between, such
        as the token service's ``/oidc/authorize``, is followed)."""
        callback = await self.start_and_login(browser, op, room, username, password, **params)
        response = await browser.get(callback)
        while response.status_code == 302 and response.headers["location"].startswith("/"):
            response = await browser.get(urljoin(self.url, response.headers["location"]))
        return response

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


def with_query(url: str, **changes: str | None) -> str:
    """``url`` with query parameters set (or removed, for None): forged callbacks."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def settings_for(
    url: str,
    op: TestOP,
    client: dict[str, Any],
    db: str,
    mongo_uri: str,
    more_idps: Sequence[dict[str, Any]] = (),
    **overrides: Any,
) -> Settings:
    idp: dict[str, Any] = {
        "id": "testop",
        "adapter": "generic",
        "display_name": "Test OP",
        "issuer": op.issuer,
        "client_id": client["client_id"],
        "client_secret": client.get("client_secret"),
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
        "idps": [idp, *more_idps],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return settings_from_dict(data)


def logout_client_metadata(url: str) -> dict[str, Any]:
    """Client registration for RP-initiated and back-channel logout at the gateway ``url``."""
    return {
        "post_logout_redirect_uris": [f"{url}/oidc/logged-out"],
        "backchannel_logout_uri": f"{url}/oidc/backchannel-logout",
        "backchannel_logout_session_required": True,
    }


@asynccontextmanager
async def start_gateway(
    op: TestOP,
    mongo_uri: str,
    *,
    auth_method: str = "client_secret_basic",
    client_secret: str | None = None,
    clock: MovableClock | None = None,
    store_uri: str | None = None,
    logout_client: bool = False,
    more_idps: Sequence[tuple[TestOP, dict[str, Any]]] = (),
    proxy_url: str | None = None,
    client_metadata: Callable[[str], dict[str, Any]] | None = None,
    **overrides: Any,
) -> AsyncIterator[GatewayUnderTest]:
    """A gateway for ``op`` (IdP id ``testop``, ``idp=`` overrides its entry) plus one IdP per
    ``more_idps`` entry (each needs an ``id``; a client is registered at its OP).
    ``client_metadata(url)`` adds registration metadata (``jwks``, ``jwks_uri``...)."""
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    port = sockets[0].getsockname()[1]
    # Whatever fails while the gateway is being set up (a ConfigError a test expects, an
    # unreachable OP) must not leave the bound socket or the store client for the GC to find.
    store: Store | None = None
    gateway: Gateway | None = None
    spool_dir: str | None = None
    try:
        # Behind a proxy (nginx) the public URL is the proxy's; the gateway listens on ``port``.
        url = proxy_url or f"http://127.0.0.1:{port}"
        client = await op.register_client(
            [f"{url}/oidc/redirect/{overrides.get('idp', {}).get('id', 'testop')}"],
            token_endpoint_auth_method=auth_method,
            client_secret=client_secret,
            **(logout_client_metadata(url) if logout_client else {}),
            **(client_metadata(url) if client_metadata else {}),
        )
        db = f"jog_test_{secrets.token_hex(6)}"
        extra_idps = []
        for other_op, idp_overrides in more_idps:
            registered = await other_op.register_client(
                [f"{url}/oidc/redirect/{idp_overrides['id']}"]
            )
            extra_idps.append(
                {
                    "adapter": "generic",
                    "issuer": other_op.issuer,
                    "client_id": registered["client_id"],
                    "client_secret": registered["client_secret"],
                    "scopes": ["openid", "profile", "email", "groups", "roles"],
                    **idp_overrides,
                }
            )
        # Each gateway spools audit events in its own directory (never the working directory).
        # Answers wait for their audit events here: the tests read the collection right after
        # an answer. The default (journaled, stored behind the answer) has its own tests in
        # tests/test_audit_journal.py.
        spool_dir = tempfile.mkdtemp(prefix="jog-spool-")
        audit = {"spool_dir": spool_dir, "wait_for_store": True, **overrides.get("audit", {})}
        overrides["audit"] = audit
        settings = settings_for(url, op, client, db, mongo_uri, more_idps=extra_idps, **overrides)
        clock = clock or MovableClock()
        # settings.mongodb.database is db unless the test shares one database between gateways.
        database = settings.mongodb.database
        store = Store.connect(
            store_uri or mongo_uri,
            database,
            settings.mongodb.timeout_seconds,
            settings.mongodb.durable_writes,
        )
        gateway = build_gateway(settings, store, clock=clock)
        await warm_up(gateway)
        server = HTTPServer(make_app(gateway))
        server.add_sockets(sockets)
    except BaseException:
        for sock in sockets:
            sock.close()
        if gateway is not None:
            await gateway.http.aclose()
        if store is not None:
            await store.close()
        if spool_dir is not None:
            shutil.rmtree(spool_dir, ignore_errors=True)
        raise
    assert gateway is not None and store is not None and spool_dir is not None
    try:
        direct = f"http://127.0.0.1:{port}"
        yield GatewayUnderTest(url, gateway, settings, store, clock, client, direct)
    finally:
        server.stop()
        await server.close_all_connections()
        await gateway.http.aclose()
        await store.audit.close(timeout=5)  # flush before the database goes
        if store_uri is None:
            # one 60 s deadline, not the gateway's 2 s socket timeout: after a long load
            # run the store may take longer to drop the database on a busy machine
            with pymongo.timeout(60):
                await store.client.drop_database(db)
        await store.close()
        shutil.rmtree(spool_dir, ignore_errors=True)
