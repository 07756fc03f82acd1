"""What each store command of a sign-in costs as the embedded store fills.

    python -m benchmarks.store_growth [--levels 0,20000,100000] [--audit-events N]
                                      [--ops 200] [--sweep] [--json out.json]

Starts SecantusDB as the gateway's default does (its own process, fsync at every commit),
creates the gateway's indexes (``Store.ensure_indexes``), then at each fill level (sign-ins
stored: as many flows, sessions and two audit events each, inserted in bulk) runs ``--ops``
of every command a sign-in sends through the gateway's own store code: the flow insert, the
flow's single-use consumption, the session insert, the session read and an audit insert. It
reports the store process's CPU per command (from ``/proc``, the store's own process), the
query plan the store chose, and with ``--sweep`` its CPU per idle minute (the TTL sweep).
Flows are the worst case: every one still inside its lifetime (a busy deployment keeps ten
minutes of them). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo.errors import BulkWriteError

from adapters.base import Identity
from benchmarks.procs import cpu_seconds
from gateway.devtools.embedded import EmbeddedMongo
from gateway.hashing import sha256_hex
from gateway.store import Store
from gateway.store.flows import Flow
from gateway.store.sessions import IdpLogin

BATCH = 1000


def flow(now: datetime) -> Flow:
    return Flow(
        idp="bench",
        room=f"room-{secrets.token_hex(4)}",
        tenant=None,
        nonce=secrets.token_urlsafe(24),
        code_verifier=secrets.token_urlsafe(48),
        created_at=now,
        expires_at=now + timedelta(minutes=10),
    )


def identity(i: int) -> Identity:
    return Identity(
        idp="bench",
        issuer="http://127.0.0.1:1/op",
        subject=f"bench-{i}",
        username=f"user{i}",
        name=f"Bench User {i}",
        email=f"user{i}@example.org",
        email_verified=True,
        groups=("bench:staff",),
    )


def audit_event(i: int, event: str, now: datetime) -> dict[str, Any]:
    return {
        "event": event,
        "outcome": "success",
        "idp": "bench",
        "subject": f"bench-{i}",
        "username": f"user{i}",
        "email": f"user{i}@example.org",
        "room": f"room-{i % 500}",
        "client_ip": "127.0.0.1",
        "request_id": secrets.token_hex(8),
        "flow_hash": secrets.token_hex(32),
        "time": now,
    }


async def insert_all(collection: Any, docs: list[dict[str, Any]]) -> None:
    """``insert_many`` that takes a duplicate key for the success it is: under load the
    driver retries a batch the store had applied (it does not deduplicate retried writes)."""
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
            raise


async def fill(store: Store, start: int, end: int, audit_per_sign_in: float) -> None:
    """Sign-ins ``start`` to ``end`` stored in bulk: their flows (consumed), sessions and
    audit events, shaped as the gateway's code shapes them."""
    now = datetime.now(UTC)
    for first in range(start, end, BATCH):
        ids = range(first, min(first + BATCH, end))
        flows, sessions, events = [], [], []
        for i in ids:
            f = flow(now)
            flows.append(
                {
                    "_id": sha256_hex(secrets.token_hex(16)),
                    "browser": sha256_hex(secrets.token_hex(16)),
                    "consumed_at": now,
                    "consumed_by": secrets.token_hex(16),
                    **f.__dict__,
                }
            )
            who = identity(i)
            sessions.append(
                {
                    "_id": sha256_hex(secrets.token_hex(16)),
                    "identity": {"idp": who.idp, "subject": who.subject, "username": who.username},
                    "idp_sid": None,
                    "idp_sub": who.subject,
                    "email_key": who.email,
                    "id_token": "x" * 900,
                    "created_at": now,
                    "expires_at": now + timedelta(hours=8),
                }
            )
        for j in range(int(len(ids) * audit_per_sign_in)):
            events.append(store.audit.prepare(audit_event(first + j, "login_succeeded", now)))
        await insert_all(store.flows.collection, flows)
        await insert_all(store.sessions.collection, sessions)
        if events:
            await insert_all(store.audit.collection, events)


