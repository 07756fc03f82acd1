"""The single sign-on and bare-redirect load, driven by wrk (Debian's ``wrk``, a C load
generator) when it is installed.

Why not the Python virtual users for these two: one signed-in person's request costs the
gateway about half a millisecond, and an httpx client on the same two cores costs more than
that per request, so at 64 concurrent the client, not the gateway, set the pace (the bare
Tornado redirect measured 1,000 requests/s with httpx and 6,900/s with wrk on the same
machine). The full sign-in stays with the virtual users: it walks the OP's login pages.

Every answer is checked (a 302 to the room with a token, or to the bare target) by
``wrk_check.lua``; each request asks for a new room, and the signed-in people's cookies are
used in turn. wrk runs for a time, not a count: its requests are what it managed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_check.lua")


def find() -> str | None:
    return shutil.which("wrk")


def _lua(value: str | bool | list[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    return json.dumps(value)  # a JSON string is a valid Lua string literal for ASCII


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    bad: int  # answered, but not the expected redirect
    errors: int  # connect, read, write and timeout (an HTTP error answer counts as bad)
    first_bad: str
    latency_ms: dict[str, float]  # p50, p95, p99, max


async def run(
    url: str,
    path_prefix: str,
    concurrency: int,
    seconds: float,
    *,
    expect_location: str,
    expect_jwt: bool,
    cookies: list[str] | None = None,
) -> WrkResult:
    """``concurrency`` connections on one wrk thread for ``seconds``."""
    exe = find()
    if exe is None:
        raise RuntimeError("wrk not found: apt-get install wrk (scripts/setup.sh does)")
    for cookie in cookies or []:
        if not cookie.isascii():
            raise ValueError("cookies must be ASCII")
    with tempfile.TemporaryDirectory(prefix="jog-wrk-") as tmp:
        out = Path(tmp) / "result.json"
        script = Path(tmp) / "run.lua"
        settings = {
            "prefix": path_prefix,
            "cookies": list(cookies or []),
            "expect_location": expect_location,
            "expect_jwt": expect_jwt,
            "out": str(out),
        }
        head = "".join(f"{k} = {_lua(v)}\n" for k, v in settings.items())
        script.write_text(head + SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
        process = await asyncio.create_subprocess_exec(
            exe,
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({process.returncode}): {output.decode()[-500:]}")
        data = json.loads(out.read_text())
    errors = sum(v for k, v in data["errors"].items() if k != "status")
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        bad=data["bad"],
        errors=errors,
        first_bad=data["first_bad"],
        latency_ms={k: round(v / 1000, 3) for k, v in data["latency_us"].items()},
    )
