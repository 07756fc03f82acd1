"""Operators' reads against people's sign-ins: the audit log at 200,000 events.

    python -m benchmarks.admin_load [--events 200000] [--signins 10] [--mongodb-uri URI]

Starts the test OpenID Provider and a real gateway (as the tests do) on a SecantusDB in a
temporary directory unless ``--mongodb-uri`` (or ``MONGODB_URI``) names a server, loads the
events with every audit index, then times what the web page asks for (its default table
page and the chart's two statistics grids), the heaviest read the API offers (statistics
over the whole log), and sequential sign-ins through the test OP: once with nothing else
running, once while that heaviest read runs in a loop. Prints the figures; the point is the
comparison, so nothing is asserted (see docs/audit.md, "The audit log at 200,000 events").
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import time
from datetime import timedelta
from typing import Any

import httpx

from gateway.devtools.embedded import EmbeddedMongo
from gateway.store import Store
from gateway.store import audit_query as aq
from tests.conftest import ACCOUNTS
from tests.support import auditdata
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP

TOKEN = "admin-load-token-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def timed(client: httpx.AsyncClient, url: str, params: dict[str, str]) -> float:
    began = time.monotonic()
    answer = await client.get(url, params=params, headers=HEADERS)
    took = time.monotonic() - began
    print(f"  {answer.status_code} {took:6.2f} s  {url.rsplit('/admin', 1)[1]} {params}")
    return took


async def sign_ins(gw: GatewayUnderTest, op: TestOP, count: int) -> list[float]:
    """Sequential full sign-ins (entry, the OP's login, callback, room token), each timed."""
    took: list[float] = []
    for i in range(count):
        async with httpx.AsyncClient(follow_redirects=False, timeout=120) as browser:
            began = time.monotonic()
            done = await gw.sign_in(browser, op, room=f"load{i}")
            took.append(time.monotonic() - began)
            assert done.status_code == 302, done.status_code
    return took


def summary(label: str, values: list[float]) -> str:
    return (
        f"{label}: median {statistics.median(values):.2f} s, "
        f"max {max(values):.2f} s over {len(values)}"
    )


async def run(op: TestOP, uri: str, total: int, signins: int) -> None:
    admin = {"tokens": [{"name": "ops", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}
    overrides: dict[str, Any] = {"admin": admin, "mongodb": {"timeout_seconds": 60}}
    async with start_gateway(op, uri, **overrides) as gw:
        collection = gw.store.audit.collection
        began = time.monotonic()
        await collection.drop_indexes()
        for first in range(0, total, 10_000):
            docs = auditdata.documents(
                min(10_000, total - first), step=timedelta(seconds=12), first=first
            )
            await collection.insert_many(list(docs), ordered=False)
        loaded = time.monotonic()
        # 14 indexes over 200,000 events take minutes on the embedded store: a client of
        # its own with a long timeout builds them
        builder = Store.connect(uri, gw.store.db.name, 1800)
        try:
            await builder.audit.ensure_indexes()
        finally:
            await builder.close()
        print(
            f"{total} events loaded in {loaded - began:.0f} s, "
            f"indexed in {time.monotonic() - loaded:.0f} s"
        )
        base = f"{gw.url}/admin/audit"
        async with httpx.AsyncClient(timeout=600) as client:
            print("the web page's reads:")
            await timed(client, base, {"limit": "50"})
            for event in ("login_succeeded", "login_failed"):
                await timed(client, f"{base}/stats", {"event": event, "by": "idp,day", "top": "1"})
            q = aq.parse_query({"event": "login_succeeded,login_failed"}, now=gw.gateway.now())
            began = time.monotonic()
            await gw.store.audit.reader.grid(q, "day", ("event", "idp"))
            print(f"  the web chart's one grid read now: {time.monotonic() - began:.2f} s")
            print("the heaviest read:")
            heavy = await timed(client, f"{base}/stats", {})

            idle = await sign_ins(gw, op, signins)
            print(summary("sign-ins, nothing else running", idle))

            stop = asyncio.Event()

            async def keep_reading() -> int:
                rounds = 0
                async with httpx.AsyncClient(timeout=600) as reader:
                    while not stop.is_set():
                        await reader.get(f"{base}/stats", headers=HEADERS)
                        rounds += 1
                return rounds

            load = asyncio.create_task(keep_reading())
            await asyncio.sleep(min(heavy / 2, 5))  # the read is under way
            busy = await sign_ins(gw, op, signins)
            stop.set()
            rounds = await load
            print(summary(f"sign-ins during the heaviest read ({rounds} rounds)", busy))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--signins", type=int, default=10)
    parser.add_argument("--mongodb-uri", default=os.environ.get("MONGODB_URI"))
    args = parser.parse_args(argv)
    server = None
    uri = args.mongodb_uri
    if not uri:
        server = EmbeddedMongo(durable=False).start()
        uri = server.uri
    try:
        with TestOP.start(ACCOUNTS) as op:
            asyncio.run(run(op, uri, args.events, args.signins))
    finally:
        if server is not None:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
