"""The README's demo command works: ``jitsi-oidc-gateway demo`` from start to a decoded token."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urljoin

import httpx
import pytest

from gateway.devtools.demo import DEMO_CLIENT_NAME
from gateway.devtools.op import TestOP


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo() -> Iterator[tuple[str, str]]:
    port, jitsi_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--port",
            str(port),
            "--jitsi-port",
            str(jitsi_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    opened = None
    seen = []
    while time.monotonic() < deadline and opened is None:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(r"Open (http://\S+)", line)
        opened = match.group(1) if match else None
    try:
        assert opened, "demo did not start:\n" + "".join(seen)
        yield opened, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)
        proc.stdout.close()


@pytest.mark.asyncio
async def test_demo_signs_in_and_shows_the_token(demo: tuple[str, str]) -> None:
    room_url, gateway_url = demo
    async with httpx.AsyncClient(follow_redirects=False, timeout=15) as browser:
        entry = await browser.get(room_url)  # the stand-in plays nginx's entry rule
        auth = await browser.get(entry.headers["location"])
        authorize = auth.headers["location"]
        op = TestOP.attach(authorize.split("/auth?")[0])
        async with httpx.AsyncClient(follow_redirects=True, timeout=15) as look:
            login = await look.get(authorize)  # the OP names the demo, not a random id
        assert f"Signing in to <strong>{DEMO_CLIENT_NAME}</strong>" in login.text
        callback = await op.login_over_http(browser, authorize, "alice", "alice")
        jitsi = await browser.get(callback)  # signs in and mints at once
        page = await browser.get(jitsi.headers["location"])
    assert page.status_code == 200
    assert "token accepted" in page.text
    assert "Alice Demo" in page.text and "&quot;room&quot;: &quot;standup&quot;" in page.text

    # Sign out: the demo's OP knows the post-logout URI, so both sessions end.
    async with httpx.AsyncClient(follow_redirects=False, timeout=15) as same_browser:
        same_browser.cookies = browser.cookies
        confirm = await same_browser.get(f"{gateway_url}/oidc/logout")
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', confirm.text)
        assert csrf, confirm.text
        ended = await same_browser.post(f"{gateway_url}/oidc/logout", data={"csrf": csrf.group(1)})
        assert ended.status_code == 303
        landed = await op.logout_over_http(same_browser, ended.headers["location"])
        assert landed.startswith(f"{gateway_url}/oidc/logged-out?")
        logged_out = await same_browser.get(landed)
        assert 'id="idp-ended"' in logged_out.text
        start = await same_browser.get(room_url.rsplit("/", 1)[0] + "/")
        assert start.status_code == 200 and 'id="welcome"' in start.text
        # The next room goes through the OP's login page again.
        entry = await same_browser.get(room_url.rsplit("/", 1)[0] + "/retro")
        auth = await same_browser.get(entry.headers["location"])
        at_op = await same_browser.get(auth.headers["location"])
        while at_op.is_redirect and at_op.headers["location"].startswith(("/", op.issuer)):
            at_op = await same_browser.get(urljoin(op.issuer, at_op.headers["location"]))
        assert 'id="username"' in at_op.text
