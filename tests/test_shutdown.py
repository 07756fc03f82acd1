"""SIGTERM to a real ``serve`` process during a sign-in: the callback in flight finishes
(its single-use state is not lost), its audit event reaches MongoDB, then the process
exits. Also for a worker of ``--processes 2``, and on both event loops ``listen.event_loop``
offers (the process is checked to run the one chosen)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pymongo import AsyncMongoClient

from tests.support.gateway import JITSI_BASE
from tests.support.nginx import free_port
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio


def write_settings(
    path: Path,
    port: int,
    op: TestOP,
    client: dict,
    mongo_uri: str,
    db: str,
    event_loop: str = "uvloop",
) -> None:
    data: dict[str, Any] = {
        "public_url": f"http://127.0.0.1:{port}",
        "listen": {
            "host": "127.0.0.1",
            "port": port,
            "drain_seconds": 10,
            "event_loop": event_loop,
        },
        "mongodb": {"uri": mongo_uri, "database": db, "timeout_seconds": 2},
        "cookies": {"secret": secrets.token_urlsafe(32), "secure": False},
        "jitsi": {
            "base_url": JITSI_BASE,
            "app_id": "test_app",
            "domain": "meet.test",
            "app_secret": secrets.token_urlsafe(32),
        },
        "idps": [
            {
                "id": "testop",
                "adapter": "generic",
                "issuer": op.issuer,
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
                "scopes": ["openid", "profile", "email"],
            }
        ],
        "audit": {"spool_dir": str(path.parent / "spool")},
        "log_format": "text",
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def start_serve(cfg: Path, processes: int) -> subprocess.Popen[str]:
    """``serve`` in its own process group (the test signals all workers); its output goes
    to ``serve.log`` beside the settings (a pipe would fill up under load and block it)."""
    with (cfg.parent / "serve.log").open("a") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "-c",
                str(cfg),
                "--processes",
                str(processes),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


async def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "serve exited at start"
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("serve did not become ready")


def loaded_uvloop(pid: int) -> bool:
    """Whether the process has uvloop's extension mapped (it is imported only when chosen)."""
    return "uvloop/loop." in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(
    ("processes", "event_loop"),
    [(1, "uvloop"), (2, "uvloop"), (1, "asyncio")],
    ids=["one_process", "two_workers", "asyncio_loop"],
)
async def test_sigterm_lets_the_callback_in_flight_finish(
    op: TestOP, mongo_uri: str, tmp_path: Path, processes: int, event_loop: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = await op.register_client([f"{url}/oidc/redirect/testop"])
    db = f"jog_test_{secrets.token_hex(6)}"
    cfg = tmp_path / "settings.yaml"
    write_settings(cfg, port, op, client, mongo_uri, db, event_loop)
    proc = start_serve(cfg, processes)
    try:
        await wait_ready(url, proc)
        if processes == 1:
            assert loaded_uvloop(proc.pid) is (event_loop == "uvloop")
        async with httpx.AsyncClient(follow_redirects=False, timeout=30) as browser:
            start = await browser.get(f"{url}/oidc/auth", params={"room": "standup"})
            callback = await op.login_over_http(
                browser, start.headers["location"], "alice", "alice-pw"
            )
            await op.delay_next_token_response(2000)  # the code exchange takes 2 s
            in_flight = asyncio.create_task(browser.get(callback))
            await asyncio.sleep(0.7)  # the callback is now waiting on the IdP
            os.killpg(proc.pid, signal.SIGTERM)  # what Docker and systemd send
            await asyncio.sleep(0.3)
            with pytest.raises(httpx.ConnectError):  # no new connections while draining
                async with httpx.AsyncClient(timeout=2) as other:
                    await other.get(f"{url}/healthz")
            response = await in_flight
            assert response.status_code == 302, response.text
            assert "jwt=" in response.headers["location"]  # signed in and minted
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError((tmp_path / "serve.log").read_text()) from None
        output = (tmp_path / "serve.log").read_text()
        assert proc.returncode == 0, output
        mongo: AsyncMongoClient = AsyncMongoClient(mongo_uri)
        try:
            events = [d["event"] async for d in mongo[db]["audit"].find({})]
            assert "login_succeeded" in events, (events, output)
            assert await mongo[db]["sessions"].count_documents({}) == 1
        finally:
            await mongo.drop_database(db)
            await mongo.close()
        assert "Traceback" not in output, output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
