"""Figures out of runs: percentiles, ratios to the bare Tornado redirect, the targets, and the
table, chart and Markdown page that show them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.users import Outcome

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_ms(values: Iterable[float]) -> dict[str, float]:
    seq = [v * 1000 for v in values]
    return {f"p{p}": round(percentile(seq, p), 3) for p in PERCENTILES}


def latencies(outcomes: Sequence[Outcome]) -> dict[str, dict[str, float]]:
    """Per step, the gateway's share (``gateway``) and end to end with the OP (``end_to_end``)."""
    steps: dict[str, list[float]] = {}
    for outcome in outcomes:
        for name, seconds in outcome.steps.items():
            steps.setdefault(name, []).append(seconds)
    found = {name: latency_ms(values) for name, values in sorted(steps.items())}
    found["gateway"] = latency_ms(o.gateway_total for o in outcomes)
    found["end_to_end"] = latency_ms(o.total for o in outcomes)
    return found


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or not base or math.isnan(value) or math.isnan(base):
        return None
    return round(value / base, 3)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _load(values: Sequence[float] | None) -> str:
    return " / ".join(f"{v:.1f}" for v in values) if values else "-"


def _x(value: float | None) -> str:
    return "" if value is None else f" ({value:.2f}x)"


# ---- targets -----------------------------------------------------------------------------