async def timed(pid: int, ops: int, one: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    """Store CPU and wall time per command over ``ops`` commands, one at a time."""
    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    for i in range(ops):
        await one(i)
    cpu1, wall1 = cpu_seconds(pid), time.perf_counter()
    return {
        "store_cpu_ms": round(1000 * (cpu1 - cpu0) / ops, 3),
        "wall_ms": round(1000 * (wall1 - wall0) / ops, 3),
    }


def plan_of(explained: dict[str, Any]) -> str:
    """The winning plan's stages, outermost first (IXSCAN/COLLSCAN/IDHACK...)."""
    stages, node = [], explained.get("queryPlanner", {}).get("winningPlan", {})
    while isinstance(node, dict) and node:
        name = node.get("stage") or node.get("planType") or "?"
        if node.get("indexName"):
            name += f"({node['indexName']})"
        stages.append(str(name))
        node = node.get("inputStage") or (node.get("inputStages") or [None])[0]
    return " <- ".join(stages) or json.dumps(explained)[:200]


async def explain(store: Store, collection: str, command: dict[str, Any]) -> str:
    try:
        return plan_of(await store.db.command({"explain": command, "verbosity": "queryPlanner"}))
    except Exception as exc:  # the store may not explain every command
        return f"not explained: {type(exc).__name__}: {str(exc)[:120]}"


async def measure_level(store: Store, pid: int, ops: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    states = [secrets.token_urlsafe(24) for _ in range(ops)]
    browser = secrets.token_urlsafe(24)
    session_ids = [secrets.token_urlsafe(32) for _ in range(ops)]
    results: dict[str, Any] = {}
    results["flow_insert"] = await timed(
        pid, ops, lambda i: store.flows.create(states[i], browser, flow(now))
    )
    results["flow_consume"] = await timed(
        pid, ops, lambda i: store.flows.consume(states[i], browser, now)
    )
    results["session_insert"] = await timed(
        pid,
        ops,
        lambda i: store.sessions.create(
            session_ids[i],
            IdpLogin(identity(i), f"bench-{i}", None, "x" * 900),
            created_at=now,
            expires_at=now + timedelta(hours=8),
        ),
    )
    results["session_read"] = await timed(
        pid, ops, lambda i: store.sessions.record(session_ids[i], now)
    )
    results["audit_insert"] = await timed(
        pid,
        ops,
        lambda i: store.audit.collection.insert_one(
            store.audit.prepare(audit_event(i, "token_minted", now))
        ),
    )
    key = sha256_hex(states[0])
    results["plans"] = {
        "flow_findAndModify_before": await explain(
            store,
            "flows",
            {
                "findAndModify": "flows",
                "query": {
                    "_id": key,
                    "browser": "x",
                    "consumed_at": None,
                    "expires_at": {"$gt": now},
                },
                "update": {"$set": {"consumed_at": now}},
            },
        ),
        "flow_find": await explain(store, "flows", {"find": "flows", "filter": {"_id": key}}),
        "flow_update": await explain(
            store,
            "flows",
            {
                "update": "flows",
                "updates": [
                    {
                        "q": {"_id": key, "consumed_at": None},
                        "u": {"$set": {"consumed_at": now}},
                    }
                ],
            },
        ),
        "session_read": await explain(
            store, "sessions", {"find": "sessions", "filter": {"_id": sha256_hex(session_ids[0])}}
        ),
    }
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    mongo = await asyncio.to_thread(EmbeddedMongo(durable=not args.no_fsync).start)
    try:
        assert mongo.proc is not None
        store = Store.connect(mongo.uri, f"jog_growth_{secrets.token_hex(4)}", 600)
        await store.ensure_indexes()
        found: dict[str, Any] = {"levels": {}}
        stored = 0
        for level in args.levels:
            t0 = time.perf_counter()
            await fill(store, stored, level, 2.0)
            stored = max(stored, level)
            print(
                f"filled to {level} sign-ins in {time.perf_counter() - t0:.0f} s", file=sys.stderr
            )
            found["levels"][str(level)] = await measure_level(store, mongo.proc.pid, args.ops)
            if args.sweep:
                found["levels"][str(level)]["idle_store_cpu_ms_per_minute"] = await idle(
                    mongo.proc.pid
                )
            print(json.dumps(found["levels"][str(level)]), file=sys.stderr, flush=True)
        if args.audit_events:
            have = await store.audit.collection.estimated_document_count()
            t0 = time.perf_counter()
            await fill_audit(store, have, args.audit_events)
            print(
                f"audit to {args.audit_events} in {time.perf_counter() - t0:.0f} s", file=sys.stderr
            )
            found["audit_events"] = args.audit_events
            found["levels"][f"audit {args.audit_events}"] = await measure_level(
                store, mongo.proc.pid, args.ops
            )
            if args.sweep:
                found["levels"][f"audit {args.audit_events}"][
                    "idle_store_cpu_ms_per_minute"
                ] = await idle(mongo.proc.pid)
        await store.client.close()
        return found
    finally:
        mongo.cleanup()


async def idle(pid: int, seconds: float = 125) -> float:
    """The store's CPU per minute with no commands: its TTL sweep (about every 60 s), which
    walks every document of every collection with a TTL index, expired or not."""
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return round(1000 * (cpu_seconds(pid) - before) * 60 / seconds, 1)


async def fill_audit(store: Store, have: int, total: int) -> None:
    now = datetime.now(UTC)
    for first in range(have, total, 5 * BATCH):
        n = min(5 * BATCH, total - first)
        docs = [store.audit.prepare(audit_event(first + j, "token_minted", now)) for j in range(n)]
        await insert_all(store.audit.collection, docs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_growth")
    parser.add_argument(
        "--levels",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[0, 20_000, 100_000],
        help="sign-ins stored at each measurement",
    )
    parser.add_argument("--audit-events", type=int, default=0, help="then fill audit to N")
    parser.add_argument("--ops", type=int, default=200, help="commands of each kind per level")
    parser.add_argument("--sweep", action="store_true", help="and the idle CPU (TTL sweep)")
    parser.add_argument("--no-fsync", action="store_true", help="the store without fsync")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    data = asyncio.run(run(args))
    text = json.dumps(data, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
