"""``jitsi-oidc-gateway audit ...`` against the real server.

Queries, stats, exports and their messages run ``gateway.cli.main(argv)`` in this process;
``tail --follow`` (ended by a signal) and a closed pipe (``| head``) run a real process.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from gateway.store import Store
from tests.support import auditdata
from tests.support.cli import Ran, run_cli
from tests.support.gateway import start_gateway
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

N = 300
DATA = list(auditdata.documents(N))


@pytest_asyncio.fixture
async def store(mongo_uri: str, db_name: str) -> AsyncIterator[Store]:
    s = Store.connect(mongo_uri, db_name, 5)
    await s.audit.ensure_indexes()
    try:
        yield s
    finally:
        await s.client.drop_database(db_name)
        await s.close()


def cli(config: Path, *args: str) -> Ran:
    """``jitsi-oidc-gateway audit ARGS -c CONFIG`` in this process (``main`` runs its own
    event loop, so async tests call it through ``asyncio.to_thread``)."""
    return run_cli("audit", *args, "-c", str(config))


async def test_query_filters_formats_and_errors(
    store: Store, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    await store.audit.collection.insert_many([dict(d) for d in DATA])
    config = auditdata.cli_settings(tmp_path / "settings.yaml", mongo_uri, db_name)
    wanted = sorted(
        (d for d in DATA if d.get("reason") == "policy_denied" and d["idp"] == "corp"),
        key=lambda d: (d["time"], d["_id"]),
        reverse=True,
    )
    run = await asyncio.to_thread(
        cli, config, "query", "--reason", "policy_denied", "--idp", "corp", "--format", "json"
    )
    assert run.returncode == 0, run.stderr
    assert [e["_id"] for e in json.loads(run.stdout)["events"]] == [d["_id"] for d in wanted]

    table = await asyncio.to_thread(
        cli, config, "query", "--subject", "user5-sub", "--limit", "3", "--order", "asc"
    )
    lines = table.stdout.splitlines()
    assert lines[0].startswith("TIME") and "REASON" in lines[0]
    assert len(lines) == 4 and all("user5" in line for line in lines[1:])
    assert "--cursor" in table.stderr  # more pages

    as_csv = await asyncio.to_thread(
        cli, config, "query", "--client-ip", "10.0.2.6", "--format", "csv", "--limit", "1000"
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert rows and {r["client_ip"] for r in rows} == {"10.0.2.6"}
    assert len(rows) == sum(1 for d in DATA if d["client_ip"] == "10.0.2.6")

    bad = await asyncio.to_thread(cli, config, "query", "--since", "last tuesday")
    assert bad.returncode == 2 and "since:" in bad.stderr


async def test_stats_and_export(store: Store, mongo_uri: str, db_name: str, tmp_path: Path):
    await store.audit.collection.insert_many([dict(d) for d in DATA])
    config = auditdata.cli_settings(tmp_path / "settings.yaml", mongo_uri, db_name)
    run = await asyncio.to_thread(cli, config, "stats", "--format", "json", "--outcome", "failure")
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout)
    failures = [d for d in DATA if d["outcome"] == "failure"]
    assert stats["total"] == len(failures)
    assert sum(r["count"] for r in stats["top_failure_reasons"]) == len(failures)
    text = await asyncio.to_thread(cli, config, "stats")
    # the first stats run is itself in the log now (CLI reads are audited)
    assert f"events: {N + 1}" in text.stdout and "top failure reasons:" in text.stdout

    out = tmp_path / "audit.ndjson"
    run = await asyncio.to_thread(cli, config, "export", "--room", "board", "-o", str(out))
    assert run.returncode == 0, run.stderr
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    board = sorted((d for d in DATA if d["room"] == "board"), key=lambda d: (d["time"], d["_id"]))
    assert [e["_id"] for e in exported] == [d["_id"] for d in board]


async def test_tail_follow_prints_new_events(
    store: Store, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    await store.audit.collection.insert_many([dict(d) for d in DATA[:10]])
    config = auditdata.cli_settings(tmp_path / "settings.yaml", mongo_uri, db_name)
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "gateway", "audit", "tail", "-c", str(config)],
        *["-n", "2", "--follow", "--interval", "0.2", "--format", "json"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None

        async def line() -> dict:
            return json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))

        assert [(await line())["_id"] for _ in range(2)] == [DATA[8]["_id"], DATA[9]["_id"]]
        await store.audit.write({"event": "logout", "outcome": "success", "room": "Live"})
        fresh = await line()
        assert fresh["event"] == "logout" and fresh["room"] == "live"
    finally:
        proc.terminate()
        await proc.wait()


async def test_export_memory_does_not_grow_with_the_number_of_events(
    op: TestOP, mongo_uri: str, tmp_path: Path
) -> None:
    """The API (NDJSON) and the CLI export stream (1,000 events a chunk): their peak traced
    memory for 4,000 events is that for 2,000, while the 2,000 more as objects would need
    about 2 MiB. benchmarks/audit_export.py exports 200,000 events (about 2-3 minutes)."""
    small, large = 2_000, 4_000
    token = "export-token-0123456789abcdef"
    admin = {"tokens": [{"name": "ops", "sha256": hashlib.sha256(token.encode()).hexdigest()}]}
    # inserting thousands of events with every audit index in place can take more than 2 s
    async with start_gateway(op, mongo_uri, admin=admin, mongodb={"timeout_seconds": 60}) as gw:
        collection = gw.store.audit.collection
        config = auditdata.cli_settings(tmp_path / "settings.yaml", mongo_uri, gw.store.db.name)

        async def api_export() -> tuple[int, int]:
            """(events, peak traced bytes) of one NDJSON export of the whole range."""
            lines = 0
            tracemalloc.start()
            try:
                async with (
                    httpx.AsyncClient(timeout=120) as client,
                    client.stream(
                        "GET",
                        f"{gw.url}/admin/audit",
                        params={"format": "ndjson", "exclude_event": "admin_query"},
                        headers={"Authorization": f"Bearer {token}"},
                    ) as response,
                ):
                    assert response.status_code == 200
                    async for chunk in response.aiter_bytes():
                        lines += chunk.count(b"\n")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            return lines, peak

        async def cli_export() -> tuple[int, int]:
            out = tmp_path / "all.ndjson"
            tracemalloc.start()
            try:
                run = await asyncio.to_thread(
                    cli, config, "export", "--exclude-event", "admin_query", "-o", str(out)
                )
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert run.returncode == 0, run.stderr
            with out.open("rb") as f:
                return sum(1 for _ in f), peak

        # 3 minutes apart: all in the past, inside the export's snapshot bound
        step = timedelta(minutes=3)
        await collection.insert_many(list(auditdata.documents(small, step=step)))
        api_small, cli_small = await api_export(), await cli_export()
        await collection.insert_many(
            list(auditdata.documents(large - small, step=step, first=small))
        )
        api_large, cli_large = await api_export(), await cli_export()

    tracemalloc.start()
    extra = list(auditdata.documents(large - small, step=step, first=small))
    extra_size, _ = tracemalloc.get_traced_memory()  # the added events as objects
    tracemalloc.stop()
    del extra
    print(
        f"\n{large - small} more events as objects: {extra_size / 2**20:.1f} MiB; peak traced "
        f"memory for {small} / {large} events: API {api_small[1] / 2**20:.1f} / "
        f"{api_large[1] / 2**20:.1f} MiB, CLI {cli_small[1] / 2**20:.1f} / "
        f"{cli_large[1] / 2**20:.1f} MiB"
    )
    assert (api_small[0], api_large[0]) == (small, large)
    assert (cli_small[0], cli_large[0]) == (small, large)
    for (_, peak_small), (_, peak_large) in ((api_small, api_large), (cli_small, cli_large)):
        assert peak_large - peak_small < extra_size / 4
        assert peak_large < 64 * 2**20


# ---- issue 15 ------------------------------------------------------------------------------


async def test_tail_follow_prints_only_new_events_after_a_busy_second(
    store: Store, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    """Ten events within one second: -n 2 shows the last two, the first poll none of the rest."""

    busy = list(
        auditdata.documents(
            10, datetime.now(UTC) - timedelta(seconds=2), timedelta(milliseconds=100)
        )
    )
    await store.audit.collection.insert_many([dict(d) for d in busy])
    config = auditdata.cli_settings(tmp_path / "settings.yaml", mongo_uri, db_name)
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "gateway", "audit", "tail", "-c", str(config)],
        *["-n", "2", "--follow", "--interval", "0.2", "--format", "json"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None

        async def line() -> dict:
            return json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))

        assert [(await line())["_id"] for _ in range(2)] == [busy[8]["_id"], busy[9]["_id"]]
        await asyncio.sleep(1.0)  # several polls
        await store.audit.write({"event": "logout", "outcome": "success", "room": "Next"})
        fresh = await line()
        assert (fresh["event"], fresh.get("room")) == ("logout", "next")
    finally:
        proc.terminate()
        await proc.wait()


async def test_a_closed_pipe_ends_quietly(
    store: Store, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    await store.audit.collection.insert_many([dict(d) for d in DATA])
    config = auditdata.cli_settings(tmp_path / "settings.yaml", mongo_uri, db_name)
    for command in ("export", "query --limit 300 --format json", "query --limit 300"):
        run = await asyncio.to_thread(
            subprocess.run,
            f"{sys.executable} -m gateway audit {command} -c {config} | head -c 100 >/dev/null",
            shell=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr, run.stderr


async def test_cli_reads_are_audited_and_bad_names_refused(
    store: Store, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    await store.audit.collection.insert_many([dict(d) for d in DATA])
    config = auditdata.cli_settings(tmp_path / "settings.yaml", mongo_uri, db_name)
    run = await asyncio.to_thread(
        cli, config, "query", "--room", "Retro", "--limit", "3", "--format", "csv"
    )
    assert run.returncode == 0, run.stderr
    assert "--cursor" in run.stderr  # more pages, said beside the CSV, not in it
    assert len(list(csv.DictReader(io.StringIO(run.stdout)))) == 3
    far = await asyncio.to_thread(cli, config, "query", "--since", "999999d", "--limit", "1")
    assert far.returncode == 0 and "Traceback" not in far.stderr, far.stderr
    for flag, value in (("--event", "token_mintd"), ("--idp", "crop")):
        bad = await asyncio.to_thread(cli, config, "query", flag, value)
        assert bad.returncode == 2 and f"{flag[2:]}:" in bad.stderr, bad.stderr
    # "corp" is configured; "social" is not, but it is in the log: both answer
    for idp in ("corp", "social"):
        ok = await asyncio.to_thread(cli, config, "query", "--idp", idp, "--limit", "1")
        assert ok.returncode == 0, ok.stderr
    trail = [
        d async for d in store.audit.collection.find({"event": "admin_query"}, sort=[("time", 1)])
    ]
    assert trail[0]["path"] == "cli audit query" and trail[0]["admin"].startswith("cli:")
    assert trail[0]["query"] == {"room": "Retro"} and trail[0]["count"] == 3
    assert [t["outcome"] for t in trail] == [
        "success",
        "success",
        "failure",
        "failure",
        "success",
        "success",
    ]
    assert trail[2]["reason"] == "bad_request"


async def test_operator_questions_in_one_command(
    store: Store, mongo_uri: str, db_name: str, tmp_path: Path
) -> None:
    await store.audit.collection.insert_many([dict(d) for d in DATA])
    config = auditdata.cli_settings(tmp_path / "settings.yaml", mongo_uri, db_name)
    day = ("--since", "2025-03-01", "--until", "2025-03-02", "--tz", "Europe/Berlin")
    people = await asyncio.to_thread(cli, config, "people", "--room", "sales", *day)
    assert people.returncode == 0, people.stderr
    lines = people.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "EMAIL", "IDP"]
    assert "User Number" in lines[1] and "+01:00" in lines[1]
    assert lines[-1].endswith(" people")

    grid = await asyncio.to_thread(
        cli, config, "stats", "--by", "idp,day", "--exclude-event", "admin_query"
    )
    assert grid.returncode == 0, grid.stderr
    header, *rows = grid.stdout.splitlines()
    assert header.split()[0] == "idp" and "2025-03-01" in header
    corp_day1 = sum(
        1 for d in DATA if d["idp"] == "corp" and d["time"].strftime("%Y-%m-%d") == "2025-03-01"
    )
    corp = next(r for r in rows if r.startswith("corp"))
    assert corp.split()[1] == str(corp_day1)

    wide = await asyncio.to_thread(
        cli,
        config,
        "query",
        "--event",
        "login_failed",
        "--limit",
        "2",
        "--columns",
        "+name,detail,rule",
        "--wide",
        "--tz",
        "Europe/Berlin",
    )
    assert wide.returncode == 0, wide.stderr
    head, first, *_ = wide.stdout.splitlines()
    assert head.split()[-2:] == ["DETAIL", "RULE"] or "DETAIL" in head
    assert "+01:00" in first and "~" not in first and " detail" in first
    only = await asyncio.to_thread(cli, config, "query", "--columns", "time,email", "--limit", "1")
    assert only.stdout.splitlines()[0].split() == ["TIME", "EMAIL"]
    bad = await asyncio.to_thread(cli, config, "query", "--columns", "colour")
    assert bad.returncode == 2 and "columns:" in bad.stderr
