"""Several gateway instances sharing one MongoDB and one set of secrets.

Two gateways on different ports (one machine standing in for two behind a load balancer):
a flow started on one completes on the other. And ``serve --processes 2``: real forked
worker processes on one port, supervised by their parent.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml
from pymongo import AsyncMongoClient

from gateway.cli import _children
from tests.support.gateway import APP_SECRET, JITSI_BASE, start_gateway, token_from
from tests.support.nginx import free_port
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

REPO_ROOT = Path(__file__).resolve().parents[1]


def on(url: str, base: str) -> str:
    """``url`` with its scheme and host:port replaced by ``base``'s (another instance)."""
    parts, target = urlsplit(url), urlsplit(base)
    return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, ""))


async def test_flow_started_on_one_instance_completes_on_another(
    op: TestOP, mongo_uri: str
) -> None:
    public = "http://127.0.0.1:9"  # the load balancer's address; never contacted
    client = await op.register_client([f"{public}/oidc/redirect/testop"])
    db = f"jog_test_{secrets.token_hex(6)}"
    shared: dict[str, Any] = {
        "public_url": public,
        "mongodb": {"database": db},
        "cookies": {"secret": secrets.token_urlsafe(32)},
        "idp": {"client_id": client["client_id"], "client_secret": client["client_secret"]},
    }
    try:
        async with (
            start_gateway(op, mongo_uri, **shared) as one,
            start_gateway(op, mongo_uri, **shared) as two,
            httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser,
        ):
            started = await browser.get(f"{one.url}/oidc/auth", params={"room": "standup"})
            assert started.status_code == 302
            callback = await op.login_over_http(
                browser, started.headers["location"], "alice", "alice-pw"
            )
            assert callback.startswith(f"{public}/oidc/redirect/testop?")
            # The load balancer sends the IdP's answer to the other instance.
            finished = await browser.get(on(callback, two.url))
            assert finished.status_code == 302, finished.text
            assert finished.headers["location"].startswith(f"{JITSI_BASE}/standup?jwt=")
            # Each instance sees the session the other created.
            again = await browser.get(f"{two.url}/oidc/tokenize", params={"room": "retro"})
            assert "jwt=" in again.headers["location"]
            events = [d["event"] async for d in one.store.audit.collection.find({})]
            assert events.count("flow_started") == 1 and events.count("token_minted") == 2
            # Replaying the callback on the first instance is refused: single use, shared.
            replay = await browser.get(on(callback, one.url))
            assert replay.status_code == 400
    finally:
        mongo: AsyncMongoClient = AsyncMongoClient(mongo_uri)
        await mongo.drop_database(db)
        await mongo.close()


def serve_settings(
    path: Path, port: int, op: TestOP, client: dict[str, Any], uri: str, db: str
) -> None:
    settings = {
        "public_url": f"http://127.0.0.1:{port}",
        "listen": {"host": "127.0.0.1", "port": port},
        "mongodb": {"uri": uri, "database": db, "timeout_seconds": 2},
        "cookies": {"secret": secrets.token_urlsafe(32), "secure": False},
        "jitsi": {
            "base_url": JITSI_BASE,
            "app_id": "test_app",
            "domain": "meet.test",
            "app_secret": APP_SECRET,
        },
        "idps": [
            {
                "id": "testop",
                "adapter": "generic",
                "issuer": op.issuer,
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
            }
        ],
        "audit": {"spool_dir": str(path.parent / "spool")},
        "log_format": "json",
    }
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode}")
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("serve --processes did not become ready")


async def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


@dataclass
class Supervised:
    proc: subprocess.Popen[bytes]
    url: str
    client: dict[str, Any]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@asynccontextmanager
async def serve_processes(op: TestOP, mongo_uri: str, tmp_path: Path) -> AsyncIterator[Supervised]:
    """``serve --processes 2`` on a free port (tried again if another test took it first),
    ready, with its two workers up; killed and its database dropped afterwards."""
    db = f"jog_test_{secrets.token_hex(6)}"
    log = tmp_path / "serve.log"
    for _attempt in range(5):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        client = await op.register_client([f"{url}/oidc/redirect/testop"])
        config = tmp_path / "settings.yaml"
        serve_settings(config, port, op, client, mongo_uri, db)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOG_")}
        proc = spawn_serve(config, log, env)
        try:
            await wait_ready(url, proc)
        except AssertionError:
            text = log.read_text(errors="replace")
            proc.kill()
            proc.wait()
            if "Address already in use" in text:
                continue
            raise AssertionError(text) from None
        break
    else:
        raise AssertionError("no free port for serve --processes")
    try:
        await wait_until(lambda: len(_children(proc.pid)) == 2)
        yield Supervised(proc, url, client, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        mongo: AsyncMongoClient = AsyncMongoClient(mongo_uri)
        await mongo.drop_database(db)
        await mongo.close()


async def test_serve_processes_forks_supervised_workers(
    op: TestOP, mongo_uri: str, tmp_path: Path
) -> None:
    async with serve_processes(op, mongo_uri, tmp_path) as served:
        proc, url = served.proc, served.url
        first_workers = set(_children(proc.pid))
        async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser:
            started = await browser.get(f"{url}/oidc/auth", params={"room": "standup"})
            callback = await op.login_over_http(
                browser, started.headers["location"], "alice", "alice-pw"
            )
            finished = await browser.get(callback)
            assert finished.status_code == 302, finished.text
            assert token_from(finished.headers["location"])
        # A crashed worker is replaced.
        victim = sorted(first_workers)[0]
        os.kill(victim, signal.SIGKILL)
        await wait_until(
            lambda: victim not in _children(proc.pid) and len(_children(proc.pid)) == 2
        )
        await wait_ready(url, proc)
        # SIGTERM to the parent stops every worker and then the parent, cleanly.
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        assert all(_gone(pid) for pid in workers)
        assert served.client["client_secret"] not in served.log_text()


async def test_serve_processes_stops_while_a_worker_restarts(
    op: TestOP, mongo_uri: str, tmp_path: Path
) -> None:
    """A worker dies after the supervisor began to stop (the forwarded SIGTERM caught it
    while starting, say): the supervisor restarts it, with the listening sockets already
    closed. That worker must exit at once, and everything stop cleanly, instead of a
    restart loop. Made certain by holding one worker stopped (SIGSTOP) until the other
    has exited on the forwarded SIGTERM, then killing it."""
    async with serve_processes(op, mongo_uri, tmp_path) as served:
        proc = served.proc
        held, other = sorted(_children(proc.pid))
        os.kill(held, signal.SIGSTOP)
        proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: _gone(other))  # the supervisor has closed its sockets
        os.kill(held, signal.SIGKILL)  # a crash, to the supervisor: it forks a new worker
        assert await asyncio.to_thread(proc.wait, 20) == 0
        log = served.log_text()
        assert log.count("restarting") == 1, log[-3000:]
        assert "Invalid file descriptor" not in log


def spawn_serve(config: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``serve --processes 2`` in its own session, stderr to ``log``."""
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(config), "--processes", "2"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )


def _gone(pid: int) -> bool:
    """The process no longer exists (or is a zombie waiting for its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


async def test_processes_refused_with_the_embedded_store(tmp_path: Path, op: TestOP) -> None:
    config = tmp_path / "settings.yaml"
    serve_settings(config, free_port(), op, {"client_id": "x", "client_secret": "y"}, "", "db")
    data = yaml.safe_load(config.read_text())
    data["mongodb"].pop("uri")
    config.write_text(yaml.safe_dump(data))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "serve", "-c", str(config), "--processes", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "mongodb.uri" in result.stderr and "--processes" in result.stderr
