"""The shipped settings.yaml and reference docs stay in step with the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "settings.yaml"


def run_check(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=env,
    )


def test_example_validates_once_the_cookie_secret_is_set() -> None:
    done = run_check({"JOG_COOKIES__SECRET": "x" * 40, "JOG_JITSI__APP_SECRET": "y" * 40})
    assert done.returncode == 0, done.stderr
    assert "corp (generic), partners (keycloak), google (google), entra (azure)" in done.stdout


def test_example_placeholder_secret_is_refused_by_path() -> None:
    done = run_check({})
    assert done.returncode == 2
    assert "cookies.secret: is still the example placeholder" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_reason_code_is_documented() -> None:
    from gateway.errors import REASONS

    doc = (EXAMPLE.parent / "docs" / "audit.md").read_text(encoding="utf-8")
    assert [r for r in REASONS if f"| `{r}` |" not in doc] == []
