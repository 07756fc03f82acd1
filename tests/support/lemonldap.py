"""LemonLDAP::NG's portal (Debian bookworm's 2.16) as a real OpenID Connect provider.

The portal is a PSGI application; it runs here under ``plackup`` on a free loopback port
(no Apache, no FastCGI server: ``llng-fastcgi-server`` refuses to run as root), with its own
configuration in a temporary directory (``LLNG_DEFAULTCONFFILE`` points at an ini file whose
``File`` configuration backend reads ``lmConf-1.json`` there). The configuration starts from
Debian's shipped ``lmConf-1.json`` (the ``Demo`` user backend: ``dwho``/``dwho``,
``rtyler``/``rtyler``, ``msmith``/``msmith``, password = login) with docs/lemonldap.md's
OpenID Connect settings (its JSON block) merged in.

``register_client(redirect_uris)`` points the relying party at the gateway (rewrites the
configuration and restarts the portal, a few seconds), so ``start_gateway(llng, ...)``
works as with the test OP.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEBIAN_CONF = Path("/var/lib/lemonldap-ng/conf/lmConf-1.json")
PORTAL_PSGI = Path("/usr/share/lemonldap-ng/portal/htdocs/index.psgi")
TEMPLATES = Path("/usr/share/lemonldap-ng/portal/templates")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "lemonldap.md"
GATEWAY_PLACEHOLDER = "https://meet.example.com"
PORTAL_PLACEHOLDER = "https://auth.example.com"
START_TIMEOUT = 60.0


def documented_settings() -> dict[str, Any]:
    """docs/lemonldap.md's configuration block (the OpenID Connect keys)."""
    text = DOCS.read_text(encoding="utf-8")
    block = re.findall(r"^```json\n(.*?)^```", text, flags=re.M | re.S)[0]
    return dict(json.loads(block))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LemonLDAP:
    """A running LemonLDAP::NG portal; ``LemonLDAP.start()``, then ``stop()``."""

    __test__ = False

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.issuer = f"http://127.0.0.1:{port}"
        self.client_id = ""
        self.client_secret = ""
        self.process: subprocess.Popen[bytes] | None = None
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        self._public = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    @classmethod
    def start(cls) -> LemonLDAP:
        if not PORTAL_PSGI.exists():
            raise RuntimeError(f"{PORTAL_PSGI} missing: run `bash scripts/setup.sh --test`")
        workdir = Path(tempfile.mkdtemp(prefix="jog-llng-"))
        server = cls(workdir, _free_port())
        try:
            server._configure(GATEWAY_PLACEHOLDER)
            server._run()
        except BaseException:
            server.stop()
            raise
        return server

    def _configure(self, gateway_url: str) -> None:
        base = self.workdir
        for sub in ("conf", "sessions/lock", "psessions/lock", "cache", "notifications"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        conf: dict[str, Any] = json.loads(DEBIAN_CONF.read_text(encoding="utf-8"))
        # Debian's sample applications and self-registration need modules the portal's
        # dependencies do not bring (e-mail sending); the gateway needs neither.
        for key in ("registerDB", "notification", "applicationList", "reloadUrls"):
            conf.pop(key, None)
        documented = json.dumps(documented_settings())
        documented = documented.replace(GATEWAY_PLACEHOLDER, gateway_url)
        documented = documented.replace(PORTAL_PLACEHOLDER, self.issuer)
        settings = json.loads(documented)
        rp = next(iter(settings["oidcRPMetaDataOptions"].values()))
        self.client_id = rp["oidcRPMetaDataOptionsClientID"]
        self.client_secret = rp["oidcRPMetaDataOptionsClientSecret"]
        conf.update(settings)
        conf.update(
            {
                "portal": f"{self.issuer}/",
                "domain": "127.0.0.1",
                "cookieName": "llng_test",  # not the gateway's cookies on 127.0.0.1
                "securedCookie": 0,
                "locationRules": {"127.0.0.1": {"default": "accept"}},
                "exportedHeaders": {},
                "globalStorageOptions": {
                    "Directory": f"{base}/sessions",
                    "LockDirectory": f"{base}/sessions/lock",
                    "generateModule": "Lemonldap::NG::Common::Apache::Session::Generate::SHA256",
                },
                "persistentStorageOptions": {
                    "Directory": f"{base}/psessions",
                    "LockDirectory": f"{base}/psessions/lock",
                },
                "localSessionStorageOptions": {
                    "cache_depth": 3,
                    "cache_root": f"{base}/cache",
                    "default_expires_in": 600,
                    "directory_umask": "007",
                    "namespace": "lemonldap-ng-sessions",
                },
                "oidcServicePrivateKeySig": self._private,
                "oidcServicePublicKeySig": self._public,
            }
        )
        (base / "conf" / "lmConf-1.json").write_text(json.dumps(conf), encoding="utf-8")
        (base / "lemonldap-ng.ini").write_text(
            "[all]\nlogLevel = info\nlogger = Lemonldap::NG::Common::Logger::Std\n"
            f"[configuration]\ntype = File\ndirName = {base}/conf\n"
            f"[portal]\nstaticPrefix = /static\ntemplateDir = {TEMPLATES}\nlanguages = en\n"
            "[handler]\n[manager]\n",
            encoding="utf-8",
        )

    def _run(self) -> None:
        log = open(self.workdir / "portal.log", "ab")
        try:
            self.process = subprocess.Popen(
                [
                    "plackup",
                    "-s",
                    "HTTP::Server::PSGI",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    str(PORTAL_PSGI),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LLNG_DEFAULTCONFFILE": str(self.workdir / "lemonldap-ng.ini")},
                cwd=self.workdir,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"LemonLDAP::NG exited: {self.log()[-2000:]}")
            try:
                response = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=5)
                if response.status_code == 200 and response.json().get("issuer") == self.issuer:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"LemonLDAP::NG did not answer: {self.log()[-2000:]}")
            time.sleep(0.3)

    def _halt(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=10)

    def log(self) -> str:
        try:
            return (self.workdir / "portal.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        self._halt()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def discovery(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(f"{self.issuer}/.well-known/openid-configuration")
        response.raise_for_status()
        return dict(response.json())

    async def register_client(self, redirect_uris: list[str], **_: Any) -> dict[str, Any]:
        """Point the relying party at the gateway of ``redirect_uris[0]`` (restarts the
        portal with the rewritten configuration; its sessions are in files and survive)."""
        gateway_url = redirect_uris[0].split("/oidc/redirect/", 1)[0]

        def restart() -> None:
            self._halt()
            self._configure(gateway_url)
            self._run()

        await asyncio.to_thread(restart)
        return {"client_id": self.client_id, "client_secret": self.client_secret}
