"""Python handle on the test OpenID Provider in ``tests/op/server.mjs`` (oidc-provider 9)."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urljoin, urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]  # gateway/devtools/op.py
OP_DIR = REPO_ROOT / "tests" / "op"
NODE = OP_DIR / "node_modules" / ".bin" / "node"
SERVER = OP_DIR / "server.mjs"

START_TIMEOUT = 30.0
MAX_HOPS = 25

_FORM_RE = re.compile(r'<form\b[^>]*\baction="([^"]*)"', re.IGNORECASE)
_XSRF_RE = re.compile(r'name="xsrf" value="([^"]*)"')


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _snippet(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


class TestOP:
    """A running test OP process; use ``TestOP.start(...)`` or ``with TestOP.start(...)``."""

    __test__ = False  # not a pytest test class

    def __init__(self, process: subprocess.Popen[str], issuer: str, workdir: Path) -> None:
        self.process = process
        self.issuer = issuer
        self._workdir = workdir
        self._discovery: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        accounts: list[dict[str, Any]],
        claims: dict[str, list[str]] | None = None,
        host: str = "127.0.0.1",
        ttl: dict[str, int] | None = None,
        issuer_path: str | None = None,
        discovery_issuer: str | None = None,
        par: str | None = None,
    ) -> TestOP:
        """Spawn the OP on a free port and wait (up to 30 s) for its issuer line."""
        if not NODE.exists():
            raise RuntimeError(f"{NODE} missing: run `npm ci` in {OP_DIR}")
        workdir = Path(tempfile.mkdtemp(prefix="test-op-"))
        config: dict[str, Any] = {"host": host, "port": 0, "accounts": accounts}
        if claims is not None:
            config["claims"] = claims
        if ttl is not None:
            config["ttl"] = ttl
        if issuer_path is not None:
            config["issuer_path"] = issuer_path
        if discovery_issuer is not None:
            config["discovery_issuer"] = discovery_issuer
        if par is not None:  # "required" | "off" (default: offered, not required)
            config["par"] = par
        config_path = workdir / "config.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        stderr_path = workdir / "stderr.log"
        with stderr_path.open("w", encoding="utf-8") as stderr_file:
            process = subprocess.Popen(
                [str(NODE), str(SERVER), str(config_path)],
                cwd=OP_DIR,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                text=True,
                env={**os.environ, "NODE_ENV": "test"},
            )
        assert process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(
            target=lambda: lines.put(process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        op = cls(process, "", workdir)
        try:
            line = lines.get(timeout=START_TIMEOUT)
            issuer = json.loads(line)["issuer"]
        except (queue.Empty, ValueError, KeyError, TypeError) as exc:
            op._terminate()
            stderr = op.stderr()
            op.stop()
            raise RuntimeError(
                f"test OP did not start (exit code {process.returncode}): {stderr or '<no stderr>'}"
            ) from exc
        reader.join(timeout=1)
        op.issuer = issuer
        return op

    def _terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        """Terminate the OP process, wait for it and remove its temporary files."""
        self._terminate()
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def stderr(self) -> str:
        """What the OP has written to stderr so far."""
        try:
            return (self._workdir / "stderr.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @classmethod
    def attach(cls, issuer: str) -> TestOP:
        """A handle on a test OP started by someone else (the demo): HTTP helpers only."""
        op = cls.__new__(cls)
        op.process = None  # type: ignore[assignment]
        op.issuer = issuer
        op._workdir = Path(tempfile.gettempdir())
        op._discovery = None
        return op

    # ------------------------------------------------------------------ HTTP helpers

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=10.0)

    async def discovery(self) -> dict[str, Any]:
        """The OP's discovery document (cached)."""
        if self._discovery is None:
            async with self._client() as client:
                response = await client.get(f"{self.issuer}/.well-known/openid-configuration")
                response.raise_for_status()
                self._discovery = response.json()
        return self._discovery

    async def register_client(
        self,
        redirect_uris: list[str],
        token_endpoint_auth_method: str = "client_secret_basic",
        client_secret: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Register a client dynamically (RFC 7591); ``client_secret`` is used verbatim."""
        body: dict[str, Any] = {
            "redirect_uris": redirect_uris,
            "token_endpoint_auth_method": token_endpoint_auth_method,
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            **extra,
        }
        if client_secret is not None:
            body["client_secret"] = client_secret
        endpoint = (await self.discovery())["registration_endpoint"]
        async with self._client() as client:
            response = await client.post(endpoint, json=body)
        if response.status_code != 201:
            raise AssertionError(
                f"client registration failed: {response.status_code} {_snippet(response.text)}"
            )
        return response.json()

    async def rotate_keys(self) -> str:
        """Switch ID token signing to a new RS256 key (old keys stay in the JWKS); new kid."""
        async with self._client() as client:
            response = await client.post(f"{self.issuer}/__test/rotate")
            response.raise_for_status()
            return response.json()["kid"]

    async def sign(self, claims: dict[str, Any], **header: Any) -> str:
        """A JWS over ``claims`` signed with the OP's current key (header overrides allowed)."""
        async with self._client() as client:
            response = await client.post(
                f"{self.issuer}/__test/sign", json={"claims": claims, "header": header}
            )
            response.raise_for_status()
            return response.json()["token"]

    async def pad_next_token_response(self, nbytes: int) -> None:
        """Make the next token response ``nbytes`` larger (a huge answer from the IdP)."""
        await self._control("/__test/pad", {"bytes": nbytes})

    async def delay_next_token_response(self, milliseconds: int) -> None:
        """Hold the next token response (a slow IdP; a request kept in flight)."""
        await self._control("/__test/delay", {"ms": milliseconds})

    async def _control(self, path: str, body: dict[str, Any]) -> None:
        async with self._client() as client:
            response = await client.post(f"{self.issuer}{path}", json=body)
            response.raise_for_status()

    async def set_account_disabled(self, sub: str, disabled: bool = True) -> None:
        """Disable (or enable again) an account: refreshes get invalid_grant, logins fail."""
        await self._control("/__test/account", {"sub": sub, "disabled": disabled})

    async def revoke_grants(self, sub: str) -> None:
        """Revoke every grant of the account, and the refresh tokens issued under them."""
        await self._control("/__test/revoke", {"sub": sub})

    async def token_outage(self, status: int) -> None:
        """Make the token endpoint answer ``status`` (0: answer normally again)."""
        await self._control("/__test/token-outage", {"status": status})

    async def pushed_requests(self) -> dict[str, Any]:
        """How many pushed authorization requests the OP accepted, and the last one's
        parameters and client authentication method."""
        async with self._client() as client:
            response = await client.get(f"{self.issuer}/__test/pushed")
            response.raise_for_status()
            return response.json()

    async def tamper_next_id_token(self, mode: str) -> None:
        """Corrupt the next token response's id_token: signature|payload|alg_none|drop."""
        async with self._client() as client:
            response = await client.post(f"{self.issuer}/__test/tamper", json={"mode": mode})
            response.raise_for_status()

    async def login_over_http(
        self,
        client: httpx.AsyncClient,
        authorization_url: str,
        username: str,
        password: str,
    ) -> str:
        """Walk the OP's redirects and login form; return the first URL leaving the OP.

        ``client`` must keep cookies and not follow redirects. The returned URL (the
        client's redirect_uri with code, state and iss) is not requested.
        """
        op_origin = _origin(self.issuer)
        url = authorization_url
        response = await client.get(url)
        posted = False
        for _ in range(MAX_HOPS):
            if response.is_redirect:
                location = urljoin(url, response.headers["location"])
                if _origin(location) != op_origin:
                    return location
                url = location
                response = await client.get(url)
                continue
            match = _FORM_RE.search(response.text) if response.status_code == 200 else None
            if match and 'id="username"' in response.text:
                if posted:
                    raise AssertionError(
                        f"login as {username!r} rejected at {url}: {_snippet(response.text)}"
                    )
                posted = True
                url = urljoin(url, match.group(1))
                response = await client.post(url, data={"username": username, "password": password})
                continue
            break
        raise AssertionError(
            f"login flow ended unexpectedly: status {response.status_code} at {url}: "
            f"{_snippet(response.text)}"
        )

    async def logout_over_http(self, client: httpx.AsyncClient, end_session_url: str) -> str:
        """Open the OP's end-session URL, confirm "Yes, sign me out"; return the redirect.

        Returns the absolute URL of the first redirect leaving the OP (the
        post_logout_redirect_uri with state) or, without one, the OP's own success page.
        """
        op_origin = _origin(self.issuer)
        url = end_session_url
        response = await client.get(url)
        confirmed = False
        for _ in range(MAX_HOPS):
            if response.is_redirect:
                location = urljoin(url, response.headers["location"])
                if _origin(location) != op_origin:
                    return location
                url = location
                response = await client.get(url)
                continue
            form = _FORM_RE.search(response.text) if response.status_code == 200 else None
            xsrf = _XSRF_RE.search(response.text)
            if form and xsrf and not confirmed:
                confirmed = True
                url = urljoin(url, form.group(1))
                response = await client.post(url, data={"xsrf": xsrf.group(1), "logout": "yes"})
                continue
            if confirmed and response.status_code == 200:
                return url
            break
        raise AssertionError(
            f"logout flow ended unexpectedly: status {response.status_code} at {url}: "
            f"{_snippet(response.text)}"
        )
