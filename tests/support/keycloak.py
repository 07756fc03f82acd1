"""A real Keycloak server (the Quarkus distribution from Maven Central) for the test suite.

``scripts/setup.sh --test`` unpacks the pinned distribution into a cache directory
(``KEYCLOAK_HOME`` below). ``Keycloak.start()`` copies it into a temporary directory (start-dev
writes its build and its H2 database into the distribution's own tree, so two runs on one
machine must not share one), starts ``kc.sh start-dev`` on a free loopback port and waits for
the realm ``master`` to answer (on a busy 2-core machine 40-120 s). One server per pytest
process: the ``keycloak`` session fixture in ``tests/conftest.py``.

How another test module uses it (reusable on purpose):

- ``realm = await keycloak.import_realm(realm_json)`` creates a realm from a dict (the
  admin REST equivalent of a realm import; ``docs/keycloak.md``'s JSON is what the Keycloak
  tests import, see ``documented_realm()``). Give each module its own realm name.
- ``realm`` (a ``KeycloakRealm``) has ``issuer`` and ``register_client(redirect_uris, ...)``,
  so ``tests.support.gateway.start_gateway(realm, mongo_uri, idp={...})`` works as with the
  test OP: ``register_client`` points the realm's client ``client_id`` (default: the first
  client of the realm JSON) at the new gateway's URL (redirect, post-logout and back-channel
  logout URIs, the JWKS URL of a signed-JWT client) and returns its id and secret.
- ``realm.admin(method, path, json=...)`` calls the admin REST API under
  ``/admin/realms/<realm>`` (add clients, change settings, end sessions, rotate keys).
- ``realm.login_over_http(client, url, user, password)`` walks Keycloak's login form with
  httpx (as ``TestOP.login_over_http``); in Chromium fill ``#username``/``#password`` and
  click ``#kc-login``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

KEYCLOAK_VERSION = "26.7.3"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jitsi-oidc-gateway"
KEYCLOAK_HOME = Path(os.environ.get("JOG_KEYCLOAK_HOME") or CACHE / f"keycloak-{KEYCLOAK_VERSION}")
ADMIN_USER = "admin"
ADMIN_PASSWORD = os.environ.get("JOG_KEYCLOAK_ADMIN_PASSWORD") or "admin-pw-for-tests"
START_TIMEOUT = 420.0  # a first start-dev builds (90 s at load 11), then starts (100-160 s)
MAX_HOPS = 25
GATEWAY_PLACEHOLDER = "https://meet.example.com"  # the gateway URL in docs/keycloak.md
_STARTED: list[Keycloak] = []  # the shared servers this process started
SHARED_INFO = "keycloak.json"  # url, pid and work directory of the run's shared server
DOCS = Path(__file__).resolve().parents[2] / "docs" / "keycloak.md"

_FORM_RE = re.compile(r'<form\b[^>]*\bid="kc-form-login"[^>]*\baction="([^"]*)"', re.I)
_FORM_RE2 = re.compile(r'<form\b[^>]*\baction="([^"]*)"[^>]*\bid="kc-form-login"', re.I)


def documented_blocks(language: str, path: Path = DOCS) -> list[str]:
    """The fenced ``language`` blocks of ``path`` (docs/keycloak.md), in order."""
    text = path.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def documented_realm(name: str | None = None) -> dict[str, Any]:
    """The realm of docs/keycloak.md (its first JSON block), optionally renamed."""
    realm: dict[str, Any] = json.loads(documented_blocks("json")[0])
    if name:
        realm["realm"] = name
    return realm


def _insecure_cookies(client: httpx.AsyncClient) -> None:
    """Keycloak marks its cookies ``Secure`` even over http; Chromium sends them to
    127.0.0.1 (a trustworthy origin), httpx's cookie jar does not. Let httpx send them."""
    for cookie in client.cookies.jar:
        cookie.secure = False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gone(pid: int, wait: float) -> bool:
    """Whether process ``pid`` (not our child) has exited within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _snippet(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def login_form_action(html: str) -> str | None:
    """The action URL of Keycloak's login form (``kc-form-login``), or None."""
    match = _FORM_RE.search(html) or _FORM_RE2.search(html)
    return unescape(match.group(1)) if match else None


