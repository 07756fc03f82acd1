"""The sign-in benchmark's harness keeps working: ``--smoke`` (5 sign-ins, 10 SSO tokens)
end to end in a child process, the JSON complete and the counted figures sane; every other
mode's plan checked as the run reads it (``--quick`` once crashed after its load phases), and
the yardstick never silently swapped (no wrk: a refusal, or no ratios with ``--driver httpx``).
The figures themselves and the targets are the benchmark's business
(``python -m benchmarks.signin``), never asserted here."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report, signin, wrk
from benchmarks.bare import TARGET

ROOT = Path(__file__).resolve().parents[1]

PHASE_FIELDS = {
    "concurrency",
    "count",
    "errors",
    "seconds",
    "throughput",
    "latency_ms",
    "cpu_ms",
    "store_commands_per_op",
    "idp_requests_per_op",
    "gateway_hops_per_op",
    "gateway_rss_mib",
}


def test_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    command = ["-m", "benchmarks.signin", "--smoke", "--json", str(out), "--chart", str(chart)]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,  # the instruction count runs the gateway under valgrind
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert {"command", "machine", "counts", "bare", "full_sign_in", "sso", "targets"} <= set(data)
    assert data["driver"] == "wrk"  # scripts/setup.sh --test installs it
    assert data["machine"]["nproc"] >= 1 and data["machine"]["cpu_model"]
    for scenario in ("bare", "full_sign_in", "sso"):
        assert data[scenario], scenario
        for phase in data[scenario]:
            assert PHASE_FIELDS <= set(phase), (scenario, set(phase) ^ PHASE_FIELDS)
            assert phase["count"] > 0 and phase["errors"] == 0
            for q in ("p50", "p95", "p99"):
                assert phase["latency_ms"]["gateway"][q] > 0
    for phase in data["full_sign_in"] + data["sso"]:
        assert {"throughput", "p99", "cpu"} <= set(phase["ratios"])
        assert phase["cpu_ms"]["gateway"] is not None
        assert phase["cpu_ms"]["op"] is not None and phase["cpu_ms"]["store"] is not None
    # Counted one operation at a time: integers, machine-independent.
    for scenario in ("full_sign_in", "sso"):
        counts = data["counts"][scenario]
        for key in ("gateway_hops",):
            assert isinstance(counts[key], int) and counts[key] > 0
        for key in ("total", "person_path", "audit_inserts"):
            assert isinstance(counts["store"][key], int) and counts["store"][key] > 0
    full = data["counts"]["full_sign_in"]
    assert full["op_hops"] > 0 and full["idp_requests"] > 0
    # Python calls, counted in a restarted gateway and bare server: a sign-in (two requests,
    # a code exchange, an ID token check, six store commands) is more work than one SSO
    # token, which is more than one bare redirect.
    calls = data["calls"]
    assert calls["operations"] == {"full_sign_in": 3, "sso": 5, "bare": 20}
    assert calls["full_sign_in"] > calls["sso"] > calls["bare"] > 0
    assert abs(calls["sso_x_bare"] - calls["sso"] / calls["bare"]) <= 0.1
    assert "Python calls per operation" in result.stdout
    # Instructions, counted under callgrind (scripts/setup.sh --test installs valgrind): the
    # same order, and several times the calls (each call is many instructions).
    instructions = data["instructions"]
    assert instructions["operations"] == {"full_sign_in": 2, "sso": 3, "bare": 10}
    assert instructions["full_sign_in"] > instructions["sso"] > instructions["bare"] > 0
    for op in ("full_sign_in", "sso", "bare"):
        assert instructions[op] > 100 * calls[op], op
    assert "instructions per operation" in result.stdout
    assert "at the bare redirect's CPU per instruction" in result.stdout
    names = [t["name"] for t in data["targets"]]
    assert len(names) == 8 and all(t["result"] in {"PASS", "FAIL", "SKIP"} for t in data["targets"])
    for line in ("PASS", "FAIL", "SKIP"):
        if any(t["result"] == line for t in data["targets"]):
            assert f"{line}: " in result.stdout


@pytest.mark.asyncio
async def test_the_wrk_driver_counts_answers_that_are_not_the_expected_redirect() -> None:
    """wrk's Lua check is what makes its figures count: a wrong target is all bad."""
    bare = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.bare", "--port", "0",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert bare.stdout is not None
        port = json.loads(await bare.stdout.readline())["port"]
        url = f"http://127.0.0.1:{port}"
        good = await wrk.run(url, "/r?n=", 4, 1, expect_location=TARGET, expect_jwt=True)
        assert good.requests > 0 and good.bad == 0 and good.errors == 0
        assert 0 < good.latency_ms["p50"] <= good.latency_ms["p99"]
        wrong = await wrk.run(
            url, "/r?n=", 4, 1, expect_location="http://elsewhere/", expect_jwt=False,
            cookies=["a=1", "b=2"],
        )  # fmt: skip
        assert wrong.requests > 0 and wrong.bad == wrong.requests
        assert wrong.first_bad.startswith("302 http://127.0.0.1:9/meet/room")
    finally:
        bare.terminate()
        await bare.wait()


@pytest.mark.parametrize("mode", sorted(signin.PLANS))
def test_every_mode_has_a_plan_the_run_can_read(mode: str) -> None:
    """What ``benchmark`` and ``count_work`` unpack, for every mode the command line offers."""
    flag = [] if mode == "default" else [f"--{mode}"]
    assert signin.parse_args(flag).mode == mode
    plan = signin.PLANS[mode]
    assert plan.mode == mode
    for concurrency, count in plan.full + plan.sso:
        assert concurrency > 0 and count > 0
    n_full, n_sso, n_bare = plan.counted  # the quick plan had None here
    assert min(n_full, n_sso, n_bare) > 0
    if plan.instructions is not None:
        assert min(plan.instructions) > 0
    assert (plan.soak is not None) == (mode == "soak")


def test_a_plan_with_a_field_out_of_place_fails_at_once() -> None:
    with pytest.raises(ValueError, match="counted"):
        signin.Plan("bad", ((1, 8),), ((8, 200),), 500, 8, 3, None)  # type: ignore[arg-type]


def test_without_wrk_the_benchmark_refuses_rather_than_change_its_yardstick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wrk, "find", lambda: None)
    for asked in ("auto", "wrk"):
        with pytest.raises(SystemExit, match=r"setup\.sh --test"):
            signin.choose_driver(asked)
    assert signin.choose_driver("httpx") == "httpx"
    # httpx-driven phases carry no ratio to the bare redirect, and the targets say SKIP
    phase = {"concurrency": 64, "throughput": 900.0, "cpu_ms": {"gateway": 0.9},
             "latency_ms": {"gateway": {"p50": 1.0, "p95": 2.0, "p99": 3.0}}}  # fmt: skip
    bare = {64: {"throughput": 1000.0, "cpu_ms": {"gateway": 0.2},
                 "latency_ms": {"gateway": {"p50": 1.0, "p95": 1.0, "p99": 1.0}}}}  # fmt: skip
    signin.with_ratios([phase], bare, "httpx")
    assert phase["ratios"] == {}
    data = {"full_sign_in": [], "sso": [phase | {"count": 1}], "counts": {}}
    ratio = next(t for t in report.targets(data) if "bare Tornado redirect" in t["name"])
    assert ratio["result"] == "SKIP"
    signin.with_ratios([phase], bare, "wrk")
    assert phase["ratios"]["throughput"] == 0.9
