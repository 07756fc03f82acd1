"""Limits on the gateway's own port, over real sockets against the server ``serve`` builds
(``gateway.serving.make_server``) around the real app: body size, header size, idle and
header timeouts, the connection ceiling, and the file limit checked at start-up."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.app import make_app
from gateway.config import Listen
from gateway.serving import DrainingHTTPServer, make_server
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP
from tests.support.token_service import token_service_gateway

pytestmark = pytest.mark.asyncio

SSO = "http://127.0.0.1:9/meet/static/sso.html"


@asynccontextmanager
async def limited(gw: GatewayUnderTest, **limits: Any) -> AsyncIterator[tuple[str, Any]]:
    """The gateway's app behind a server with these ``listen`` limits; (url, server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    server: DrainingHTTPServer = make_server(make_app(gw.gateway), Listen(**limits))
    server.add_sockets([sock])
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.stop()
        await server.close_all_connections()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes the connection within ``seconds`` (EOF or reset)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_bodies_over_the_limit_are_refused_unread(op: TestOP, mongo_uri: str) -> None:
    async with token_service_gateway(op, mongo_uri, SSO) as gw:
        async with limited(gw, max_body_bytes=8192) as (url, _):
            async with httpx.AsyncClient(timeout=30.0) as client:

                async def refused(**request: Any) -> bool:
                    """Answered 400, or cut off (the server closes while the client sends)."""
                    try:
                        answer = await client.post(f"{url}/oidc/token", **request)
                    except httpx.HTTPError:
                        return True
                    return answer.status_code == 400 and "error" not in answer.text

                async def chunks() -> AsyncIterator[bytes]:
                    yield b"grant_type=x&client_id="
                    for _ in range(50):
                        yield b"z" * 4096

                assert await refused(data={"grant_type": "x", "client_id": "y" * 200_000})
                form = {"Content-Type": "application/x-www-form-urlencoded"}
                assert await refused(content=chunks(), headers=form)  # chunked, no length
                small = await client.post(f"{url}/oidc/token", data={"grant_type": "x"})
                assert small.status_code == 400 and small.json()["error"]
        await gw.store.audit.settle()
        refused = [d async for d in gw.store.audit.collection.find({"event": "token_refused"})]
        assert len(refused) == 1  # only the small request reached the handler


async def test_headers_over_the_limit_close_the_connection(op: TestOP, mongo_uri: str) -> None:
    async with start_gateway(op, mongo_uri) as gw:
        async with limited(gw, max_header_bytes=8192) as (url, _):
            async with httpx.AsyncClient(timeout=30.0) as client:
                with pytest.raises(httpx.HTTPError):
                    await client.get(f"{url}/healthz", headers={"X-Pad": "p" * 20_000})
                ok = await client.get(f"{url}/healthz", headers={"X-Pad": "p" * 2000})
                assert ok.status_code == 200


async def test_idle_and_silent_connections_are_closed(op: TestOP, mongo_uri: str) -> None:
    async with start_gateway(op, mongo_uri) as gw:
        async with limited(gw, idle_seconds=1, body_seconds=1) as (url, _):
            port = int(url.rsplit(":", 1)[1])
            silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
            half_reader, half = await asyncio.open_connection("127.0.0.1", port)
            half.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
            body_reader, body = await asyncio.open_connection("127.0.0.1", port)
            body.write(
                b"POST /oidc/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\ngrant"
            )
            try:
                assert await closed_within(silent_reader, 15)
                assert await closed_within(half_reader, 15)
                assert await closed_within(body_reader, 15)
            finally:
                for writer in (silent, half, body):
                    writer.close()


async def test_connections_past_the_ceiling_are_closed_and_the_rest_served(
    op: TestOP, mongo_uri: str
) -> None:
    async with start_gateway(op, mongo_uri) as gw:
        async with limited(gw, max_connections=4, idle_seconds=60) as (url, server):
            port = int(url.rsplit(":", 1)[1])
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            for _ in range(100):  # until the server has taken all four in
                if len(server._connections) == 4:
                    break
                await asyncio.sleep(0.05)
            assert len(server._connections) == 4
            extra_reader, extra = await asyncio.open_connection("127.0.0.1", port)
            extra.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await closed_within(extra_reader, 15)
            assert server.refused_connections >= 1
            extra.close()
            held[0][1].close()
            async with httpx.AsyncClient(timeout=30.0) as client:
                for _ in range(100):  # the server sees the close a moment later
                    try:
                        response = await client.get(f"{url}/healthz")
                        break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.1)
                assert response.status_code == 200
            for _, writer in held[1:]:
                writer.close()


async def test_a_file_limit_below_the_ceiling_fails_at_start_naming_the_key() -> None:
    """In a child whose hard file limit is 512: 1,000 connections cannot fit."""
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))\n"
        "from gateway.serving import ensure_file_limit, FileLimitTooLow\n"
        "print(ensure_file_limit(200))\n"
        "try:\n"
        "    ensure_file_limit(1000)\n"
        "except FileLimitTooLow as exc:\n"
        "    print(exc)\n"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    first, second = done.stdout.splitlines()
    assert first == "456"
    assert second.startswith("listen.max_connections: 1000 needs a file limit of 1256")


def deployed_file_limits() -> tuple[int, int]:
    """(LimitNOFILE of the documented systemd unit, the compose gateway's nofile limit)."""
    root = Path(__file__).resolve().parents[1]
    unit = re.search(r"^LimitNOFILE=(\d+)$", (root / "docs/deploy.md").read_text(), re.M)
    assert unit is not None, "no LimitNOFILE in docs/deploy.md's unit"
    compose = yaml.safe_load((root / "deploy/docker-compose.yml").read_text())
    nofile = compose["services"]["gateway"]["ulimits"]["nofile"]
    return int(unit.group(1)), min(nofile["soft"], nofile["hard"])


async def test_deployments_raise_the_file_limit_above_the_ceiling() -> None:
    """The documented systemd unit and the compose file leave room for the default
    ``listen.max_connections`` (systemd's and Docker's usual soft limit is 1024)."""
    need = Listen().max_connections + 256
    unit, compose = await asyncio.to_thread(deployed_file_limits)
    assert unit >= need and compose >= need
