"""Sign-in benchmark: virtual users over plain HTTP against the gateway, the real test OP and
the MongoDB-wire store, all on loopback, each in its own process.

    python -m benchmarks.signin [--quick | --smoke | --soak] [--long] [--json out.json]
                                [--chart out.png] [--docs docs/performance.md]

Scenarios: full sign-in at concurrency 1, 8, 32; single sign-on (a signed-in person asks for
new rooms) at 8 and 64; the bare Tornado redirect (``benchmarks/bare.py``) at every level,
so each figure is also a ratio to it; the SSO and bare load is driven by wrk (without it the
benchmark refuses; ``--driver httpx`` runs without ratios). ``--long`` adds 20,000 sign-ins
for memory growth. ``--soak`` (not for CI: hours) signs 100,000 people in at 8 concurrent
on the default lifetimes and reports the store's CPU per sign-in for every 5,000, which
should stay flat as the store fills.
Last, the gateway and the bare server run once more under ``benchmarks/callcount.py``
(Python calls per operation) and, when valgrind is installed and the mode asks for it
(default, ``--smoke``), under callgrind (instructions per operation): figures that do not
move with the machine, where CPU time on a shared virtual machine does.
Prints a table and PASS/FAIL lines for the targets; not part of the test suite (which runs
``--smoke`` only, so the harness keeps working). Exit code 0 whatever the targets say, 1
when operations failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import report, wrk
from benchmarks.bare import TARGET as BARE_TARGET
from benchmarks.procs import Memory, Watched
from benchmarks.users import Outcome, Run, Target, VirtualUser, run_bounded
from gateway.devtools.embedded import EmbeddedMongo
from gateway.devtools.op import TestOP

REPO = Path(__file__).resolve().parents[1]
JITSI_BASE = "http://127.0.0.1:9/meet"
IDP_ID = "bench"
#: Commands the gateway sends whatever the traffic (maintenance, index checks).
BACKGROUND = frozenset(
    {"ping", "hello", "isMaster", "ismaster", "createIndexes", "listIndexes", "endSessions"}
)
AUDIT_INSERT = ("insert", "audit")

ACCOUNTS: list[dict[str, Any]] = [
    {
        "sub": f"bench-{i}",
        "username": f"user{i}",
        "password": f"pw{i}",
        "claims": {
            "name": f"Bench User {i}",
            "preferred_username": f"user{i}",
            "email": f"user{i}@example.org",
            "email_verified": True,
            "groups": ["staff"],
        },
    }
    for i in range(64)
]


@dataclass(frozen=True)
class Plan:
    """How many operations of each kind, at which concurrency levels, for how long."""

    mode: str
    full: tuple[tuple[int, int], ...]  # (concurrency, sign-ins)
    sso: tuple[tuple[int, int], ...]  # (concurrency, tokens)
    bare: int  # requests per level
    max_seconds: float  # per run
    wrk_seconds: float  # per SSO and bare level when wrk drives them (it runs for a time)
    counted: tuple[int, int, int] = (20, 50, 200)  # calls counted: sign-ins, SSO, bare
    # instructions counted under callgrind (sign-ins, SSO, bare); None: not in this mode
    instructions: tuple[int, int, int] | None = (20, 50, 200)
    # --soak: sign-ins in total and how many per slice (store CPU per sign-in per slice)
    soak: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        """A plan whose fields are out of place fails here, not after minutes of load (the
        quick plan once passed ``None`` as the calls counted and crashed at the end)."""

        def counts(value: object, n: int) -> bool:
            return (
                isinstance(value, tuple)
                and len(value) == n
                and all(isinstance(v, int) and v > 0 for v in value)
            )

        problems = [
            name
            for name, ok in (
                ("full", all(counts(x, 2) for x in self.full)),
                ("sso", all(counts(x, 2) for x in self.sso)),
                ("bare", isinstance(self.bare, int) and self.bare > 0),
                ("max_seconds", self.max_seconds > 0),
                ("wrk_seconds", self.wrk_seconds > 0),
                ("counted", counts(self.counted, 3)),
                ("instructions", self.instructions is None or counts(self.instructions, 3)),
                ("soak", self.soak is None or counts(self.soak, 2)),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"plan {self.mode}: bad {', '.join(problems)}")


PLANS = {
    "smoke": Plan(
        "smoke", ((1, 5),), ((8, 10),), bare=50, max_seconds=30, wrk_seconds=1,
        counted=(3, 5, 20), instructions=(2, 3, 10),
    ),
    "quick": Plan(
        "quick", ((1, 8), (8, 32), (32, 64)), ((8, 200), (64, 640)), bare=500, max_seconds=8,
        wrk_seconds=3, instructions=None,
    ),
    "default": Plan(
        "default", ((1, 50), (8, 400), (32, 1000)), ((8, 2000), (64, 6400)), bare=4000,
        max_seconds=90, wrk_seconds=10,
    ),
    # Not for CI: 100,000 sign-ins at 8 concurrent, store CPU per sign-in every 5,000, on the
    # gateway's default flow lifetime. Hours on a shared 2-core machine.
    "soak": Plan(
        "soak", ((8, 100),), ((64, 640),), bare=500, max_seconds=30, wrk_seconds=3,
        counted=(5, 10, 50), instructions=None, soak=(100_000, 5_000),
    ),
}  # fmt: skip
LONG_SIGN_INS = 20_000
LONG_CONCURRENCY = 32


# ---- the processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment for the gateway: no ``JOG_`` overrides from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOG_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def gateway_settings(url: str, port: int, op: TestOP, client: dict, uri: str, work: Path) -> dict:
    return {
        "public_url": url,
        "listen": {"host": "127.0.0.1", "port": port},
        "mongodb": {"uri": uri, "database": f"jog_bench_{secrets.token_hex(4)}"},
        "cookies": {"secret": secrets.token_urlsafe(32), "secure": False},
        "jitsi": {
            "base_url": JITSI_BASE,
            "app_id": "bench_app",
            "domain": "meet.bench",
            "app_secret": secrets.token_urlsafe(32),
        },
        "idps": [
            {
                "id": IDP_ID,
                "adapter": "generic",
                "display_name": "Bench OP",
                "issuer": op.issuer,
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
                "scopes": ["openid", "profile", "email", "groups"],
            }
        ],
        "audit": {"spool_dir": str(work / "spool")},
        "log_level": "INFO",
        "log_format": "json",
    }


async def wait_http(url: str, process: subprocess.Popen[Any] | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{url}: process exited with {process.returncode}")
            try:
                if (await client.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def spawn(
    command: list[str], cwd: Path, stdout: Any, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """A measured process of its own (the gateway, the bare server); output to ``stdout``."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=child_env() | (env or {}),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not subprocess.PIPE else None,
        text=True,
    )


