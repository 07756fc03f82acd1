"""Audit log benchmark: load >= 1,000,000 events, then time the queries operators run.

    python benchmarks/audit_bench.py [--events 1000000] [--mongodb-uri URI]

Without ``--mongodb-uri`` a SecantusDB is started in a temporary directory (as the tests do).
Prints: load and index times, the time of typical queries (first page of 100, through the same
code as the API), the stats aggregation, and the time and peak memory of an NDJSON export of
the whole range (run as ``jitsi-oidc-gateway audit export`` in a child process; its peak RSS
is read from ``getrusage``). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.devtools.embedded import EmbeddedMongo
from gateway.store import Store
from gateway.store import audit_query as aq
from tests.support import auditdata

STEP = timedelta(seconds=3)  # 1M events span about 35 days


async def timed(label: str, work):  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    result = await work
    print(f"  {label:<46} {1000 * (time.perf_counter() - began):9.1f} ms")
    return result


async def run(uri: str, events: int, batch: int) -> str:
    db = f"jog_bench_{secrets.token_hex(4)}"
    store = Store.connect(uri, db, 1800)
    collection = store.audit.collection
    began = time.perf_counter()
    for first in range(0, events, batch):
        docs = list(auditdata.documents(min(batch, events - first), step=STEP, first=first))
        await collection.insert_many(docs, ordered=False)
    loaded = time.perf_counter() - began
    print(f"loaded {events} events in {loaded:.1f} s ({events / loaded:,.0f}/s, insert_many)")
    began = time.perf_counter()
    await store.audit.ensure_indexes()
    print(f"built the audit indexes in {time.perf_counter() - began:.1f} s")

    start = auditdata.START
    mid = start + STEP * (events // 2)
    day = timedelta(days=1)
    now = mid + day * 60

    def query(**params: str):  # type: ignore[no-untyped-def]
        return aq.page(collection, aq.parse_query(params, now=now))

    span = {"since": mid.isoformat(), "until": (mid + day).isoformat()}
    print("queries (first page of 100, newest first):")
    await timed("latest events, no filter", query())
    await timed("by subject", query(subject="user7-sub"))
    await timed("by subject, page 2 (cursor)", _second_page(collection, now, subject="user7-sub"))
    await timed("by e-mail", query(email="user3@example.org"))
    await timed("by room + 1 day", query(room="retro", **span))
    await timed("failures by reason", query(outcome="failure", reason="policy_denied"))
    await timed("failures by reason + 1 day", query(reason="state_reused", **span))
    await timed("by request id", query(request_id=f"req{events // 3:08d}"))
    await timed("by client IP + IdP", query(client_ip="10.0.1.4", idp="corp"))
    at_event = (start + STEP * (events // 3 * 5 // 5 + 3)).isoformat()  # a token_minted time
    await timed(
        "event + since = an event's exact time", query(event="token_minted", since=at_event)
    )
    await timed("since=0001-01-01, limit 1", query(since="0001-01-01", limit="1"))
    await timed("since=999999d, limit 1", query(since="999999d", limit="1"))
    await timed("oldest first, page 2 (keyset + snapshot)", _second_page(collection, now, "asc"))
    await timed(
        "oldest first by event, page 2", _second_page(collection, now, "asc", "login_failed")
    )
    await timed(
        "newest first by event, page 2", _second_page(collection, now, "desc", "login_failed")
    )
    week = {"since": mid.isoformat(), "until": (mid + 7 * day).isoformat()}
    print("stats (aggregation pipelines):")
    await timed("stats, 1 day, hourly", aq.stats(collection, aq.parse_query(span, now=now), "hour"))
    await timed("stats, 7 days, daily", aq.stats(collection, aq.parse_query(week, now=now)))
    await timed("stats, whole range, daily", aq.stats(collection, aq.AuditQuery()))
    await store.close()
    return db


async def _second_page(collection, now, order="desc", event=None, **params):  # type: ignore[no-untyped-def]
    params = {"order": order, **params} | ({"event": event} if event else {})
    _, cursor = await aq.page(collection, aq.parse_query(params, now=now))
    return await aq.page(collection, aq.parse_query({**params, "cursor": cursor}, now=now))


def export(uri: str, db: str, events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "all.ndjson"
        began = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "audit",
                "export",
                "--mongodb-uri",
                uri,
                "--database",
                db,
                "-o",
                str(out),
            ],
            check=True,
            cwd=tmp,
        )
        took = time.perf_counter() - began
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        size = out.stat().st_size
        with out.open("rb") as f:
            lines = sum(1 for _ in f)
    print("export (jitsi-oidc-gateway audit export, NDJSON, whole range):")
    print(
        f"  {lines} events, {size / 2**20:.0f} MiB in {took:.1f} s "
        f"({lines / took:,.0f} events/s), peak RSS of the exporting process {peak:.0f} MiB"
    )
    assert lines == events


async def drop(uri: str, db: str) -> None:
    store = Store.connect(uri, db, 1800)
    await store.client.drop_database(db)
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--mongodb-uri", default=os.environ.get("MONGODB_URI"))
    args = parser.parse_args()
    server = None
    uri = args.mongodb_uri
    if not uri:
        server = EmbeddedMongo().start()
        uri = server.uri
        print(f"SecantusDB started at {uri}")
    try:
        db = asyncio.run(run(uri, args.events, args.batch))
        export(uri, db, args.events)
        if server is None:  # an embedded server's storage is removed whole
            asyncio.run(drop(uri, db))
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
