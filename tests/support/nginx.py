"""Run Debian's real nginx on loopback with a temporary prefix, in front of a gateway.

The site configuration mirrors the Debian jitsi-meet package's layout (config.js alias,
static directories, BOSH and websockets, the room and tenant catch-alls) with the shipped
``deploy/nginx/jitsi-oidc-gateway.conf`` included verbatim. Jitsi's document root is a small
static tree whose files say what they are, so a test can tell who answered.

nginx cannot bind port 0, so a free port is found by binding and closing a socket just
before the start; a start that loses that race is reported as ``PortTaken`` and retried.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SNIPPET = REPO_ROOT / "deploy" / "nginx" / "jitsi-oidc-gateway.conf"

JITSI_FILES = {
    "index.html": "<!doctype html><title>Jitsi Meet</title><p id='jitsi'>JITSI-INDEX</p>\n",
    "config.js": "var config = {}; // JITSI-CONFIG\n",
    "interface_config.js": "var interfaceConfig = {}; // JITSI-INTERFACE-CONFIG\n",
    "libs/app.bundle.min.js": "// JITSI-LIBS\n",
    "libs/external_api.min.js": "// JITSI-EXTERNAL-API\n",
    "css/all.css": "/* JITSI-CSS */\n",
    "images/watermark.svg": "<svg xmlns='http://www.w3.org/2000/svg'><!-- JITSI-IMAGES --></svg>\n",
    "sounds/ring.mp3": "JITSI-SOUNDS\n",
    "lang/main.json": '{"marker": "JITSI-LANG"}\n',
    "static/close.html": "<p>JITSI-STATIC</p>\n",
    "fonts/jitsi.woff": "JITSI-FONTS\n",
}

SITE = """
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
events {{ worker_connections 128; }}
http {{
    types {{
        text/html html; application/javascript js; text/css css; application/json json;
        image/svg+xml svg; audio/mpeg mp3; font/woff woff;
    }}
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    server {{
        listen 127.0.0.1:{port};
        server_name 127.0.0.1;
        root {root};
        index index.html;

        set $jog_gateway http://127.0.0.1:{gateway_port};
        include {snippet};

        # --- the Debian jitsi-meet package's site layout (trimmed) ---
        location = /config.js {{ alias {root}/config.js; }}
        location = /external_api.js {{ alias {root}/libs/external_api.min.js; }}
        location ~ ^/(libs|css|static|images|fonts|lang|sounds|connection_optimization)/(.*)$ {{
            alias {root}/$1/$2;
        }}
        location = /http-bind {{ return 200 "JITSI-BOSH\\n"; }}
        location = /xmpp-websocket {{ return 200 "JITSI-XMPP-WEBSOCKET\\n"; }}
        location ~ ^/colibri-ws/([a-zA-Z0-9-\\.]+)/(.*) {{ return 200 "JITSI-COLIBRI\\n"; }}
        location ~ ^/([^/?&:'"]+)$ {{ try_files $uri @root_path; }}
        location @root_path {{ rewrite ^/(.*)$ / break; }}
        location ~ ^/([^/?&:'"]+)/config.js$ {{ alias {root}/config.js; }}
        location ~ ^/([^/?&:'"]+)/http-bind {{ return 200 "JITSI-BOSH\\n"; }}
        location ~ ^/([^/?&:'"]+)/xmpp-websocket {{ return 200 "JITSI-XMPP-WEBSOCKET\\n"; }}
        location ~ ^/([^/?&:'"]+)/(.*)$ {{ rewrite ^/([^/?&:'"]+)/(.*)$ /$2; }}
    }}
}}
"""

START_TIMEOUT = 10.0


class PortTaken(Exception):
    """Another process bound the chosen port between the probe and nginx's start."""


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("nginx not found: bash scripts/setup.sh --test installs it")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Nginx:
    def __init__(self, port: int, gateway_port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.prefix = Path(tempfile.mkdtemp(prefix="jog-nginx-"))
        self.root = self.prefix / "jitsi"
        self.gateway_port = gateway_port
        self.process: subprocess.Popen[bytes] | None = None

    def write(self) -> Path:
        for name, text in JITSI_FILES.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        (self.prefix / "tmp").mkdir()
        for directory in [self.prefix, *self.prefix.rglob("*")]:
            directory.chmod(0o755 if directory.is_dir() else 0o644)
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            SITE.format(
                user="user root root;" if os.geteuid() == 0 else "",
                prefix=self.prefix,
                port=self.port,
                root=self.root,
                gateway_port=self.gateway_port,
                snippet=SNIPPET,
            ),
            encoding="utf-8",
        )
        return conf

    def start(self) -> Nginx:
        conf = self.write()
        error_log = self.prefix / "error.log"
        cmd = [nginx_binary(), "-p", str(self.prefix), "-c", str(conf), "-e", str(error_log)]
        check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        self.process = subprocess.Popen(
            [*cmd, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = error_log.read_text(errors="replace") if error_log.exists() else ""
                self.process = None
                if "Address already in use" in log:
                    raise PortTaken(log)
                raise RuntimeError(f"nginx exited at start:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""
