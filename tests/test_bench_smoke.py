"""The sign-in benchmark's harness keeps working: ``--smoke`` (5 sign-ins, 10 SSO tokens)
end to end in a child process, the JSON complete and the counted figures sane. The figures
themselves and the targets are the benchmark's business (``python -m benchmarks.signin``),
never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
        timeout=110,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert {"command", "machine", "counts", "bare", "full_sign_in", "sso", "targets"} <= set(data)
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
    names = [t["name"] for t in data["targets"]]
    assert len(names) == 7 and all(t["result"] in {"PASS", "FAIL", "SKIP"} for t in data["targets"])
    for line in ("PASS", "FAIL", "SKIP"):
        if any(t["result"] == line for t in data["targets"]):
            assert f"{line}: " in result.stdout
