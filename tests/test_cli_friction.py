"""The command line's exact messages where an operator used to get a traceback or a riddle.

Runs ``gateway.cli.main(argv)`` in-process (no subprocess) and compares whole lines.
"""

from __future__ import annotations

import gc
import io
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from gateway import cli
from gateway.logging_setup import RedactingFilter, TextFormatter
from tests.support.gateway import GatewayUnderTest
from tests.test_cli_config import VALID


@pytest.fixture
def bare_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without settings.yaml and an environment without JOG_ variables."""
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("JOG_"):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Commands reconfigure the root logger; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access = logging.getLogger("tornado.access").disabled
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("tornado.access").disabled = access


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_no_settings_file(
    bare_dir: Path, command: str, capsys: pytest.CaptureFixture[str], root_logging: None
) -> None:
    assert cli.main([command]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "configuration error:\n"
        f"  no settings file found at {bare_dir / 'settings.yaml'}: give one with -c FILE "
        "(or set JOG_* environment variables)\n"
    )


def test_environment_alone_is_still_enough(
    bare_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOG_PUBLIC_URL", "https://gw.example")
    assert cli.main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert "  cookies: Field required\n" in err  # the variables were read: real problems now
    assert "no settings file" not in err


def test_yaml_error_names_the_file_and_line(
    bare_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bare_dir / "settings.yaml"
    path.write_text("public_url: https://gw.example\nidps: [unclosed\n", encoding="utf-8")
    assert cli.main(["check-config", "-c", str(path)]) == 2
    assert capsys.readouterr().err == (
        "configuration error:\n"
        f"  {path}: not valid YAML at line 3, column 1: "
        "expected ',' or ']', but got '<stream end>'\n"
    )


def test_short_app_secret_is_reported_at_its_key(
    bare_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data["jitsi"]["app_secret"] = "too-short"
    path = bare_dir / "s.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert cli.main(["check-config", "-c", str(path)]) == 2
    assert capsys.readouterr().err == (
        "configuration error:\n"
        "  jitsi.app_secret: must be at least 32 characters for HS256 (RFC 7518 3.2), got 9\n"
    )


def test_adapters_table_columns_line_up(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["adapters"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "PACKAGE", "VERSION", "TARGET", "DESCRIPTION"]
    starts = [lines[0].index(h) for h in ("PACKAGE", "VERSION", "TARGET", "DESCRIPTION")]
    assert {line.split()[0] for line in lines[1:]} >= {"azure", "generic", "google", "keycloak"}
    for line in lines[1:]:
        for start in starts:  # every cell begins under its header, after two spaces
            assert line[start - 2 : start] == "  " and line[start] != " ", (line, start)


# PyMongo's monitor leaves the socket of its refused connection to the garbage collector: the
# ResourceWarning is collected here (gc.collect below), not in whichever test runs later.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_audit_query_with_mongodb_unreachable(
    bare_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(yaml.safe_dump(VALID))
    data["mongodb"] = {"uri": "mongodb://ops:s3cret-pw@127.0.0.1:1/audit", "timeout_seconds": 1}
    (bare_dir / "settings.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    assert cli.main(["audit", "query"]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        "error: MongoDB at 127.0.0.1:1 did not answer within 1 s "
        "(ServerSelectionTimeoutError); check mongodb.uri or --mongodb-uri\n"
    )
    assert captured.out == ""
    gc.collect()


def test_demo_on_a_busy_port(
    bare_dir: Path, capsys: pytest.CaptureFixture[str], root_logging: None
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["demo", "--port", str(port), "--jitsi-port", "0"]) == 1
    assert capsys.readouterr().err == (
        f"error: port {port} on 127.0.0.1 is already in use; choose another with --port PORT\n"
    )


@pytest.mark.asyncio
async def test_log_lines_carry_the_request_id_once(
    gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("gateway.signin")  # where refusals are logged
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        response = await browser.get(f"{gw.url}/oidc/auth", params={"room": "no.dots"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert response.status_code == 400
    request_id = response.headers["X-Request-Id"]
    (line,) = [line for line in stream.getvalue().splitlines() if "refused bad_request" in line]
    assert line.endswith(f" [request {request_id}]")
    assert line.count("[request ") == 1