class Keycloak:
    """A running Keycloak; ``Keycloak.start()``, then ``stop()``."""

    __test__ = False

    def __init__(
        self, process: subprocess.Popen[bytes] | None, url: str, workdir: Path | None
    ) -> None:
        self.process = process
        self.url = url
        self.workdir = workdir
        self._token: tuple[str, float] | None = None

    @classmethod
    def attach(cls, url: str) -> Keycloak:
        """A handle on a Keycloak that is already running (``stop()`` leaves it running)."""
        return cls(None, url.rstrip("/"), None)

    @classmethod
    def start(cls, home: Path = KEYCLOAK_HOME, timeout: float = START_TIMEOUT) -> Keycloak:
        if not (home / "bin" / "kc.sh").exists():
            raise RuntimeError(f"{home}/bin/kc.sh missing: run `bash scripts/setup.sh --test`")
        workdir = Path(tempfile.mkdtemp(prefix="jog-keycloak-"))
        dist = workdir / "keycloak"
        shutil.copytree(home, dist, symlinks=True, ignore=shutil.ignore_patterns("data"))
        port = _free_port()
        env = {
            **os.environ,
            "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USER,
            "KC_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # A small heap: the machine is shared; the suite's realms are tiny.
            "JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx512m",
        }
        log = open(workdir / "keycloak.log", "wb")
        process = subprocess.Popen(
            [
                str(dist / "bin" / "kc.sh"),
                "start-dev",
                "--http-host=127.0.0.1",
                f"--http-port={port}",
                "--hostname-strict=false",
                "--health-enabled=true",
                # The management interface (health) defaults to the fixed port 9000.
                f"--http-management-port={_free_port()}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            start_new_session=True,
        )
        server = cls(process, f"http://127.0.0.1:{port}", workdir)
        try:
            server._wait_ready(timeout)
        except BaseException:  # a timeout, Ctrl-C or pytest-timeout: never leave Java behind
            log.close()
            exited = process.poll() is not None
            tail = server.log()[-3000:]
            server.stop()
            if exited:
                raise RuntimeError(f"Keycloak exited ({process.returncode}): {tail}") from None
            raise
        log.close()
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"Keycloak exited ({self.process.returncode})")
            try:
                response = httpx.get(
                    f"{self.url}/realms/master/.well-known/openid-configuration", timeout=5
                )
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Keycloak did not answer within {timeout:.0f} s")
            time.sleep(1.0)

    def log(self) -> str:
        if self.workdir is None:
            return ""
        try:
            return (self.workdir / "keycloak.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.workdir is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ one per run

    @classmethod
    def shared(cls, root: Path) -> Keycloak:
        """The run's one Keycloak, for several pytest-xdist workers: the first worker that
        asks starts it (the others wait on a lock, then attach), nobody but
        ``stop_shared`` stops it, which the controlling process calls when every worker is
        done. ``root`` is the directory the run's workers share."""
        with open(root / "keycloak.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            info = root / SHARED_INFO
            if info.exists():
                return cls.attach(json.loads(info.read_text())["url"])
            server = cls.start()
            assert server.process is not None and server.workdir is not None
            state = {"url": server.url, "pid": server.process.pid, "workdir": str(server.workdir)}
            info.write_text(json.dumps(state))
            _STARTED.append(server)  # its Popen outlives the tests (no ResourceWarning)
            return cls.attach(server.url)

    @staticmethod
    def stop_shared(root: Path) -> None:
        """Stop the Keycloak ``shared`` started under ``root``, if any (its own session)."""
        info = root / SHARED_INFO
        if not info.exists():
            return
        state = json.loads(info.read_text())
        info.unlink()
        for signal, wait in ((15, 30.0), (9, 10.0)):  # TERM, then KILL if it hangs
            try:
                os.killpg(state["pid"], signal)
            except ProcessLookupError:
                break
            if _gone(state["pid"], wait):
                break
        shutil.rmtree(state["workdir"], ignore_errors=True)

    # ------------------------------------------------------------------ admin REST

    async def admin_token(self) -> str:
        if self._token and self._token[1] > time.monotonic() + 10:
            return self._token[0]
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{self.url}/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": ADMIN_USER,
                    "password": ADMIN_PASSWORD,
                },
            )
        response.raise_for_status()
        body = response.json()
        self._token = (body["access_token"], time.monotonic() + float(body["expires_in"]))
        return self._token[0]

    async def admin(
        self, method: str, path: str, expect: tuple[int, ...] = (200, 201, 204), **kwargs: Any
    ) -> httpx.Response:
        """``method`` on ``<url>/admin/realms<path>`` with an admin token; asserts the status."""
        headers = {"Authorization": f"Bearer {await self.admin_token()}"}
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.request(
                method, f"{self.url}/admin/realms{path}", headers=headers, **kwargs
            )
        if response.status_code not in expect:
            raise AssertionError(
                f"Keycloak admin {method} {path}: {response.status_code} {_snippet(response.text)}"
            )
        return response

    async def import_realm(self, realm: dict[str, Any]) -> KeycloakRealm:
        """Create ``realm`` (a realm representation, as a realm export/import file holds)."""
        await self.admin("POST", "", json=realm)
        return KeycloakRealm(self, realm)


