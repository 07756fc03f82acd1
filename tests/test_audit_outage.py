"""MongoDB stops in the middle of a run of sign-ins and comes back: no audit event is lost.

This test runs its own SecantusDB on a fixed storage directory so it can stop and restart it
on the same port (also when the rest of the suite uses ``MONGODB_URI``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from gateway.devtools.embedded import EmbeddedMongo
from gateway.devtools.op import TestOP
from tests.support.gateway import GatewayUnderTest, start_gateway

pytestmark = pytest.mark.asyncio

SIGN_IN = ["flow_started", "login_succeeded", "token_minted"]


async def sign_ins(gw: GatewayUnderTest, op: TestOP, rooms: list[str]) -> None:
    for room in rooms:
        async with httpx.AsyncClient(follow_redirects=False, timeout=15) as browser:
            response = await gw.sign_in(browser, op, room=room)
            assert response.status_code == 302, response.text


async def test_events_survive_a_database_outage_once_and_in_order(
    op: TestOP, tmp_path: Path
) -> None:
    server = await asyncio.to_thread(EmbeddedMongo(tmp_path / "db").start)
    port = server.port
    try:
        async with start_gateway(
            op,
            server.uri,
            mongodb={"timeout_seconds": 1},
            audit={"write_timeout_seconds": 0.5, "replay_interval_seconds": 0.2},
        ) as gw:
            audit = gw.store.audit
            await sign_ins(gw, op, ["before1", "before2", "before3"])

            await asyncio.to_thread(server.stop)
            async with httpx.AsyncClient(timeout=15) as browser:
                for i in range(3):
                    down = await browser.get(f"{gw.url}/oidc/auth", params={"room": f"down{i}"})
                    assert down.status_code == 503
            assert audit.spool_depth == 3
            assert audit.write_failures >= 1

            server = await asyncio.to_thread(EmbeddedMongo(tmp_path / "db", port=port).start)
            for _ in range(150):
                if audit.spool_depth == 0:
                    break
                await asyncio.sleep(0.2)
            assert audit.spool_depth == 0, "spool not replayed after MongoDB came back"
            await sign_ins(gw, op, ["after1", "after2"])
            assert await audit.flush()

            docs = await gw.store.audit.collection.find(
                {}, sort=[("time", 1), ("_id", 1)]
            ).to_list()
            got = [(d["event"], d.get("room"), d.get("reason")) for d in docs]
            expected = [(e, f"before{n}", None) for n in (1, 2, 3) for e in SIGN_IN]
            expected += [("login_failed", f"down{i}", "store_unavailable") for i in range(3)]
            expected += [(e, f"after{n}", None) for n in (1, 2) for e in SIGN_IN]
            assert got == expected
            assert len({d["_id"] for d in docs}) == len(docs)
            assert len({(d["request_id"], d["event"]) for d in docs}) == len(docs)
            assert audit.replayed == 3 and audit.dropped == 0
            spool = audit.spool
            assert spool is not None and spool.path is not None
            assert spool.path.stat().st_size == 0
    finally:
        server.cleanup()
