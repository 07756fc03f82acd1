"""Load with faults, counted: 500 sign-ins at 32 at once through the real test OP, with
MongoDB restarted in the middle (run 1) and the gateway restarted in the middle (run 2).

Every sign-in must end in a Jitsi token or in the gateway's clear 503 page; no accepted
connection may be dropped; every audit event the people's requests produced must be in
MongoDB exactly once; the spool must end empty. Bounded in count and time, loopback only.
Marked ``load`` (the default test command runs it); the counts are printed.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from pymongo import AsyncMongoClient

from gateway.devtools.embedded import EmbeddedMongo
from gateway.devtools.op import TestOP
from tests.support.gateway import start_gateway
from tests.support.nginx import free_port
from tests.test_shutdown import start_serve, wait_ready, write_settings

# JOG_LOAD_SIGN_INS=5000 for a long run by hand (the suite runs 500)
SIGN_INS = int(os.environ.get("JOG_LOAD_SIGN_INS", "500"))
TIMEOUT = 600 * max(1, SIGN_INS // 500)

pytestmark = [pytest.mark.asyncio, pytest.mark.load, pytest.mark.timeout(TIMEOUT)]
CONCURRENCY = 32


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    request_ids: set[str] = field(default_factory=set)  # every gateway answer's X-Request-Id
    jtis: list[str] = field(default_factory=list)
    refused_connections: int = 0
    keepalive_retries: int = 0
    dropped: list[str] = field(default_factory=list)


async def gateway_get(client: httpx.AsyncClient, url: str, tally: Tally) -> httpx.Response:
    """One request to the gateway. A refused connection (the gateway restarting) is retried
    as a browser's reload would be. A GET sent on a kept-alive connection that the server
    closed before answering is retried once, as browsers do (RFC 9112 9.3.1): the stopping
    gateway closes its idle connections. Any other cut connection is a failure."""
    retried = False
    for _ in range(200):
        try:
            response = await client.get(url)
        except httpx.ConnectError:
            tally.refused_connections += 1
            await asyncio.sleep(0.1)
            continue
        except httpx.RemoteProtocolError as exc:
            if retried or "without sending a response" not in str(exc):
                tally.dropped.append(f"{type(exc).__name__} {url.split('?')[0]}")
                raise
            retried = True
            tally.keepalive_retries += 1
            continue
        except httpx.HTTPError as exc:
            tally.dropped.append(f"{type(exc).__name__} {url.split('?')[0]}")
            raise
        if "X-Request-Id" in response.headers:
            tally.request_ids.add(response.headers["X-Request-Id"])
        return response
    raise AssertionError("the gateway did not come back")


async def one_sign_in(base: str, op: TestOP, tally: Tally, n: int) -> None:
    async with httpx.AsyncClient(follow_redirects=False, timeout=60) as person:
        try:
            response = await gateway_get(person, f"{base}/oidc/auth?room=load{n % 40}", tally)
            if response.status_code == 503:
                tally.outcomes["outage_503"] += 1
                return
            assert response.status_code == 302, response.text
            callback = await op.login_over_http(
                person, response.headers["location"], "alice", "alice-pw"
            )
            url = callback
            for _ in range(4):
                response = await gateway_get(person, url, tally)
                if response.status_code == 503:
                    tally.outcomes["outage_503"] += 1
                    return
                if response.status_code == 400 and "already used" in response.text:
                    tally.outcomes["unexpected_state_reused"] += 1
                    return
                assert response.status_code == 302, (response.status_code, response.text)
                url = urljoin(base, response.headers["location"])
                if "jwt=" in url:
                    tally.jtis.append(url)
                    tally.outcomes["token"] += 1
                    return
            tally.outcomes["no_token"] += 1
        except httpx.HTTPError:
            tally.outcomes["dropped"] += 1


async def drive(base: str, op: TestOP, tally: Tally, fault_at: int, fault: Any) -> float:
    started = time.monotonic()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(SIGN_INS):
        queue.put_nowait(n)
    fault_task: asyncio.Task[None] | None = None

    async def worker() -> None:
        nonlocal fault_task
        while not queue.empty():
            n = queue.get_nowait()
            if n == fault_at and fault_task is None:
                fault_task = asyncio.create_task(fault())
            await one_sign_in(base, op, tally, n)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    if fault_task is not None:
        await fault_task
    return time.monotonic() - started


async def audit_check(mongo_uri: str, database: str, tally: Tally) -> dict[str, Any]:
    """Every request that produced events has them once: no duplicate (request, event)."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    try:
        docs = [
            d
            async for d in client[database]["audit"].find(
                {}, {"request_id": 1, "event": 1, "jti": 1, "outcome": 1, "reason": 1}
            )
        ]
    finally:
        await client.close()
    pairs = Counter((d.get("request_id"), d["event"]) for d in docs if d.get("request_id"))
    duplicates = sum(1 for count in pairs.values() if count > 1)
    minted = sum(1 for d in docs if d["event"] == "token_minted")
    with_events = {d.get("request_id") for d in docs}
    reasons = Counter(d["reason"] for d in docs if d.get("outcome") == "failure")
    return {
        "failures_by_reason": dict(reasons),
        "events": len(docs),
        "duplicates": duplicates,
        "token_minted": minted,
        "requests_answered": len(tally.request_ids),
        "request_ids_in_audit": len(tally.request_ids & with_events),
    }


