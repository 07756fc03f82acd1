"""A Jitsi-side page set for the token-service browser tests, behind Debian's nginx on TLS.

Written for the tests from the protocol Jitsi Meet's own sign-in follows (``static/sso.html``
and ``react/features/authentication/actions.web.ts``, master 2026), not copied from Jitsi:

* ``/meeting.html`` plays the web client's login: a 64-character PKCE verifier in
  ``sessionStorage.code_verifier``, ``tokenAuthUrl`` with ``{state}`` (JSON: room, roomSafe,
  tenant, a ``config.*`` choice, ``refreshToken`` when it has one) and ``{code_challenge}``
  (S256) filled in. Only the popup path (``tokenAuthInline: true``, 500x600) also stores a
  hex nonce in ``sessionStorage.oauth_nonce`` and appends ``&nonce=``; the full-page path
  does neither, as in Jitsi's web client. The popup's ``oauth-success`` message is accepted
  only from its own origin and shown in ``#result``.
* ``/static/sso.html`` takes ``code`` and ``state`` from the query, decodes the state with
  ``JSON.parse(decodeURIComponent(...))``, reads ``config.sso`` (included by SSI from
  ``/config.js``, as Jitsi's page does). With ``refreshToken`` in the state it POSTs
  ``grant_type=refresh_token`` and ignores any code (a nonce mismatch there only warns).
  Otherwise it throws "No PKCE code verifier found in session" / "No OAuth nonce found in
  session" when ``sessionStorage`` lacks them, POSTs ``authorization_code`` (``redirect_uri``
  = its own URL without query, ``client_id``, ``code_verifier``) and checks the ID token's
  ``nonce``. Then it posts ``{type: "oauth-success", accessToken, idToken, refreshToken}`` to
  ``window.opener`` with its own origin as target, or, standing alone, goes to
  ``/<tenant>/<roomSafe>#config.*...&jwt="<token>"``; errors go to the opener as
  ``oauth-error`` or, standing alone, into ``#error``.

The site serves Jitsi and includes the shipped ``deploy/nginx/jitsi-oidc-gateway.conf`` (its
``/oidc/`` proxy and ``/static/sso.html`` locations, and the entry rule) on one origin, over
HTTPS with a certificate made for 127.0.0.1 (``sso.html`` calls ``https://`` literally).
The access log is nginx's default ``combined`` format (query strings and referers
included), so a test can grep it for what a site without Jitsi's redaction would keep.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.nginx import SNIPPET, SNIPPET_ERROR_LOG, free_port, launch_nginx

SITE = """
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
events {{ worker_connections 128; }}
http {{
    types {{ text/html html; application/javascript js; }}
    default_type application/octet-stream;
    access_log {prefix}/access.log combined;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name 127.0.0.1;
        ssl_certificate {prefix}/cert.pem;
        ssl_certificate_key {prefix}/key.pem;
        root {root};
        ssi on;
        location = /config.js {{ alias {root}/config.js; }}
        location ^~ /static/ {{ alias {root}/static/; }}
        set $jog_gateway http://127.0.0.1:{gateway_port};
        include {snippet};
        location = /meeting.html {{ }}
        location ~ ^/([^/?&:'"]+)$ {{ try_files /room.html =404; }}
        location ~ ^/([^/?&:'"]+)/([^/?&:'"]+)$ {{ try_files /room.html =404; }}
    }}
}}
"""

CONFIG_JS = """var config = {{
    sso: {{ tokenService: '{host}/oidc', clientId: 'jitsi-web' }},
    tokenAuthUrl: 'https://{host}/oidc/authorize?client_id=jitsi-web&state={{state}}&code_challenge={{code_challenge}}',
    tokenAuthInline: true
}};
"""

MEETING_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>meeting</title>
<script src="/config.js"></script></head><body>
<pre id="result"></pre>
<script>
const CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
function b64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/=/g, '').replace(/\\+/g, '-').replace(/\\//g, '_');
}
async function tokenAuthUrl(room, tenant, refreshToken) {
  let verifier = '';
  const random = crypto.getRandomValues(new Uint8Array(64));
  for (const r of random) verifier += CHARS.charAt(r % CHARS.length);
  sessionStorage.setItem('code_verifier', verifier);
  const state = { room, roomSafe: room.toLowerCase(), tenant,
    'config.startWithAudioMuted': true };
  if (refreshToken) state.refreshToken = refreshToken;
  const challenge = b64url(await crypto.subtle.digest('SHA-256',
    new TextEncoder().encode(verifier)));
  return config.tokenAuthUrl
    .replace('{state}', encodeURIComponent(JSON.stringify(state)))
    .replace('{code_challenge}', challenge);
}
window.addEventListener('message', (event) => {
  if (event.origin !== window.location.origin) return;
  document.getElementById('result').textContent = JSON.stringify(event.data);
});
async function loginPopup(room, tenant, refreshToken) {
  // Only the popup path makes a nonce (loginWithPopup).
  const nonce = Array.from(crypto.getRandomValues(new Uint8Array(32)),
    b => b.toString(16).padStart(2, '0')).join('');
  sessionStorage.setItem('oauth_nonce', nonce);
  const url = await tokenAuthUrl(room, tenant, refreshToken) + '&nonce=' + nonce;
  window.open(url, 'Auth-' + Date.now(), 'width=500,height=600');
}
async function loginFullPage(room, tenant) {
  window.location.href = await tokenAuthUrl(room, tenant);
}
</script></body></html>
"""

SSO_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>sso</title></head>
<body><p id="status">working</p><p id="error"></p>
<script>
<!--#include virtual="/config.js" -->
function payload(token) {
  const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
  return JSON.parse(atob(part));
}
async function tokenRequest(body) {
  const response = await fetch(`https://${config.sso.tokenService}/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(body)
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error_description || data.error || 'token request failed');
  return data;
}
async function run() {
  const query = new URLSearchParams(window.location.search);
  const state = JSON.parse(decodeURIComponent(query.get('state')));
  let tokens;
  if (state.refreshToken) {
    tokens = await tokenRequest({ grant_type: 'refresh_token',
      refresh_token: state.refreshToken, client_id: config.sso.clientId });
    const nonce = sessionStorage.getItem('oauth_nonce');
    if (nonce && payload(tokens.id_token).nonce !== nonce) {
      console.warn('Nonce validation failed during refresh');
    }
  } else {
    if (query.get('error')) throw new Error(query.get('error_description') || query.get('error'));
    if (!sessionStorage.getItem('code_verifier')) {
      throw new Error('No PKCE code verifier found in session');
    }
    if (!sessionStorage.getItem('oauth_nonce')) throw new Error('No OAuth nonce found in session');
    tokens = await tokenRequest({ grant_type: 'authorization_code', code: query.get('code'),
      redirect_uri: window.location.origin + window.location.pathname,
      client_id: config.sso.clientId,
      code_verifier: sessionStorage.getItem('code_verifier') });
    if (payload(tokens.id_token).nonce !== sessionStorage.getItem('oauth_nonce')) {
      throw new Error('nonce mismatch');
    }
  }
  const message = { type: 'oauth-success', accessToken: tokens.access_token,
    idToken: tokens.id_token, refreshToken: tokens.refresh_token || state.refreshToken };
  if (window.opener) {
    window.opener.postMessage(message, window.location.origin);
    document.getElementById('status').textContent = 'done';
  } else {
    const path = state.tenant ? `/${state.tenant}/${state.roomSafe}` : `/${state.roomSafe}`;
    const hash = new URLSearchParams();
    for (const [key, value] of Object.entries(state)) {
      if (key.startsWith('config.')) hash.append(key, String(value));
    }
    hash.append('jwt', `"${tokens.access_token}"`);
    window.location.href = `${window.location.protocol}//${window.location.host}${path}#${hash}`;
  }
}
run().catch((error) => {
  document.getElementById('error').textContent = error.message;
  if (window.opener) {
    window.opener.postMessage({ type: 'oauth-error', error: error.message },
      window.location.origin);
  }
});
</script></body></html>
"""

# What Jitsi's web client does with config.tokenLogoutUrl when the person logs out.
LOGOUT_FRAME_HTML = """<!doctype html><title>logout</title>
<iframe id="token-logout" src="/oidc/logout/silent" style="display:none"></iframe>
"""

ROOM_HTML = "<!doctype html><title>Jitsi Meet</title><p id='jitsi'>JITSI-ROOM</p>\n"


def _certificate(prefix: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (prefix / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (prefix / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class SsoSite:
    """nginx on https://127.0.0.1:<port>: Jitsi's pages, and /oidc/ proxied to a gateway."""

    def __init__(self, snippet: str | None = None) -> None:
        self.snippet_text = snippet  # None: the shipped file
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.prefix = Path(tempfile.mkdtemp(prefix="jog-sso-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def sso_url(self) -> str:
        return f"{self.url}/static/sso.html"

    def start(self, gateway_port: int) -> SsoSite:
        root = self.prefix / "jitsi"
        (root / "static").mkdir(parents=True)
        (self.prefix / "tmp").mkdir()
        host = f"127.0.0.1:{self.port}"
        (root / "config.js").write_text(CONFIG_JS.format(host=host))
        (root / "meeting.html").write_text(MEETING_HTML)
        (root / "room.html").write_text(ROOM_HTML)
        (root / "static" / "sso.html").write_text(SSO_HTML)
        (root / "static" / "logout-frame.html").write_text(LOGOUT_FRAME_HTML)
        snippet = self.prefix / "jitsi-oidc-gateway.conf"
        text = self.snippet_text if self.snippet_text is not None else SNIPPET.read_text()
        snippet.write_text(text.replace(SNIPPET_ERROR_LOG, str(self.prefix / "error.log")))
        _certificate(self.prefix)
        for path in [self.prefix, *self.prefix.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            SITE.format(
                user="user root root;" if os.geteuid() == 0 else "",
                prefix=self.prefix,
                port=self.port,
                root=root,
                gateway_port=gateway_port,
                snippet=snippet,
            )
        )
        self.process = launch_nginx(self.prefix, conf, self.port)
        return self

    def access_log(self) -> str:
        """nginx's access log so far (nginx writes each line when the request ends)."""
        path = self.prefix / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
        shutil.rmtree(self.prefix, ignore_errors=True)
