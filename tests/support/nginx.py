"""Run Debian's real nginx on loopback with a temporary prefix, in front of a gateway.

The site reproduces the facts of Debian's jitsi-meet site (doc/debian/jitsi-meet/
jitsi-meet.example, master 2026) that matter to the entry rule, written for the tests:
``ssi on`` server-wide and an ``index.html`` that pulls parts in with SSI; ``config.js``,
``interface_config.js``, ``external_api.js``, ``manifest.json``, ``pwa-worker.js`` and the
static directories; BOSH, websockets, ``/colibri-ws/``, ``/conference-request/v1``,
``/_api/room-info``, ``/_api/public/``, ``/_unlock``, ``/.well-known/``; the tenant forms
Jitsi rewrites (``/<tenant>/config.js`` and friends); the room catch-all and the tenant
regex with its rewrite; the ``$loggable_uri`` / ``$loggable_referer`` maps that redact
room query strings in the access log; and the JaaS include directory whose
``location = /jaas-jwt`` is fetched by an SSI subrequest. The shipped
``deploy/nginx/jitsi-oidc-gateway.conf`` is included unchanged except for the one path
its comment says to adapt (the error log). Jitsi's document root is a small static tree
whose files say what they are, so a test can tell who answered.

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
SNIPPET_ERROR_LOG = "/var/log/nginx/error.log"

JITSI_FILES = {
    "index.html": (
        '<!doctype html><title>Jitsi Meet</title><!--#include virtual="/title.html" -->'
        "<p id='jitsi'>JITSI-INDEX</p>\n"
    ),
    "title.html": "<meta name='marker' content='JITSI-SSI-TITLE'>",
    "index-jaas.html": (
        "<!doctype html><title>Jitsi Meet (JaaS)</title><p id='jitsi'>JITSI-INDEX</p>"
        '<script>const jaasJwt = <!--#include virtual="/jaas-jwt" -->;</script>\n'
    ),
    "config.js": "var config = {}; // JITSI-CONFIG\n",
    "interface_config.js": "var interfaceConfig = {}; // JITSI-INTERFACE-CONFIG\n",
    "manifest.json": '{"marker": "JITSI-MANIFEST"}\n',
    "pwa-worker.js": "// JITSI-PWA-WORKER\n",
    "libs/app.bundle.min.js": "// JITSI-LIBS\n",
    "libs/external_api.min.js": "// JITSI-EXTERNAL-API\n",
    "css/all.css": "/* JITSI-CSS */\n",
    "images/watermark.svg": "<svg xmlns='http://www.w3.org/2000/svg'><!-- JITSI-IMAGES --></svg>\n",
    "sounds/ring.mp3": "JITSI-SOUNDS\n",
    "lang/main.json": '{"marker": "JITSI-LANG"}\n',
    "static/close.html": "<p>JITSI-STATIC</p>\n",
    "fonts/jitsi.woff": "JITSI-FONTS\n",
    ".well-known/assetlinks.json": '{"marker": "JITSI-WELL-KNOWN"}\n',
}

JAAS_CONF = """
location = /jaas-jwt {{
    default_type application/json;
    return 200 '"JAAS-JWT-FROM-JITSI"';
}}
"""

SITE = """
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 128; }}
http {{
    types {{
        text/html html; application/javascript js; text/css css; application/json json;
        image/svg+xml svg; audio/mpeg mp3; font/woff woff;
    }}
    default_type application/octet-stream;
    # Jitsi's site: room query strings are redacted in the access log.
    map $request_uri $loggable_uri {{
        default $request_uri;
        ~^(?<jog_p>/[^/?]+(?:/[^/?]+)?)\\?.*$ "$jog_p?[params_redacted]";
    }}
    map $http_referer $loggable_referer {{
        default $http_referer;
        ~^(?<jog_r>[^?]+)\\?.*$ "$jog_r?[params_redacted]";
    }}
    log_format jitsi_log '$remote_addr "$request_method $loggable_uri" $status "$loggable_referer"';
    access_log {prefix}/access.log jitsi_log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    server {{
        listen 127.0.0.1:{port};
        server_name 127.0.0.1;
        root {root};
        index {index};
        ssi on;
        ssi_types application/x-javascript application/javascript;

        set $jog_gateway http://127.0.0.1:{gateway_port};
        include {snippet};
        include {jaas_dir}/*.conf;

        # --- Jitsi's site layout (the parts that decide what is a room) ---
        location = /config.js {{ alias {root}/config.js; }}
        location = /external_api.js {{ alias {root}/libs/external_api.min.js; }}
        location = /manifest.json {{ alias {root}/manifest.json; }}
        location = /pwa-worker.js {{ alias {root}/pwa-worker.js; }}
        location ~ ^/(libs|css|static|images|fonts|lang|sounds|\\.well-known)/(.*)$ {{
            alias {root}/$1/$2;
        }}
        location = /http-bind {{ return 200 "JITSI-BOSH\n"; }}
        location = /xmpp-websocket {{ return 200 "JITSI-XMPP-WEBSOCKET\n"; }}
        location ~ ^/colibri-ws/([a-zA-Z0-9-\\.]+)/(.*) {{ return 200 "JITSI-COLIBRI\n"; }}
        location = /conference-request/v1 {{ return 200 "JITSI-CONFERENCE-REQUEST\n"; }}
        location = /_api/room-info {{ return 200 "JITSI-ROOM-INFO\n"; }}
        location ~ ^/_api/public/(.*)$ {{ return 200 "JITSI-API-PUBLIC\n"; }}
        location = /_unlock {{ return 200 "JITSI-UNLOCK\n"; }}
        location ~ ^/([^/?&:'"]+)$ {{ try_files $uri @root_path; }}
        location @root_path {{ rewrite ^/(.*)$ / break; }}
        location ~ ^/([^/?&:'"]+)/config.js$ {{ alias {root}/config.js; }}
        location ~ ^/([^/?&:'"]+)/(pwa-worker.js|manifest.json)$ {{ alias {root}/$2; }}
        location ~ ^/([^/?&:'"]+)/http-bind {{ return 200 "JITSI-BOSH\n"; }}
        location ~ ^/([^/?&:'"]+)/xmpp-websocket {{ return 200 "JITSI-XMPP-WEBSOCKET\n"; }}
        location ~ ^/([^/?&:'"]+)/conference-request/v1$ {{
            return 200 "JITSI-CONFERENCE-REQUEST\n";
        }}
        location ~ ^/([^/?&:'"]+)/_api/room-info$ {{ return 200 "JITSI-ROOM-INFO\n"; }}
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


def launch_nginx(prefix: Path, conf: Path, port: int) -> subprocess.Popen[bytes]:
    """``nginx -t``, then nginx in the foreground until it listens on ``port``.
    ``PortTaken`` when another process won the port; RuntimeError with its log otherwise."""
    error_log = prefix / "error.log"
    cmd = [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-e", str(error_log)]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
    process = subprocess.Popen(
        [*cmd, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = error_log.read_text(errors="replace") if error_log.exists() else ""
            if "Address already in use" in log:
                raise PortTaken(log)
            raise RuntimeError(f"nginx exited at start:\n{log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.terminate()
    process.wait(10)
    raise RuntimeError("nginx did not start listening in time")


class Nginx:
    def __init__(
        self, port: int, gateway_port: int, *, jaas: bool = False, snippet: str | None = None
    ) -> None:
        self.jaas = jaas  # after Jitsi's move-to-jaas.sh: index-jaas.html and /jaas-jwt
        self.snippet_text = snippet  # None: the shipped file
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
        jaas_dir = self.prefix / "jaas"
        jaas_dir.mkdir()
        if self.jaas:
            (jaas_dir / "jaas.conf").write_text(JAAS_CONF.format(), encoding="utf-8")
        # The shipped snippet, with its error-log path pointed at this prefix's.
        text = self.snippet_text if self.snippet_text is not None else SNIPPET.read_text()
        snippet = self.prefix / "jitsi-oidc-gateway.conf"
        snippet.write_text(
            text.replace(SNIPPET_ERROR_LOG, str(self.prefix / "error.log")), encoding="utf-8"
        )
        for directory in [self.prefix, *self.prefix.rglob("*")]:
            directory.chmod(0o755 if directory.is_dir() else 0o644)
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            SITE.format(
                user="user root root;" if os.geteuid() == 0 else "",
                prefix=self.prefix,
                port=self.port,
                root=self.root,
                index="index-jaas.html" if self.jaas else "index.html",
                gateway_port=self.gateway_port,
                snippet=snippet,
                jaas_dir=jaas_dir,
            ),
            encoding="utf-8",
        )
        return conf

    def start(self) -> Nginx:
        self.process = launch_nginx(self.prefix, self.write(), self.port)
        return self

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