def target(name: str, value: float | None, limit: float, op: str, note: str = "") -> dict:
    """PASS/FAIL of ``value <op> limit``; SKIP when the run did not measure it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        result = "SKIP"
    elif op == "<=":
        result = "PASS" if value <= limit else "FAIL"
    elif op == "<":
        result = "PASS" if value < limit else "FAIL"
    else:
        result = "PASS" if value >= limit else "FAIL"
    return {"name": name, "value": value, "op": op, "limit": limit, "result": result, "note": note}


def targets(data: Mapping[str, Any]) -> list[dict]:
    full, sso = data["full_sign_in"], data["sso"]
    counts = data["counts"]

    def cpu_over(phases: list[dict]) -> float | None:
        ops = sum(p["count"] for p in phases)
        cpu = [p["cpu_ms"]["gateway"] for p in phases]
        if not ops or any(c is None for c in cpu):
            return None
        return round(sum(c * p["count"] for c, p in zip(cpu, phases, strict=True)) / ops, 3)

    at64 = next((p for p in sso if p["concurrency"] == 64), None)
    long = data.get("long")
    soak = data.get("soak")
    return [
        target("full sign-in: gateway CPU per sign-in (ms)", cpu_over(full), 1.5, "<="),
        target(
            "full sign-in: store round trips on the person's path",
            counts["full_sign_in"]["store"]["person_path"] if counts.get("full_sign_in") else None,
            4,
            "<=",
            "audit inserts (group-committed behind the answer, journaled locally) apart; the "
            "flow is read and then consumed by a conditional update (the embedded store's "
            "findAndModify reads every kept flow)",
        ),
        target("SSO: gateway CPU per token (ms)", cpu_over(sso), 0.5, "<="),
        target(
            "SSO: HTTP hops to the gateway per token",
            counts["sso"]["gateway_hops"] if counts.get("sso") else None,
            1,
            "<=",
        ),
        target(
            "SSO at 64: throughput / bare Tornado redirect",
            at64["ratios"].get("throughput") if at64 else None,
            0.2,
            ">=",
        ),
        target(
            "SSO at 64: p99 (ms)",
            at64["latency_ms"]["gateway"]["p99"] if at64 else None,
            50,
            "<",
        ),
        target(
            "memory growth after the first 1,000 sign-ins (%)",
            long["growth_percent"] if long and long["attempted"] >= 20000 else None,
            10,
            "<=",
            "needs --long (>= 20,000 sign-ins)",
        ),
        target(
            "store CPU per sign-in, last --soak slice against the first (% growth)",
            soak["store_cost_growth_percent"] if soak else None,
            20,
            "<=",
            "needs --soak",
        ),
    ]


# ---- table -------------------------------------------------------------------------------


def table(data: Mapping[str, Any]) -> str:
    """The figures as a fixed-width table (stdout) or Markdown rows (``markdown=True``)."""
    return "\n".join(_rows(data, markdown=False))


def _rows(data: Mapping[str, Any], markdown: bool) -> list[str]:
    head = [
        "scenario",
        "conc",
        "ops",
        "err",
        "ops/s (x bare)",
        "p50 ms",
        "p95 ms",
        "p99 ms (x bare)",
        "e2e p99 ms",
        "gw CPU ms/op (x bare)",
        "OP CPU",
        "store CPU",
        "store cmds/op",
        "gw hops",
        "gw RSS MiB",
    ]
    rows: list[list[str]] = []
    for scenario, phases in (
        ("bare redirect", data["bare"]),
        ("full sign-in", data["full_sign_in"]),
        ("SSO token", data["sso"]),
    ):
        for p in phases:
            lat = p["latency_ms"]["gateway"]
            r = p.get("ratios", {})
            cpu = p["cpu_ms"]
            rows.append(
                [
                    scenario,
                    str(p["concurrency"]),
                    str(p["count"]),
                    str(p["errors"]),
                    f"{_fmt(p['throughput'], 1)}{_x(r.get('throughput'))}",
                    _fmt(lat["p50"]),
                    _fmt(lat["p95"]),
                    f"{_fmt(lat['p99'])}{_x(r.get('p99'))}",
                    _fmt(p["latency_ms"]["end_to_end"]["p99"]),
                    f"{_fmt(cpu['gateway'], 3)}{_x(r.get('cpu'))}",
                    _fmt(cpu.get("op"), 3),
                    _fmt(cpu.get("store"), 3),
                    _fmt(p["store_commands_per_op"]["total"], 2),
                    _fmt(p["gateway_hops_per_op"], 2),
                    _fmt(p["gateway_rss_mib"]["peak"], 1),
                ]
            )
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return out + ["| " + " | ".join(row) + " |" for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    out = [line, "-" * len(line)]
    return out + ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]


def step_rows(data: Mapping[str, Any], markdown: bool = False) -> list[str]:
    """p50/p95/p99 of every step, per scenario and concurrency."""
    out = []
    if markdown:
        out += [
            "| scenario | conc | step | p50 ms | p95 ms | p99 ms |",
            "|---|---|---|---|---|---|",
        ]
    for scenario, phases in (("full sign-in", data["full_sign_in"]), ("SSO token", data["sso"])):
        for p in phases:
            for step, lat in p["latency_ms"].items():
                cells = [scenario, str(p["concurrency"]), step]
                cells += [_fmt(lat[f"p{q}"]) for q in PERCENTILES]
                out.append(
                    "| " + " | ".join(cells) + " |"
                    if markdown
                    else f"  {cells[0]:<13} {cells[1]:>4}  {cells[2]:<11}"
                    + "".join(f"{c:>10}" for c in cells[3:])
                )
    return out


def counts_lines(counts: Mapping[str, Any]) -> list[str]:
    out = []
    for scenario, c in counts.items():
        if not c:
            continue
        store = c["store"]
        out.append(
            f"  {scenario:<13} gateway hops {c['gateway_hops']}, OP hops {c['op_hops']}, "
            f"gateway->IdP requests {c['idp_requests']}, store round trips {store['total']} "
            f"(person's path {store['person_path']} + audit inserts {store['audit_inserts']})"
        )
        for step, s in c["steps"].items():
            cmds = ", ".join(f"{k} {v}" for k, v in s["store"].items()) or "none"
            out.append(f"    {step:<10} store: {cmds}; IdP requests {s['idp_requests']}")
    return out


def calls_lines(calls: Mapping[str, Any] | None) -> list[str]:
    """Python calls per operation (``benchmarks/callcount.py``), when they were counted."""
    if not calls:
        return []
    n = calls["operations"]
    return [
        f"  Python calls per operation, one at a time ({n['full_sign_in']} sign-ins, "
        f"{n['sso']} SSO tokens, {n['bare']} bare redirects; the event loop's thread):",
        f"    full sign-in {calls['full_sign_in']} ({calls['full_sign_in_x_bare']}x bare), "
        f"SSO token {calls['sso']} ({calls['sso_x_bare']}x bare), bare redirect {calls['bare']}",
    ]


def instructions_lines(data: Mapping[str, Any]) -> list[str]:
    """Instructions per operation (valgrind's callgrind), and what they would cost at the
    pace the bare redirect ran at concurrency 1 in this run (its CPU per instruction)."""
    counted = data.get("instructions")
    if not counted:
        return []
    if "not_counted" in counted:
        return [f"  instructions per operation: not counted ({counted['not_counted']})"]
    n = counted["operations"]
    lines = [
        f"  instructions per operation, one at a time ({n['full_sign_in']} sign-ins, "
        f"{n['sso']} SSO tokens, {n['bare']} bare redirects; callgrind, the whole process):",
        f"    full sign-in {counted['full_sign_in'] / 1e6:.2f} M "
        f"({counted['full_sign_in_x_bare']}x bare), SSO token {counted['sso'] / 1e6:.2f} M "
        f"({counted['sso_x_bare']}x bare), bare redirect {counted['bare'] / 1e6:.2f} M",
    ]
    pace = bare_cpu_per_instruction(data)
    if pace is not None:
        lines.append(
            f"    at the bare redirect's CPU per instruction in this run: full sign-in "
            f"{counted['full_sign_in'] * pace:.2f} ms, SSO token {counted['sso'] * pace:.2f} ms"
        )
    return lines


def bare_cpu_per_instruction(data: Mapping[str, Any]) -> float | None:
    """ms of CPU per instruction of the bare redirect, kept busy by one client (level 1)."""
    counted = data.get("instructions") or {}
    bare = next((b for b in data.get("bare", []) if b["concurrency"] == 1), None)
    cpu = (bare or {}).get("cpu_ms", {}).get("gateway")
    if not counted.get("bare") or not cpu:
        return None
    return cpu / counted["bare"]


def target_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for t in results:
        value = _fmt(t["value"], 3) if t["value"] is not None else "not measured"
        note = f"  [{t['note']}]" if t["note"] and t["result"] != "PASS" else ""
        out.append(f"{t['result']}: {t['name']} = {value} (target {t['op']} {t['limit']}){note}")
    return out


# ---- chart -------------------------------------------------------------------------------


def chart(data: Mapping[str, Any], path: Path) -> None:
    """p50/p95/p99 (gateway's share) against concurrency, one panel per scenario, with the
    bare Tornado redirect's p99 for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    bare = {p["concurrency"]: p["latency_ms"]["gateway"]["p99"] for p in data["bare"]}
    for ax, (title, phases) in zip(
        axes,
        (("full sign-in (gateway steps)", data["full_sign_in"]), ("SSO token", data["sso"])),
        strict=True,
    ):
        levels = [p["concurrency"] for p in phases]
        for q, style in zip(PERCENTILES, ("o-", "s-", "^-"), strict=True):
            ax.plot(levels, [p["latency_ms"]["gateway"][f"p{q}"] for p in phases], style)
        ax.plot(levels, [bare.get(c, math.nan) for c in levels], "k:", marker="x")
        ax.legend([*(f"p{q}" for q in PERCENTILES), "bare Tornado p99"], loc="upper left")
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent virtual users")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"jitsi-oidc-gateway sign-in latency ({data['mode']} run)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- docs ----------------------------------------------------------------------------------


def driver_line(data: Mapping[str, Any]) -> str:
    if data.get("driver") == "wrk":
        return (
            "Load: wrk for single sign-on and the bare redirect (timed runs), httpx virtual "
            "users for the full sign-in."
        )
    return "Load: httpx virtual users for every scenario (wrk not installed or not chosen)."


def markdown(data: Mapping[str, Any], chart_name: str | None) -> str:
    m = data["machine"]
    lines = [
        "# Performance",
        "",
        "The latest figures of the sign-in benchmark (`benchmarks/signin.py`). Regenerate this",
        "page with the command below; it rewrites the page and the chart next to it.",
        "",
        "```sh",
        data["command"],
        "```",
        "",
        f"Run {data['started']} on {m['cpu_model']} ({m['nproc']} CPUs), {m['memory_gib']} GiB,",
        f"Python {m['python']}, {m['platform']}; {data['mode']} run, store: {data['store']}.",
        "The virtual users, the gateway, the test OP and the store share this machine; its",
        f"load average was {_load(m.get('load_average'))} at the start and "
        f"{_load(m.get('load_average_end'))} at the end (other work on it skews latencies",
        "and throughput, and CPU per operation by up to half between runs here; the counts",
        "do not move).",
        driver_line(data),
        "",
        "## Targets",
        "",
        "```",
        *target_lines(data["targets"]),
        "```",
        "",
        "## Figures",
        "",
        "Latencies are the gateway's share (the OP's login pages excluded; `e2e` includes",
        "them). CPU is per operation, of each process tree on its own. `(x bare)` is the ratio",
        "to the bare Tornado redirect handler at the same concurrency.",
        "",
        *_rows(data, markdown=True),
        "",
        *(
            ["![latency percentiles against concurrency](" + chart_name + ")", ""]
            if chart_name
            else []
        ),
        "### Per step",
        "",
        *step_rows(data, markdown=True),
        "",
        "### Counted (machine-independent)",
        "",
        "One sign-in and one SSO token, each alone, with `/metrics` read between the hops;",
        "then Python calls, with the gateway and the bare server restarted under cProfile",
        "(`benchmarks/callcount.py`), and instructions, restarted under valgrind's callgrind:",
        "CPU time here moves from run to run, calls and instructions do not. The last line",
        "prices the instructions at the CPU per instruction of the bare redirect kept busy",
        "by one client in this run: what the work would cost running hot.",
        "",
        "```",
        *counts_lines(data["counts"]),
        *calls_lines(data.get("calls")),
        *instructions_lines(data),
        "```",
        "",
    ]
    long = data.get("long")
    if long:
        lines += [
            "### Long run",
            "",
            f"{long['sign_ins']} sign-ins ({long['errors']} refused) at concurrency "
            f"{long['concurrency']} in "
            f"{long['seconds']:.0f} s: gateway RSS {long['rss_after_first_1000_mib']:.1f} MiB "
            f"after the first 1,000, {long['rss_end_mib']:.1f} MiB at the end "
            f"({long['growth_percent']:+.1f} %), peak {long['peak_mib']:.1f} MiB.",
            "",
        ]
    lines += READING
    return "\n".join(lines)


READING = [
    "## How to read it",
    "",
    "- **x bare**: the bare handler is Tornado answering a GET with a 302 in its own process,",
    "  driven by the same client. It is what Tornado and this machine cost at best, so the",
    "  ratios travel between machines better than the absolute figures: throughput ratio",
    "  0.25 means the gateway serves a quarter of the redirects per second the bare handler",
    "  does; a latency or CPU ratio of 4 means four times the bare handler's. A full sign-in",
    "  is several gateway requests, a bare operation one.",
    "- **CPU per operation** is the process tree's user + system time over the run divided",
    "  by the operations (`/proc/<pid>/stat`); the gateway's background work (audit writer,",
    "  store maintenance) is in it. The OP (node) and the store are measured apart.",
    "- **Store round trips** are the MongoDB commands the gateway sent",
    "  (`jog_store_commands_total`). The person's path counts what a sign-in's requests",
    "  wait for except the audit inserts; those are group-committed (one `insert` for all",
    "  events waiting) behind the answer, which waits only for a local journal write",
    "  (`audit.wait_for_store: false`, docs/audit.md), and are listed apart.",
    "  Background commands (`ping`, index checks) are left out.",
    "- **Hops** are the requests the person's browser makes to the gateway; OP hops are its",
    "  requests to the OP's login pages; IdP requests are the gateway's back-channel calls.",
    "- The clients run on the same machine. Single sign-on and the bare redirect are driven",
    "  by wrk (C, one thread; `benchmarks/wrk.py`, every answer checked) when it is",
    "  installed: a Python client costs more per request than the gateway does, and would",
    "  set the pace itself. The full sign-in walks the OP's pages with Python virtual users",
    "  (httpx), whose CPU (`cpu_ms.client` in the JSON) can be the limit at 32.",
    "- The test suite runs `--smoke` (5 sign-ins, 10 SSO tokens; `tests/test_bench_smoke.py`)",
    "  so the harness keeps working; it never asserts the targets.",
    "",
]
