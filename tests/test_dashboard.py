"""deploy/grafana/jitsi-oidc-gateway.json: every metric and label it queries exists in the
gateway's /metrics after sign-ins, every gateway metric is on it, and (where Debian's
``promtool`` is installed) every query parses as PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import GatewayUnderTest
from tests.support.op import TestOP

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "jitsi-oidc-gateway.json"
METRIC = re.compile(r"\b(jog_[a-z0-9_]+)\b")
MATCHERS = re.compile(r"(jog_[a-z0-9_]+)\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
BY = re.compile(r"\bby\s*\(([^)]*)\)")
# Grafana's variables, as Grafana substitutes them, so promtool sees plain PromQL.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "1d", "$idp": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def expressions() -> list[str]:
    found = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    assert found, "the dashboard has no queries"
    return found


def used_labels(expr: str) -> dict[str, set[str]]:
    """metric -> labels the expression filters or groups it by."""
    out: dict[str, set[str]] = {m: set() for m in METRIC.findall(expr)}
    for metric, body in MATCHERS.findall(expr):
        out[metric] |= set(MATCHER_LABEL.findall(body))
    grouped = {g.strip() for group in BY.findall(expr) for g in group.split(",") if g.strip()}
    for metric in out:  # each query here aggregates one metric family
        out[metric] |= grouped
    return out


def test_dashboard_shape() -> None:
    dash = dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["__inputs"][0]["name"] == "DS_PROMETHEUS"
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("sign-ins", "refusals", "latency", "jwks", "mongodb", "spool"):
        assert topic in titles, topic


@pytest.mark.asyncio
async def test_every_dashboard_query_matches_the_metrics(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    response = await gw.sign_in(browser, op)
    assert "jwt=" in response.headers["location"]
    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as other:
        callback = await gw.start_and_login(other, op)
        await op.tamper_next_id_token("signature")
        assert (await other.get(callback)).status_code == 401  # a refusal with a reason
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{gw.url}/metrics")).text
    labels_of: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels_of.setdefault(sample.name, set()).update(sample.labels)
    queried: set[str] = set()
    for expr in expressions():
        for metric, labels in used_labels(expr).items():
            queried.add(metric)
            assert metric in labels_of, f"{metric} (in {expr!r}) is not in /metrics"
            missing = labels - labels_of[metric]
            assert not missing, f"{metric} has no label {missing} (in {expr!r})"
    idp_var = next(v for v in dashboard()["templating"]["list"] if v["name"] == "idp")
    (var_metric,) = METRIC.findall(idp_var["definition"])
    assert "idp" in labels_of[var_metric]
    # ... and the other way round: every gateway metric is on the dashboard.
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in labels_of}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in queried}
    assert {f for f in families if f.startswith("jog_")} <= shown


def test_queries_parse_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: bash scripts/setup.sh --test installs Debian's prometheus"
    rules = []
    for i, expr in enumerate(expressions()):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
