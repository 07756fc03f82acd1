"""Audit export benchmark: 200,000 events out through ``/admin/audit`` and the CLI.

    python -m benchmarks.audit_export [--events 200000] [--mongodb-uri URI]

Starts the test OpenID Provider (``tests/op``) and a real gateway (as the tests do), a
SecantusDB in a temporary directory unless ``--mongodb-uri`` (or ``MONGODB_URI``) names a
server, loads the events (dated in the past, 3 minutes apart, so all of them are inside the
export's snapshot bound), then streams the whole range as NDJSON twice: over HTTP from the
gateway in this process (peak traced Python memory, ``tracemalloc``) and with
``jitsi-oidc-gateway audit export`` in a child process (its own peak RSS, from ``wait4``).
Prints the numbers and exits non-zero when a bound is exceeded (64 MiB traced for the API,
400 MiB RSS for the CLI: the whole range as objects needs several hundred MiB).

Moved out of the test suite, where it took 2-3 minutes; ``tests/test_audit_cli.py`` keeps a
small export that checks the same property (memory does not grow with the number of events).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

import httpx

from gateway.devtools.embedded import EmbeddedMongo
from tests.conftest import ACCOUNTS
from tests.support import auditdata
from tests.support.gateway import start_gateway
from tests.support.op import TestOP

TOKEN = "export-token-0123456789abcdef"
API_PEAK_BOUND_MIB = 64
CLI_RSS_BOUND_MIB = 400


def cli_export(config: Path, out: Path) -> tuple[int, float]:
    """``audit export`` in a child process; (exit code, the child's peak RSS in MiB)."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "audit", "export", "-c", str(config), "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            stderr.seek(0)
            sys.stderr.write(stderr.read().decode(errors="replace"))
    return proc.returncode, usage.ru_maxrss / 1024


async def run(op: TestOP, uri: str, total: int, batch: int) -> list[str]:
    problems: list[str] = []
    admin = {"tokens": [{"name": "ops", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]}
    # bulk loading with every audit index in place takes longer than 2 s a batch
    async with start_gateway(op, uri, admin=admin, mongodb={"timeout_seconds": 60}) as gw:
        collection = gw.store.audit.collection
        began = time.monotonic()
        await collection.drop_indexes()  # bulk load first, index after: much faster
        for first in range(0, total, batch):
            await collection.insert_many(
                # 3 minutes apart: all in the past, inside the export's snapshot bound
                list(
                    auditdata.documents(
                        min(batch, total - first), step=timedelta(minutes=3), first=first
                    )
                ),
                ordered=False,
            )
        loaded = time.monotonic()
        # the export sorts by (time, _id): only that index matters here
        await collection.create_index([("time", -1), ("_id", -1)], name="time_id")
        print(
            f"inserted {total} events in {loaded - began:.1f} s, "
            f"indexed in {time.monotonic() - loaded:.1f} s"
        )

        tracemalloc.start()
        began = time.monotonic()
        lines = 0
        async with (
            httpx.AsyncClient(timeout=600) as client,
            client.stream(
                "GET",
                f"{gw.url}/admin/audit",
                params={"format": "ndjson"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as response,
        ):
            if response.status_code != 200:
                problems.append(f"API export answered {response.status_code}")
            async for chunk in response.aiter_bytes():
                lines += chunk.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        took = time.monotonic() - began
        print(
            f"API NDJSON export: {lines} events in {took:.1f} s ({lines / took:,.0f}/s), "
            f"peak traced memory {peak / 2**20:.1f} MiB (bound {API_PEAK_BOUND_MIB} MiB)"
        )
        if lines != total:
            problems.append(f"API export: {lines} events, expected {total}")
        if peak >= API_PEAK_BOUND_MIB * 2**20:
            problems.append(f"API export: peak traced memory {peak / 2**20:.1f} MiB")

        with tempfile.TemporaryDirectory() as tmp:
            config = auditdata.cli_settings(Path(tmp) / "settings.yaml", uri, gw.store.db.name)
            out = Path(tmp) / "all.ndjson"
            began = time.monotonic()
            code, rss = await asyncio.to_thread(cli_export, config, out)
            took = time.monotonic() - began
            with out.open("rb") as f:
                exported = sum(1 for _ in f)
        print(
            f"CLI export: {exported} events in {took:.1f} s ({exported / took:,.0f}/s), "
            f"peak RSS of the exporting process {rss:.0f} MiB (bound {CLI_RSS_BOUND_MIB} MiB)"
        )
        if code != 0:
            problems.append(f"CLI export exited with {code}")
        if exported < total:  # plus the admin_query event of the API export
            problems.append(f"CLI export: {exported} events, expected at least {total}")
        if rss >= CLI_RSS_BOUND_MIB:
            problems.append(f"CLI export: peak RSS {rss:.0f} MiB")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--mongodb-uri", default=os.environ.get("MONGODB_URI"))
    args = parser.parse_args(argv)
    server = None
    uri = args.mongodb_uri
    if not uri:
        server = EmbeddedMongo(durable=False).start()
        uri = server.uri
        print(f"SecantusDB started at {uri}")
    try:
        with TestOP.start(ACCOUNTS) as op:
            problems = asyncio.run(run(op, uri, args.events, args.batch))
    finally:
        if server is not None:
            server.cleanup()
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