def rss_mb(pid: int | None = None) -> float:
    """Resident memory now (this process when ``pid`` is None), in MB."""
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# PyMongo may leave a pooled socket to the restarted server for the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_mongodb_restarted_in_the_middle(op: TestOP, tmp_path: Path) -> None:
    storage = tmp_path / "db"
    server = await asyncio.to_thread(EmbeddedMongo(storage, durable=False).start)
    port = server.port
    tally = Tally()
    try:
        async with start_gateway(
            op, server.uri, mongodb={"timeout_seconds": 2}, audit={"write_timeout_seconds": 0.5}
        ) as gw:
            database = gw.settings.mongodb.database

            async def restart_mongodb() -> None:
                nonlocal server
                await asyncio.sleep(0.5)
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(2.0)
                server = await asyncio.to_thread(EmbeddedMongo(storage, port, durable=False).start)

            gc.collect()
            before = rss_mb()
            elapsed = await drive(gw.url, op, tally, SIGN_INS // 3, restart_mongodb)
            for _ in range(300):  # the spool drains once MongoDB is back
                if gw.store.audit.spool_depth == 0 and await gw.store.audit.flush(1):
                    break
                await asyncio.sleep(0.1)
            spool_left = gw.store.audit.spool_depth
            gc.collect()
            after = rss_mb()
            counts = await audit_check(server.uri, database, tally)
            # printed before the teardown, which a long run's restarted store may fail
            print("\nload with a MongoDB restart (counts):", dict(tally.outcomes), counts)
    finally:
        await asyncio.to_thread(server.cleanup)
        gc.collect()
    report = {
        "sign_ins": SIGN_INS,
        **tally.outcomes,
        "dropped_connections": len(tally.dropped),
        "spool_at_end": spool_left,
        "seconds": round(elapsed, 1),
        "rss_mb_before": round(before),
        "rss_mb_after": round(after),
        **counts,
    }
    print("\nload with a MongoDB restart:", report)
    assert tally.outcomes["token"] + tally.outcomes["outage_503"] == SIGN_INS, report
    assert tally.outcomes["token"] > SIGN_INS // 2 and not tally.dropped, report
    assert spool_left == 0 and counts["duplicates"] == 0, report
    assert counts["token_minted"] == tally.outcomes["token"], report
    assert counts["request_ids_in_audit"] >= tally.outcomes["token"], report


async def test_gateway_restarted_in_the_middle(op: TestOP, mongo_uri: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = await op.register_client([f"{url}/oidc/redirect/testop"])
    database = f"jog_test_{secrets.token_hex(6)}"
    cfg = tmp_path / "settings.yaml"
    write_settings(cfg, port, op, client, mongo_uri, database)
    tally = Tally()
    proc = start_serve(cfg, 1)
    memory: dict[str, float] = {}
    try:
        await wait_ready(url, proc)
        memory["first_process_start_mb"] = rss_mb(proc.pid)

        async def restart_gateway() -> None:
            nonlocal proc
            await asyncio.sleep(0.5)
            memory["first_process_mb"] = rss_mb(proc.pid)
            os.killpg(proc.pid, signal.SIGTERM)  # graceful: in-flight requests finish
            await asyncio.to_thread(proc.wait, 30)
            proc = start_serve(cfg, 1)
            await wait_ready(url, proc)

        elapsed = await drive(url, op, tally, SIGN_INS // 3, restart_gateway)
        memory["second_process_mb"] = rss_mb(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
        counts = await audit_check(mongo_uri, database, tally)
        spool_left = sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.spool"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        mongo: AsyncMongoClient = AsyncMongoClient(mongo_uri)
        await mongo.drop_database(database)
        await mongo.close()
    report = {
        "sign_ins": SIGN_INS,
        **tally.outcomes,
        "refused_while_restarting": tally.refused_connections,
        "idle_keepalive_closed_and_retried": tally.keepalive_retries,
        "dropped_connections": len(tally.dropped),
        "spool_bytes_at_end": spool_left,
        "seconds": round(elapsed, 1),
        **{k: round(v) for k, v in memory.items()},
        **counts,
    }
    print("\nload with a gateway restart:", report, tally.dropped[:10])
    # Memory: the first process before the load and under it (at the restart).
    assert memory["first_process_mb"] < memory["first_process_start_mb"] * 1.5 + 20, report
    assert tally.outcomes["token"] == SIGN_INS, report
    assert not tally.dropped, report
    assert counts["duplicates"] == 0 and spool_left == 0, report
    assert counts["token_minted"] == SIGN_INS, report