class KeycloakRealm:
    """One realm; quacks like ``TestOP`` where ``start_gateway`` needs it."""

    __test__ = False

    def __init__(self, server: Keycloak, representation: dict[str, Any]) -> None:
        self.server = server
        self.name: str = representation["realm"]
        self.representation = representation
        self.issuer = f"{server.url}/realms/{self.name}"
        clients = representation.get("clients") or [{}]
        self.client_id: str | None = clients[0].get("clientId")

    async def admin(self, method: str, path: str = "", **kwargs: Any) -> httpx.Response:
        return await self.server.admin(method, f"/{self.name}{path}", **kwargs)

    async def client_uuid(self, client_id: str) -> str:
        found = (await self.admin("GET", "/clients", params={"clientId": client_id})).json()
        if not found:
            raise AssertionError(f"no client {client_id!r} in realm {self.name}")
        return str(found[0]["id"])

    async def user_id(self, username: str) -> str:
        found = (
            await self.admin("GET", "/users", params={"username": username, "exact": "true"})
        ).json()
        if not found:
            raise AssertionError(f"no user {username!r} in realm {self.name}")
        return str(found[0]["id"])

    async def discovery(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(f"{self.issuer}/.well-known/openid-configuration")
        response.raise_for_status()
        return dict(response.json())

    async def register_client(
        self,
        redirect_uris: list[str],
        token_endpoint_auth_method: str = "client_secret_basic",
        client_secret: str | None = None,
        client_id: str | None = None,
        **metadata: Any,
    ) -> dict[str, Any]:
        """Point the realm's client at the gateway whose redirect URI is ``redirect_uris[0]``:
        every ``GATEWAY_PLACEHOLDER`` in the client's imported settings becomes that gateway's
        URL. Returns ``client_id``, ``client_secret`` and ``token_endpoint_auth_method``."""
        client_id = client_id or self.client_id
        imported = next(
            c for c in self.representation.get("clients", []) if c["clientId"] == client_id
        )
        gateway_url = redirect_uris[0].split("/oidc/redirect/", 1)[0]
        updated = json.loads(json.dumps(imported).replace(GATEWAY_PLACEHOLDER, gateway_url))
        uuid = await self.client_uuid(client_id)
        await self.admin("PUT", f"/clients/{uuid}", json=updated)
        secret = (await self.admin("GET", f"/clients/{uuid}/client-secret")).json().get("value")
        if imported.get("clientAuthenticatorType") == "client-jwt":
            method = "private_key_jwt"
        else:
            method = token_endpoint_auth_method
        return {
            "client_id": client_id,
            "client_secret": secret,
            "token_endpoint_auth_method": method,
        }

    async def login_over_http(
        self, client: httpx.AsyncClient, authorization_url: str, username: str, password: str
    ) -> str:
        """Walk Keycloak's redirects and login form; the first URL that leaves Keycloak (the
        gateway's callback with code, state and iss, not requested). ``client`` keeps
        cookies and does not follow redirects."""
        origin = urlsplit(self.issuer)[:2]
        url = authorization_url
        response = await self._get(client, url)
        posted = False
        for _ in range(MAX_HOPS):
            if response.is_redirect:
                location = urljoin(url, response.headers["location"])
                if urlsplit(location)[:2] != origin:
                    return location
                url = location
                response = await self._get(client, url)
                continue
            action = login_form_action(response.text) if response.status_code == 200 else None
            if action is None or posted:
                raise AssertionError(
                    f"login as {username!r} stopped at {url}: {response.status_code} "
                    f"{_snippet(response.text)}"
                )
            posted = True
            url = urljoin(url, action)
            response = await client.post(
                url, data={"username": username, "password": password, "credentialId": ""}
            )
            _insecure_cookies(client)
        raise AssertionError(f"more than {MAX_HOPS} hops at Keycloak")

    @staticmethod
    async def _get(client: httpx.AsyncClient, url: str) -> httpx.Response:
        response = await client.get(url)
        _insecure_cookies(client)
        return response

    async def active_rsa_kids(self) -> list[str]:
        keys = (await self.admin("GET", "/keys")).json()["keys"]
        return [
            k["kid"]
            for k in keys
            if k.get("algorithm") == "RS256"
            and k.get("status") == "ACTIVE"
            and k.get("use") == "SIG"
        ]

    async def rotate_rsa_key(self, priority: int) -> str:
        """Add an RS256 key provider with ``priority`` (higher wins: the new signing key) and
        disable every other RS256 provider; returns the new key's kid."""
        realm_id = (await self.admin("GET")).json()["id"]
        components = (
            await self.admin("GET", "/components", params={"type": "org.keycloak.keys.KeyProvider"})
        ).json()
        old = [c for c in components if c["providerId"] in ("rsa-generated", "rsa")]
        old = [c for c in old if (c["config"].get("algorithm") or ["RS256"])[0] == "RS256"]
        name = f"rsa-rotated-{priority}"
        await self.admin(
            "POST",
            "/components",
            json={
                "name": name,
                "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider",
                "parentId": realm_id,
                "config": {
                    "priority": [str(priority)],
                    "enabled": ["true"],
                    "active": ["true"],
                    "algorithm": ["RS256"],
                    "keySize": ["2048"],
                },
            },
        )
        for component in old:
            component["config"]["enabled"] = ["false"]
            component["config"]["active"] = ["false"]
            await self.admin("PUT", f"/components/{component['id']}", json=component)
        keys = (await self.admin("GET", "/keys")).json()
        return str(keys["active"]["RS256"])
