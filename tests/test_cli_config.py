"""The ``check-config`` and ``adapters`` commands: in this process (``gateway.cli.main``),
and once each as a real ``python -m gateway`` process (exit codes, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cli import Ran
from tests.support.cli import run_cli as in_process

VALID: dict[str, Any] = {
    "public_url": "http://127.0.0.1:8000",
    "cookies": {"secret": "cookie-secret-0123456789abcdefghijklmnop", "secure": False},
    "jitsi": {
        "base_url": "http://127.0.0.1:8001",
        "app_id": "my_jitsi_app",
        "domain": "meet.example.com",
        "algorithm": "HS256",
        "app_secret": "jitsi-app-secret-0123456789abcdefghijkl",
    },
    "idps": [
        {
            "id": "corp",
            "adapter": "generic",
            "issuer": "http://127.0.0.1:9000",
            "client_id": "jitsi",
            "client_secret": "idp-client-secret-xyz",
        }
    ],
}


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Ran:
    """In this process (``gateway.cli.main``), without the caller's ``JOG_`` variables."""
    return in_process(*args, cwd=cwd, env=env or {})


def run_process(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m gateway ARGS`` as an operator runs it, without the caller's ``JOG_``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOG_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def without_app_id() -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    del data["jitsi"]["app_id"]
    return data


def unknown_adapter() -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data["idps"][0]["adapter"] = "nope"
    return data


def bad_option() -> dict[str, Any]:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data["idps"][0]["options"] = {"subjekt": "oid"}
    return data


@pytest.mark.parametrize(
    ("content", "env", "expected"),
    [
        pytest.param(without_app_id(), {}, "  jitsi.app_id: Field required", id="missing_app_id"),
        pytest.param("idps: [unclosed\n", {}, "not valid YAML", id="invalid_yaml"),
        pytest.param(
            unknown_adapter(), {}, "  idps[0].adapter: unknown adapter 'nope'", id="unknown_adapter"
        ),
        pytest.param(
            bad_option(),
            {},
            "  idps[0].options.subjekt: Extra inputs are not permitted",
            id="adapter_option_typo",
        ),
        pytest.param(
            VALID,
            {"JOG_IDPS__0__CLIENT_SECRET_FILE": "/nonexistent/jog-secret"},
            "  JOG_IDPS__0__CLIENT_SECRET_FILE: cannot read /nonexistent/jog-secret",
            id="unreadable_secret_file",
        ),
    ],
)
def test_check_config_broken(
    tmp_path: Path, content: Any, env: dict[str, str], expected: str
) -> None:
    """Exit code 2, one ``path: problem`` line, never a traceback."""
    path = write(tmp_path, content)
    result = run_cli("check-config", "-c", str(path), cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert "configuration error:" in result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "configuration OK" not in result.stdout


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = run_cli("check-config", "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_never_prints_secrets(tmp_path: Path) -> None:
    data = without_app_id()
    result = run_cli("check-config", "-c", str(write(tmp_path, data)), cwd=tmp_path)
    output = result.stdout + result.stderr
    for secret in (
        data["cookies"]["secret"],
        data["jitsi"]["app_secret"],
        data["idps"][0]["client_secret"],
    ):
        assert secret not in output


def test_check_config_valid(tmp_path: Path) -> None:
    result = run_cli("check-config", "-c", str(write(tmp_path, VALID)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "configuration OK: 1 IdP(s): corp (generic)" in result.stdout
    assert "Traceback" not in result.stderr


def test_check_config_reads_settings_yaml_in_cwd(tmp_path: Path) -> None:
    write(tmp_path, VALID)
    result = run_cli("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_check_config_environment_override(tmp_path: Path) -> None:
    """The environment repairs what the file lacks (JOG_ + path)."""
    path = write(tmp_path, without_app_id())
    result = run_cli(
        "check-config", "-c", str(path), cwd=tmp_path, env={"JOG_JITSI__APP_ID": "from-env"}
    )
    assert result.returncode == 0, result.stderr


def test_adapters_lists_generic(tmp_path: Path) -> None:
    result = run_cli("adapters", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    generic = [line for line in lines if line.split()[:1] == ["generic"]]
    assert len(generic) == 1, result.stdout
    assert "jitsi-oidc-gateway" in generic[0]
    assert "adapters.generic:GenericAdapter" in generic[0]
    assert "BROKEN" not in result.stdout


def test_a_real_process_exits_0_valid_and_2_broken(tmp_path: Path) -> None:
    good = run_process("check-config", "-c", str(write(tmp_path, VALID)), cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "configuration OK: 1 IdP(s): corp (generic)" in good.stdout
    bad = run_process("check-config", "-c", str(write(tmp_path, without_app_id())), cwd=tmp_path)
    assert bad.returncode == 2
    assert "  jitsi.app_id: Field required" in bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout
    listed = run_process("adapters", cwd=tmp_path)
    assert listed.returncode == 0 and "adapters.generic:GenericAdapter" in listed.stdout


@pytest.mark.parametrize(
    ("public_url", "uri", "warned"),
    [
        pytest.param("https://meet.example.com", None, True, id="https_on_embedded"),
        pytest.param("http://127.0.0.1:8000", None, False, id="local_http_on_embedded"),
        pytest.param(
            "https://meet.example.com", "mongodb://db/?replicaSet=rs", False, id="mongodb"
        ),
    ],
)
def test_check_config_warns_when_an_https_gateway_runs_on_the_embedded_store(
    tmp_path: Path, public_url: str, uri: str | None, warned: bool
) -> None:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data["public_url"] = public_url
    if uri:
        data["mongodb"] = {"uri": uri}
    result = run_cli("check-config", "-c", str(write(tmp_path, data)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("mongodb.uri is empty but public_url is https" in result.stderr) is warned
    assert "configuration OK" in result.stdout
