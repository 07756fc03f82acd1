"""``jitsi-oidc-gateway demo``: the whole flow on one machine with nothing configured.

Starts the embedded SecantusDB store, the local test OpenID Provider (``tests/op``, Node's
oidc-provider; needs the repository checkout and ``npm ci`` there, which ``scripts/demo.sh``
does) with two accounts, a Jitsi stand-in page and the gateway, then prints the URL to open.
Everything listens on 127.0.0.1 only; cookies are not Secure because it is plain HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from tornado.httpserver import HTTPServer

REPO = Path(__file__).resolve().parents[1]

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


async def run_demo(port: int, jitsi_port: int) -> None:
    if not (REPO / "tests" / "op" / "server.mjs").exists():
        sys.exit("demo needs the repository checkout (tests/op); run scripts/demo.sh")
    sys.path.insert(0, str(REPO))
    from gateway.app import build_gateway, make_app, warm_up
    from gateway.config import settings_from_dict
    from gateway.embedded import EmbeddedMongo
    from gateway.standin import make_standin
    from gateway.store import Store
    from tests.support.op import TestOP

    logging.getLogger("httpx").setLevel(logging.WARNING)
    mongo = await asyncio.to_thread(EmbeddedMongo().start)
    op = await asyncio.to_thread(TestOP.start, DEMO_ACCOUNTS)
    store = None
    try:
        gateway_url = f"http://127.0.0.1:{port}"
        jitsi_url = f"http://127.0.0.1:{jitsi_port}"
        # Registered for RP-initiated logout (the IdP returns to /oidc/logged-out) and
        # back-channel logout, so the demo's sign-out ends the OP session too.
        client = await op.register_client(
            [f"{gateway_url}/oidc/redirect/demo"],
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
        make_app(gateway).listen(port, "127.0.0.1")
        standin = make_standin(gateway_url, settings.jitsi, settings.delivery.flag_parameter)
        HTTPServer(standin).listen(jitsi_port, "127.0.0.1")
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
        if store is not None:
            await store.close()
        op.stop()
        mongo.cleanup()
