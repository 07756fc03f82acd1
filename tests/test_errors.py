"""One table of refusal reasons: complete, consistent, and the only source of status and text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from gateway.errors import REASONS, GatewayError

ROOT = Path(__file__).resolve().parents[1]


def reasons_in_source() -> dict[str, list[str]]:
    """Every string literal given as a reason: ``GatewayError("x", ...)``, ``reason="x"``,
    ``deny("x", ...)``, ``TokenServiceError(..., "x")``; with where it was found."""
    found: dict[str, list[str]] = {}
    for path in list((ROOT / "gateway").rglob("*.py")) + list((ROOT / "adapters").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "HTTPError":
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            literal: str | None = None
            if name in ("GatewayError", "deny") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    literal = first.value
            for kw in node.keywords:
                if kw.arg == "reason" and isinstance(kw.value, ast.Constant):
                    literal = str(kw.value.value)
            if literal is not None:
                found.setdefault(literal, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_reason_given_in_the_code_is_in_the_table() -> None:
    missing = {r: where for r, where in reasons_in_source().items() if r not in REASONS}
    assert missing == {}


def test_the_code_gives_most_reasons_somewhere() -> None:
    """The scan is real: it finds the reasons of the flow, logout and the admin API."""
    found = reasons_in_source()
    for reason in (
        "state_invalid",
        "cross_site_request",
        "csrf_token_invalid",
        "admin_unauthorized",
    ):
        assert reason in found


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_each_reason_is_complete(reason: str) -> None:
    info = REASONS[reason]
    assert re.fullmatch(r"[a-z_]+", reason)
    assert 400 <= info.status < 600
    assert info.meaning and info.title and info.text
    assert info.outcome in ("failure", "info")
    # what a person sees says nothing of the internals
    for word in ("MongoDB", "nonce", "JWKS", "token endpoint", "iss "):
        assert word not in info.title + info.text


def test_no_status_table_outside_errors() -> None:
    """Handlers take status codes from the table: no second map keyed by reason."""
    for path in (ROOT / "gateway").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name == "errors.py":
            continue
        assert '"state_invalid": 4' not in text and "PUBLIC_TEXT" not in text, path


def test_unknown_reasons_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="unknown reason"):
        GatewayError("no_such_reason")
    assert GatewayError("cross_site_request").info.status == 403
