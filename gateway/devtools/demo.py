"""``jitsi-oidc-gateway demo``: the whole flow on one machine with nothing configured.

Starts the embedded SecantusDB store, the local test OpenID Provider (``tests/op``, Node's
oidc-provider; needs the repository checkout and ``npm ci`` there, which ``scripts/demo.sh``
does) with two accounts, a Jitsi stand-in page and the gateway, then prints the URL to open.
Everything listens on 127.0.0.1 only; cookies are not Secure because it is plain HTTP.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from tornado.httpserver import HTTPServer

REPO = Path(__file__).resolve().parents[2]
DEMO_CLIENT_NAME = "Jitsi Meet (jitsi-oidc-gateway demo)"

DEMO_ACCOUNTS: list[dict[str, Any]] = [
    {
        "sub": "alice",
        "username": "alice",
        "password": "alice",
        "claims": {
            "name": "Alice Demo",
            "preferred_username": "alice",
            "email": "alice@example.org",
            "email_verified": True,
            "groups": ["staff"],
        },
    },
    {
        "sub": "bob",
        "username": "bob",
        "password": "bob",
        "claims": {"preferred_username": "bob", "email": "bob@example.org"},
    },
]


class DemoError(Exception):
    """The demo cannot start; the message says why and what to do."""


def _bind(port: int, option: str) -> list[socket.socket]:
    """Bind before anything starts, so a busy port is one line, not a traceback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        sock.setblocking(False)
        return [sock]
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DemoError(
                f"port {port} on 127.0.0.1 is already in use; choose another with {option} PORT"
            ) from None
        raise DemoError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None


async def run_demo(port: int, jitsi_port: int) -> None:
    if not (REPO / "tests" / "op" / "server.mjs").exists():
        sys.exit("demo needs the repository checkout (tests/op); run scripts/demo.sh")
    gateway_sockets = _bind(port, "--port")
    jitsi_sockets = _bind(jitsi_port, "--jitsi-port")
    sys.path.insert(0, str(REPO))
    from gateway.app import build_gateway, make_app, warm_up
    from gateway.config import settings_from_dict
    from gateway.devtools.embedded import EmbeddedMongo
    from gateway.devtools.op import TestOP
    from gateway.devtools.standin import make_standin
    from gateway.store import Store

    logging.getLogger("httpx").setLevel(logging.WARNING)
    mongo = await asyncio.to_thread(EmbeddedMongo().start)
    op = await asyncio.to_thread(TestOP.start, DEMO_ACCOUNTS)
    store = None
    gateway = None
    try:
        gateway_url = f"http://127.0.0.1:{port}"
        jitsi_url = f"http://127.0.0.1:{jitsi_port}"
        # Registered for RP-initiated logout (the IdP returns to /oidc/logged-out) and
        # back-channel logout, so the demo's sign-out ends the OP session too.
        client = await op.register_client(
            [f"{gateway_url}/oidc/redirect/demo"],
            client_name=DEMO_CLIENT_NAME,  # the OP's login page names it so, not by its id
            post_logout_redirect_uris=[f"{gateway_url}/oidc/logged-out"],
            backchannel_logout_uri=f"{gateway_url}/oidc/backchannel-logout",
            backchannel_logout_session_required=True,
        )
        settings = settings_from_dict(
            {
                "public_url": gateway_url,
                "listen": {"host": "127.0.0.1", "port": port},
                "mongodb": {"uri": mongo.uri, "database": "jitsi_oidc_gateway_demo"},
                "cookies": {"secret": secrets.token_urlsafe(32), "secure": False},
                "jitsi": {
                    "base_url": jitsi_url,
                    "app_id": "demo_app",
                    "domain": "meet.demo",
                    "app_secret": secrets.token_urlsafe(32),
                },
                "idps": [
                    {
                        "id": "demo",
                        "adapter": "generic",
                        "display_name": "Demo OP",
                        "issuer": op.issuer,
                        "client_id": client["client_id"],
                        "client_secret": client["client_secret"],
                        "scopes": ["openid", "profile", "email", "groups"],
                    }
                ],
            }
        )
        store = Store.connect(mongo.uri, settings.mongodb.database)
        gateway = build_gateway(settings, store)
        await warm_up(gateway)
        HTTPServer(make_app(gateway)).add_sockets(gateway_sockets)
        standin = make_standin(gateway_url, settings.jitsi, settings.delivery.flag_parameter)
        HTTPServer(standin).add_sockets(jitsi_sockets)
        print(
            f"\nDemo running. Open {jitsi_url}/standup\n"
            "Sign in as alice / alice or bob / bob. Ctrl-C stops.\n"
            f"(gateway {gateway_url}, OpenID Provider {op.issuer}, store {mongo.uri})\n",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if gateway is not None:
            await gateway.http.aclose()
        if store is not None:
            await store.close()
        op.stop()
        mongo.cleanup()