def stop_process(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Stack:
    target: Target
    bare_url: str
    watched: dict[str, Watched]  # gateway, op, store, bare
    store: str  # what the store is, for the report
    driver: str = "httpx"  # what drives the SSO and bare load: wrk or httpx (benchmarks/wrk.py)
    gateway: subprocess.Popen[str] | None = None  # when the benchmark started it
    gateway_command: tuple[list[str], Path] | None = None  # (command, working directory)


async def start_stack(args: argparse.Namespace, exits: AsyncExitStack, work: Path) -> Stack:
    """The store, the OP, the gateway and the bare server (or the given URLs)."""
    watched: dict[str, Watched] = {}
    if args.mongodb_uri:
        uri, store = args.mongodb_uri, "given MongoDB"
        watched["store"] = Watched("store", None)
    else:
        mongo = await asyncio.to_thread(EmbeddedMongo(durable=args.durable_store).start)
        exits.callback(mongo.cleanup)
        uri = mongo.uri
        store = "SecantusDB " + ("(fsync at every commit)" if args.durable_store else "(no fsync)")
        watched["store"] = Watched("store", mongo.proc.pid if mongo.proc else None)
    if args.op_issuer:
        op = TestOP.attach(args.op_issuer)
        watched["op"] = Watched("op", args.op_pid)
    else:
        op = await asyncio.to_thread(TestOP.start, ACCOUNTS)
        exits.callback(op.stop)
        watched["op"] = Watched("op", op.process.pid)
    accounts = [(a["username"], a["password"]) for a in ACCOUNTS]
    if args.user:
        accounts = [tuple(args.user.split(":", 1))]  # type: ignore[list-item]

    if args.gateway_url:
        gateway_url, jitsi_base = args.gateway_url.rstrip("/"), args.jitsi_base_url
        watched["gateway"] = Watched("gateway", args.gateway_pid)
    else:
        port = free_port()
        gateway_url, jitsi_base = f"http://127.0.0.1:{port}", JITSI_BASE
        client = await op.register_client([f"{gateway_url}/oidc/redirect/{IDP_ID}"])
        settings = gateway_settings(gateway_url, port, op, client, uri, work)
        path = work / "settings.yaml"
        path.write_text(json.dumps(settings, indent=2), encoding="utf-8")  # JSON is YAML
        log = (work / "gateway.log").open("w", encoding="utf-8")
        exits.callback(log.close)
        command = ["gateway", "serve", "-c", str(path)]
        gateway = spawn([sys.executable, "-m", *command], work, log)
        exits.callback(stop_process, gateway)
        await wait_http(f"{gateway_url}/healthz", gateway)
        watched["gateway"] = Watched("gateway", gateway.pid)

    bare = spawn([sys.executable, "-m", "benchmarks.bare", "--port", "0"], REPO, subprocess.PIPE)
    exits.callback(stop_process, bare)
    assert bare.stdout is not None
    line = await asyncio.to_thread(bare.stdout.readline)
    bare_url = f"http://127.0.0.1:{json.loads(line)['port']}/r"
    watched["bare"] = Watched("bare", bare.pid)
    stack = Stack(Target(gateway_url, jitsi_base, op, accounts), bare_url, watched, store)
    if not args.gateway_url:
        stack.gateway, stack.gateway_command = gateway, (command, work)
    return stack


# ---- metrics -------------------------------------------------------------------------------


async def scrape(gateway_url: str) -> dict[str, dict[tuple[str, ...], float]]:
    """The gateway's counters the benchmark reads: store commands and IdP requests."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{gateway_url}/metrics")
    found: dict[str, dict[tuple[str, ...], float]] = {"store": {}, "idp": {}}
    if response.status_code != 200:
        return found
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "jog_store_commands_total":
                key = (sample.labels["command"], sample.labels["collection"])
                found["store"][key] = sample.value
            elif sample.name == "jog_idp_requests_total":
                found["idp"][(sample.labels["method"],)] = sample.value
    return found


def delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def store_split(commands: dict[tuple[str, ...], float]) -> dict[str, float]:
    """Total (background left out), the person's path (audit inserts left out), audit."""
    total = sum(v for (name, _), v in commands.items() if name not in BACKGROUND)
    audit = commands.get(AUDIT_INSERT, 0.0)
    return {"total": total, "person_path": total - audit, "audit_inserts": audit}


# ---- measuring a run -----------------------------------------------------------------------


class MemorySampler:
    """The gateway's RSS every ``interval`` seconds while a run goes on (peak per run)."""

    def __init__(self, watched: Watched, interval: float = 0.25) -> None:
        self.watched, self.interval = watched, interval
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            memory = await asyncio.to_thread(self.watched.memory)
            if memory is not None:
                self.peak = max(self.peak, memory.rss_mib)
            await asyncio.sleep(self.interval)

    def __enter__(self) -> MemorySampler:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def measured(
    stack: Stack, server: str, concurrency: int, work: Callable[[], Awaitable[Run]]
) -> dict[str, Any]:
    """Run ``work`` and report it: throughput, latencies, CPU per operation of each process
    (``server`` is the one the operations are for: gateway or bare), counters, memory."""
    url = stack.target.gateway_url
    before_cpu = {name: w.cpu() for name, w in stack.watched.items()}
    before_metrics = await scrape(url)
    client_before = time.process_time()
    watched = stack.watched[server]
    with MemorySampler(watched) as sampler:
        run = await work()
    client_cpu = time.process_time() - client_before
    after_metrics = await scrape(url)
    after_cpu = {name: w.cpu() for name, w in stack.watched.items()}
    ops = run.ops
    per_op = max(ops, 1)
    cpu_ms: dict[str, float | None] = {}
    for name in ("gateway", "op", "store") if server == "gateway" else ("bare",):
        b, a = before_cpu[name], after_cpu[name]
        cpu_ms[name] = None if a is None or b is None else round(1000 * (a - b) / per_op, 4)
    if server == "bare":
        cpu_ms = {"gateway": cpu_ms["bare"]}
    cpu_ms["client"] = round(1000 * client_cpu / per_op, 4)
    commands = delta(after_metrics["store"], before_metrics["store"]) if server != "bare" else {}
    idp = delta(after_metrics["idp"], before_metrics["idp"]) if server != "bare" else {}
    memory: Memory | None = watched.memory()
    split = store_split(commands)
    return {
        "concurrency": concurrency,
        "count": ops,
        "errors": run.error_count,
        "error_samples": run.errors[:5],
        "stopped_by_time": run.stopped_by_time,
        "seconds": round(run.seconds, 3),
        "throughput": round(ops / run.seconds, 2) if run.seconds else None,
        "driver": run.driver,
        "latency_ms": run.latency_ms or report.latencies(run.outcomes),
        "cpu_ms": cpu_ms,
        "store_commands_per_op": {k: round(v / per_op, 3) for k, v in split.items()},
        "store_commands": {".".join(k): v for k, v in sorted(commands.items())},
        "idp_requests_per_op": round(sum(idp.values()) / per_op, 3),
        "gateway_hops_per_op": run.hops
        if run.hops is not None
        else _mean(o.gateway_hops for o in run.outcomes),
        "op_hops_per_op": 0.0 if run.hops is not None else _mean(o.op_hops for o in run.outcomes),
        "gateway_rss_mib": {
            "end": round(memory.rss_mib, 1) if memory else None,
            "peak": round(max(sampler.peak, memory.rss_mib if memory else 0.0), 1),
        },
    }


def _mean(values: Any) -> float | None:
    seq = list(values)
    return round(sum(seq) / len(seq), 3) if seq else None


async def users_for(stack: Stack, n: int) -> list[VirtualUser]:
    return [VirtualUser(stack.target) for _ in range(n)]


async def close_all(users: list[VirtualUser]) -> None:
    await asyncio.gather(*(u.close() for u in users))


async def wrk_load(
    url: str, path_prefix: str, concurrency: int, seconds: float, expect_location: str,
    cookies: list[str] | None = None,
) -> Run:  # fmt: skip
    """A wrk run as a run: one hop per operation (each answer is checked to be the redirect
    to ``expect_location...`` with a token), wrk's percentiles for the one step."""
    result = await wrk.run(
        url, path_prefix, concurrency, seconds,
        expect_location=expect_location, expect_jwt=True, cookies=cookies,
    )  # fmt: skip
    samples = [f"not the expected redirect: {result.first_bad}"] if result.bad else []
    if result.errors:
        samples.append(f"{result.errors} connection errors or timeouts")
    step = {q: result.latency_ms[q] for q in ("p50", "p95", "p99")}
    return Run(
        [],
        samples,
        result.seconds,
        stopped_by_time=True,
        count=result.requests - result.bad,
        latency_ms={"auth": step, "gateway": step, "end_to_end": step},
        hops=1.0,
        failed=result.bad + result.errors,
        driver="wrk",
    )


async def bare_run(stack: Stack, concurrency: int, count: int, plan: Plan) -> dict[str, Any]:
    if stack.driver == "wrk":
        split = urlsplit(stack.bare_url)
        origin, path = f"{split.scheme}://{split.netloc}", f"{split.path}?n="
        return await measured(
            stack,
            "bare",
            concurrency,
            lambda: wrk_load(origin, path, concurrency, plan.wrk_seconds, BARE_TARGET),
        )
    users = await users_for(stack, concurrency)

    async def op(user: VirtualUser, _i: int, _c: Any) -> Outcome:
        return await user.bare(stack.bare_url)

    try:
        return await measured(
            stack,
            "bare",
            concurrency,
            lambda: run_bounded(users, count, plan.max_seconds, op),
        )
    finally:
        await close_all(users)


def account(stack: Stack, index: int) -> tuple[str, str]:
    return stack.target.accounts[index % len(stack.target.accounts)]


async def full_run(
    stack: Stack,
    concurrency: int,
    count: int,
    max_seconds: float,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    users = await users_for(stack, concurrency)
    tag = secrets.token_hex(3)

    async def op(user: VirtualUser, i: int, _c: Any) -> Outcome:
        return await user.sign_in(f"full-{tag}-{i}", account(stack, i))

    try:
        return await measured(
            stack,
            "gateway",
            concurrency,
            lambda: run_bounded(users, count, max_seconds, op, progress=progress),
        )
    finally:
        await close_all(users)


async def sso_run(stack: Stack, concurrency: int, count: int, plan: Plan) -> dict[str, Any]:
    """Each virtual user signs one person in (not measured), then asks for new rooms."""
    users = await users_for(stack, concurrency)
    tag = secrets.token_hex(3)
    try:
        jars = []
        for batch in range(0, concurrency, 16):
            chunk = users[batch : batch + 16]
            await asyncio.gather(
                *(
                    u.sign_in(f"sso-{tag}-home", account(stack, batch + j))
                    for j, u in enumerate(chunk)
                )
            )
            jars += [u.client.cookies for u in chunk]

        if stack.driver == "wrk":
            return await measured(
                stack,
                "gateway",
                concurrency,
                lambda: wrk_load(
                    stack.target.gateway_url,
                    f"/oidc/auth?room=sso-{tag}-",
                    concurrency,
                    plan.wrk_seconds,
                    f"{stack.target.jitsi_base}/sso-{tag}-",
                    [cookie_header(jar) for jar in jars],
                ),
            )

        async def op(user: VirtualUser, i: int, jar: httpx.Cookies) -> Outcome:
            return await user.sso(f"sso-{tag}-{i}", jar)

        return await measured(
            stack,
            "gateway",
            concurrency,
            lambda: run_bounded(users, count, plan.max_seconds, op, contexts=jars),
        )
    finally:
        await close_all(users)


def cookie_header(jar: httpx.Cookies) -> str:
    """The ``Cookie`` header of a browser with this jar. Every cookie: on one host, a
    browser sends the OP's cookies to the gateway as well (cookies ignore the port)."""
    return "; ".join(f"{c.name}={c.value}" for c in jar.jar)


async def probe(stack: Stack) -> dict[str, Any]:
    """One sign-in, then one SSO token, alone, with ``/metrics`` read after every hop: the
    exact (integer) store round trips, IdP requests and hops per step."""
    url = stack.target.gateway_url
    user = VirtualUser(stack.target)
    found: dict[str, Any] = {}
    try:
        for scenario in ("full_sign_in", "sso"):
            steps: dict[str, Any] = {}
            last = await scrape(url)

            async def after_hop(step: str, steps: dict[str, Any] = steps) -> None:
                nonlocal last
                await asyncio.sleep(0.01)  # an audit batch the response did not wait for
                now = await scrape(url)
                cmds = delta(now["store"], last["store"])
                cmds = {k: v for k, v in cmds.items() if k[0] not in BACKGROUND}
                into = steps.setdefault(step, {"store": {}, "idp_requests": 0})
                for key, value in cmds.items():
                    name = ".".join(key)
                    into["store"][name] = into["store"].get(name, 0) + int(value)
                into["idp_requests"] += int(sum(delta(now["idp"], last["idp"]).values()))
                last = now

            if scenario == "full_sign_in":
                outcome = await user.sign_in("probe-home", account(stack, 0), after_hop)
            else:
                outcome = await user.sso("probe-next", user.client.cookies, after_hop)
            commands: dict[tuple[str, ...], float] = {}
            for s in steps.values():
                for name, value in s["store"].items():
                    key = tuple(name.split(".", 1))
                    commands[key] = commands.get(key, 0) + value
            split = {k: int(v) for k, v in store_split(commands).items()}
            found[scenario] = {
                "gateway_hops": outcome.gateway_hops,
                "op_hops": outcome.op_hops,
                "idp_requests": sum(s["idp_requests"] for s in steps.values()),
                "store": split,
                "steps": steps,
            }
    finally:
        await user.close()
    return found


async def long_run(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """``--long``: 20,000 sign-ins; the gateway's RSS after the first 1,000 and at the end."""
    rss: dict[int, float] = {}
    gateway = stack.watched["gateway"]
    pending: list[int] = []

    def progress(done: int) -> None:
        if done % 1000 == 0:
            pending.append(done)

    async def sample() -> None:
        while True:
            while pending:
                memory = gateway.memory()
                rss[pending.pop(0)] = memory.rss_mib if memory else 0.0
            await asyncio.sleep(0.05)

    sampler = asyncio.get_running_loop().create_task(sample())
    try:
        result = await full_run(stack, LONG_CONCURRENCY, args.long_sign_ins, 3600, progress)
    finally:
        sampler.cancel()
    end = gateway.memory()
    first = rss.get(1000)
    end_rss = end.rss_mib if end else None
    growth = 100 * (end_rss - first) / first if first and end_rss else None
    return {
        "sign_ins": result["count"],
        # the run's length: every sign-in attempted (a refusal by a stalled store included)
        "attempted": result["count"] + result["errors"],
        "errors": result["errors"],
        "concurrency": LONG_CONCURRENCY,
        "seconds": result["seconds"],
        "rss_after_first_1000_mib": round(first, 1) if first else None,
        "rss_end_mib": round(end_rss, 1) if end_rss else None,
        "growth_percent": round(growth, 2) if growth is not None else None,
        "peak_mib": end.peak_mib if end else None,
        "rss_every_1000_mib": {str(k): round(v, 1) for k, v in sorted(rss.items())},
        "run": result,
    }


async def soak_run(stack: Stack, total: int, per_slice: int) -> dict[str, Any]:
    """``--soak``: ``total`` sign-ins at 8 concurrent on the gateway's default lifetimes, in
    slices of ``per_slice``; each slice's store CPU, store commands and gateway CPU per
    sign-in and its rate. The store's cost per sign-in should stay flat as it fills."""
    slices = []
    for done in range(0, total, per_slice):
        n = min(per_slice, total - done)
        result = await full_run(stack, 8, n, 3600)
        store_ms = result["cpu_ms"].get("store")
        slices.append(
            {
                "stored_before": done,
                "sign_ins": result["count"],
                "errors": result["errors"],
                "throughput": result["throughput"],
                "store_cpu_ms": store_ms,
                "gateway_cpu_ms": result["cpu_ms"].get("gateway"),
                "store_commands_per_op": result["store_commands_per_op"],
                "p99_ms": result["latency_ms"]["gateway"]["p99"],
            }
        )
        say(
            f"soak: {done + n} sign-ins, store CPU {store_ms} ms/sign-in, "
            f"{result['throughput']}/s, {result['errors']} errors"
        )
    costs = [s["store_cpu_ms"] for s in slices if s["store_cpu_ms"] is not None]
    first = costs[0] if costs else None
    return {
        "sign_ins": sum(s["sign_ins"] for s in slices),
        "errors": sum(s["errors"] for s in slices),
        "per_slice": per_slice,
        "slices": slices,
        # the last slice's store CPU per sign-in against the first's (target within 20 %)
        "store_cost_growth_percent": (
            round(100 * (costs[-1] - first) / first, 1) if first and len(costs) > 1 else None
        ),
    }


# ---- Python calls and instructions per operation ------------------------------------------


class CallCounter:
    """A process run under ``benchmarks.callcount``: :meth:`read` is its count so far."""

    def __init__(self, process: subprocess.Popen[str], out: Path, poke: str) -> None:
        self.process, self.out, self.poke = process, out, poke

    async def read(self) -> int:
        self.out.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(200):
                await client.get(self.poke)  # the handler runs once the loop has work
                if self.out.exists():
                    return int(self.out.read_text())
                await asyncio.sleep(0.05)
        raise RuntimeError(f"no call count from {self.process.args}")


class InstructionCounter:
    """A process run under valgrind's callgrind: :meth:`read` is the instructions it has
    executed so far (all its threads), summed over the dumps ``callgrind_control`` asks for
    (each dump holds the count since the one before)."""

    def __init__(self, process: subprocess.Popen[str], out: Path, poke: str) -> None:
        self.process, self.out, self.total = process, out, 0

    async def read(self) -> int:
        before = set(self.out.parent.glob(self.out.name + ".*"))
        done = await asyncio.to_thread(
            subprocess.run,
            ["callgrind_control", "--dump", str(self.process.pid)],
            capture_output=True,
            timeout=60,
        )
        new = set(self.out.parent.glob(self.out.name + ".*")) - before
        if done.returncode != 0 or len(new) != 1:
            raise RuntimeError(f"callgrind_control --dump {self.process.pid} wrote no dump")
        self.total += _callgrind_summary(new.pop())
        return self.total


def _callgrind_summary(dump: Path) -> int:
    for line in dump.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{dump}: no summary line")


@dataclass(frozen=True)
class CountedRun:
    """How to run a process with its work counted, and how to read the count."""

    what: str  # the figure's name in the JSON and the report
    wrap: Callable[[list[str], Path], list[str]]  # (python command, output file) -> command
    counter: Callable[[subprocess.Popen[str], Path, str], CallCounter | InstructionCounter]
    env_name: str | None  # the variable naming the output file, when the wrapper reads one
    start_seconds: float  # how long the wrapped gateway may take to answer
    read_costs_a_request: bool  # read() wakes the handler with one request (in the window)


CALLS = CountedRun(
    "calls",
    lambda command, out: [sys.executable, "-m", "benchmarks.callcount", *command[2:]],
    CallCounter,
    "BENCH_CALLS_FILE",
    30,
    True,
)
CALLGRIND = ("valgrind", "-q", "--tool=callgrind")
INSTRUCTIONS = CountedRun(
    "instructions",
    lambda command, out: [*CALLGRIND, f"--callgrind-out-file={out}", *command],
    InstructionCounter,
    None,
    300,  # imports under valgrind run about 50 times slower
    False,  # callgrind_control needs no request
)


async def count_work(
    stack: Stack, exits: AsyncExitStack, counts: tuple[int, int, int], how: CountedRun
) -> dict[str, Any] | None:
    """The gateway (restarted on the same settings) and the bare server once more, with
    their work counted: one full sign-in, SSO token and bare redirect at a time.
    Machine-independent, like the store round trips. None with ``--gateway-url``."""
    if stack.gateway is None or stack.gateway_command is None:
        return None
    command, work = stack.gateway_command
    stop_process(stack.gateway)
    out = work / how.what
    env = {how.env_name: str(out)} if how.env_name else {}
    log = (work / f"gateway-{how.what}.log").open("w", encoding="utf-8")
    exits.callback(log.close)
    gateway = spawn(how.wrap([sys.executable, "-m", *command], out), work, log, env)
    stack.gateway = gateway
    exits.callback(stop_process, gateway)
    url = stack.target.gateway_url
    await wait_http(f"{url}/healthz", gateway, how.start_seconds)
    counter = how.counter(gateway, out, f"{url}/healthz")
    n_full, n_sso, n_bare = counts
    user = VirtualUser(stack.target)
    try:
        await user.sign_in(f"{how.what}-warm", account(stack, 0))  # imports, keys, connections
        await user.sso(f"{how.what}-warm-2", user.client.cookies)
        start = await counter.read()
        for i in range(n_full):
            await user.sign_in(f"{how.what}-{i}", account(stack, 0))
        after_full = await counter.read()
        for i in range(n_sso):
            await user.sso(f"{how.what}-sso-{i}", user.client.cookies)
        after_sso = await counter.read()
    finally:
        await user.close()
    stop_process(gateway)

    bare_out = work / f"{how.what}-bare"
    bare_command = [sys.executable, "-m", "benchmarks.bare", "--port", "0"]
    env = {how.env_name: str(bare_out)} if how.env_name else {}
    bare = spawn(how.wrap(bare_command, bare_out), REPO, subprocess.PIPE, env)
    exits.callback(stop_process, bare)
    assert bare.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(bare.stdout.readline), how.start_seconds)
    bare_url = f"http://127.0.0.1:{json.loads(line)['port']}/r"
    bare_counter = how.counter(bare, bare_out, bare_url)
    async with httpx.AsyncClient(follow_redirects=False, timeout=30) as client:
        await client.get(bare_url)
        bare_start = await bare_counter.read()
        for _ in range(n_bare):
            await client.get(bare_url)
        bare_end = await bare_counter.read()
    stop_process(bare)
    per_bare = (bare_end - bare_start) / (n_bare + how.read_costs_a_request)
    per_full = (after_full - start) / n_full
    per_sso = (after_sso - after_full) / n_sso
    return {
        "operations": {"full_sign_in": n_full, "sso": n_sso, "bare": n_bare},
        "full_sign_in": round(per_full),
        "sso": round(per_sso),
        "bare": round(per_bare),
        "full_sign_in_x_bare": round(per_full / per_bare, 1),
        "sso_x_bare": round(per_sso / per_bare, 1),
    }


# ---- the whole benchmark -------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(pages / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_average": list(os.getloadavg()),  # other work on the machine skews latencies
    }


def with_ratios(phases: list[dict], bare: dict[int, dict], driver: str) -> None:
    """Ratios to the bare redirect at the same concurrency, only when wrk drove it."""
    for p in phases:
        base = bare.get(p["concurrency"])
        if base is None or driver != "wrk":
            p["ratios"] = {}
            continue
        lat, blat = p["latency_ms"]["gateway"], base["latency_ms"]["gateway"]
        p["ratios"] = {
            "throughput": report.ratio(p["throughput"], base["throughput"]),
            **{q: report.ratio(lat[q], blat[q]) for q in ("p50", "p95", "p99")},
            "cpu": report.ratio(p["cpu_ms"]["gateway"], base["cpu_ms"]["gateway"]),
        }


HISTORY = "\n## Before and after"


def kept_history(page: Path) -> str:
    """The page's hand-written before/after sections (from the first such heading on):
    a rewrite keeps them, since they compare runs that are no longer the latest."""
    try:
        text = page.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    at = text.find(HISTORY)
    return "" if at < 0 else text[at:]


def choose_driver(asked: str) -> str:
    """wrk, or a refusal: the ratios to the bare redirect are the yardstick, and httpx
    drives the bare redirect at a quarter of wrk's rate on the same machine, which makes
    every ratio look two to four times better. ``--driver httpx`` runs without ratios."""
    if asked in ("auto", "wrk") and not wrk.find():
        raise SystemExit(
            "wrk not found: run scripts/setup.sh --test (it installs wrk) or apt-get install "
            "wrk; --driver httpx runs without ratios to the bare redirect"
        )
    return "wrk" if asked == "auto" else asked


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def benchmark(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    plan = PLANS[args.mode]
    levels = sorted({c for c, _ in plan.full} | {c for c, _ in plan.sso})
    work = Path(tempfile.mkdtemp(prefix="jog-bench-"))
    data: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.signin", *argv]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": plan.mode,
        "machine": machine(),
        "plan": {
            "full_sign_in": [list(x) for x in plan.full],
            "sso": [list(x) for x in plan.sso],
            "bare_per_level": plan.bare,
            "max_seconds_per_run": plan.max_seconds,
        },
    }
    try:
        async with AsyncExitStack() as exits:
            say(f"starting store, OP, gateway and bare server ({work})")
            stack = await start_stack(args, exits, work)
            stack.driver = choose_driver(args.driver)
            data["driver"] = stack.driver
            data["store"] = stack.store
            data["processes"] = {n: w.pid for n, w in stack.watched.items()}
            # Warm up (connections, JWKS, first-request imports) before measuring anything.
            await full_run(stack, 2, 4, plan.max_seconds)
            data["counts"] = await probe(stack)
            bare = {}
            for c in levels:
                say(f"bare Tornado redirect at {c}")
                bare[c] = await bare_run(stack, c, plan.bare, plan)
            data["bare"] = [bare[c] for c in levels]
            data["full_sign_in"] = []
            for c, n in plan.full:
                say(f"full sign-in at {c} ({n})")
                data["full_sign_in"].append(await full_run(stack, c, n, plan.max_seconds))
            data["sso"] = []
            for c, n in plan.sso:
                say(f"single sign-on at {c} ({n})")
                data["sso"].append(await sso_run(stack, c, n, plan))
            with_ratios(data["full_sign_in"], bare, stack.driver)
            with_ratios(data["sso"], bare, stack.driver)
            data["soak"] = None
            if plan.soak is not None:
                total = args.soak_sign_ins or plan.soak[0]
                per_slice = args.soak_slice or plan.soak[1]
                say(f"soak: {total} sign-ins at 8, store CPU per {per_slice}")
                data["soak"] = await soak_run(stack, total, min(per_slice, total))
            data["long"] = None
            if args.long:
                say(f"long run: {args.long_sign_ins} sign-ins at {LONG_CONCURRENCY}")
                data["long"] = await long_run(stack, args)
            data["memory_mib"] = {
                name: (m.__dict__ if (m := w.memory()) else None)
                for name, w in stack.watched.items()
            }
            say("Python calls per operation (gateway restarted under cProfile)")
            data["calls"] = await count_work(stack, exits, plan.counted, CALLS)
            data["instructions"] = None
            if plan.instructions is not None and not shutil.which("callgrind_control"):
                data["instructions"] = {"not_counted": "valgrind is not installed"}
            elif plan.instructions is not None:
                say("instructions per operation (gateway restarted under valgrind's callgrind)")
                data["instructions"] = await count_work(
                    stack, exits, plan.instructions, INSTRUCTIONS
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data["machine"]["load_average_end"] = list(os.getloadavg())
    data["targets"] = report.targets(data)
    return data


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.signin", description=__doc__.splitlines()[0]
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="small counts, under a minute")  # fmt: skip
    size.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help="5 sign-ins, 10 SSO tokens: the harness works")  # fmt: skip
    size.add_argument("--soak", dest="mode", action="store_const", const="soak",
                      help="100,000 sign-ins: the store's cost per sign-in (hours)")  # fmt: skip
    parser.set_defaults(mode="default")
    parser.add_argument("--soak-sign-ins", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--soak-slice", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--driver",
        choices=("auto", "wrk", "httpx"),
        default="auto",
        help="load generator for SSO and the bare redirect (auto: wrk when installed)",
    )
    parser.add_argument("--long", action="store_true", help="add 20,000 sign-ins (memory)")
    parser.add_argument("--long-sign-ins", type=int, default=LONG_SIGN_INS, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--chart", type=Path, help="PNG of latency percentiles vs concurrency")
    parser.add_argument("--docs", type=Path, help="rewrite this Markdown page (and the chart)")
    parser.add_argument(
        "--durable-store", action="store_true", help="the embedded store fsyncs every commit"
    )
    parser.add_argument("--mongodb-uri", help="use this MongoDB instead of the embedded store")
    parser.add_argument("--op-issuer", help="a running test OP (tests/op) instead of starting one")
    parser.add_argument("--op-pid", type=int, help="its process id, to measure its CPU")
    parser.add_argument("--gateway-url", help="a running gateway instead of starting one")
    parser.add_argument("--gateway-pid", type=int, help="its process id, to measure its CPU")
    parser.add_argument("--jitsi-base-url", default=JITSI_BASE, help="the gateway's jitsi.base_url")
    parser.add_argument("--user", help="USER:PASSWORD at the OP (default: the started OP's users)")
    args = parser.parse_args(argv)
    if args.gateway_url and not (args.op_issuer and args.user):
        parser.error("--gateway-url needs --op-issuer and --user")
    if args.op_issuer and not args.gateway_url:
        parser.error("--op-issuer needs --gateway-url (the gateway's client is registered there)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    data = asyncio.run(benchmark(args, argv))
    chart_path = args.chart
    if args.docs and chart_path is None:
        chart_path = args.docs.with_name("performance.png")
    if chart_path is not None:
        report.chart(data, chart_path)
        data["chart"] = str(chart_path)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    if args.docs:
        name = os.path.relpath(chart_path, args.docs.parent) if chart_path else None
        args.docs.write_text(
            report.markdown(data, name) + kept_history(args.docs), encoding="utf-8"
        )
    print(report.driver_line(data))
    print(report.table(data))
    print("\nper step (ms)        " + "".join(f"{'p' + str(q):>10}" for q in report.PERCENTILES))
    print("\n".join(report.step_rows(data)))
    print("\ncounted, one operation alone:")
    print("\n".join(report.counts_lines(data["counts"])))
    print("\n".join(report.calls_lines(data.get("calls"))))
    print("\n".join(report.instructions_lines(data)))
    if data.get("long"):
        long = data["long"]
        print(
            f"\nlong run: {long['sign_ins']} sign-ins, gateway RSS "
            f"{long['rss_after_first_1000_mib']} MiB after 1,000, {long['rss_end_mib']} MiB "
            f"at the end ({long['growth_percent']} %)"
        )
    print()
    print("\n".join(report.target_lines(data["targets"])))
    phases = data["bare"] + data["full_sign_in"] + data["sso"]
    if data.get("soak"):
        soak = data["soak"]
        print(f"\nsoak: {soak['sign_ins']} sign-ins, store CPU per sign-in by slice of "
              f"{soak['per_slice']}:")  # fmt: skip
        for s in soak["slices"]:
            print(f"  {s['stored_before']:>7} stored  {s['store_cpu_ms']} ms  {s['throughput']}/s")
        print(f"  growth first -> last slice: {soak['store_cost_growth_percent']} % (target 20)")
    failed = sum(p["errors"] for p in phases) + (data["long"]["errors"] if data["long"] else 0)
    failed += data["soak"]["errors"] if data.get("soak") else 0
    if failed:
        print(f"\n{failed} operations failed; samples in the JSON (error_samples)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
