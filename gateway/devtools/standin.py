"""A small page standing in for Jitsi Meet, for the demo and the browser tests.

It plays both parts a real deployment has: nginx's entry rule (a room request without
``jwt`` and without the flag parameter is sent to the gateway's ``/oidc/auth``) and the Jitsi
page, which here shows the room and the decoded token after checking its signature the way
Prosody would. ``/`` is a start page (Jitsi's welcome page stands there in a deployment), so
the gateway's "Back to meetings" link leads somewhere. With fragment delivery the token is
not sent to a server: the page only says so. The room page signs out the way Jitsi's web
client does when a person logs out in the meeting: it loads ``tokenLogoutUrl`` (the gateway's
``/oidc/logout/silent``) in a hidden iframe; a second link is the full sign-out
(``/oidc/logout``, also at the IdP).
"""

from __future__ import annotations

import json
from typing import Any

import jwt
import tornado.web

from gateway.config import Jitsi
from gateway.rooms import room_link

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Jitsi stand-in: {room}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}}
pre{{background:#f3f3f3;padding:1rem;overflow:auto}}</style></head>
<body><h1 id="room">Room: {room}</h1><p id="status">{status}</p>
<p><button id="signout" type="button">Sign out</button>
(as Jitsi does with <code>tokenLogoutUrl</code>: the gateway session ends, the IdP's stays)
&middot; <a id="signout-everywhere" href="{gateway}/oidc/logout">Sign out everywhere</a>
(also at the IdP)</p><p id="signout-status"></p>
<h2>Decoded Jitsi token</h2><pre id="claims">{claims}</pre>
<script>
document.getElementById('signout').addEventListener('click', () => {{
  const frame = document.createElement('iframe');
  frame.style.display = 'none';
  frame.addEventListener('load', () => {{
    document.getElementById('signout-status').textContent =
      'Signed out of the gateway: the next room asks the IdP again.';
  }});
  frame.src = {logout_url};
  document.body.appendChild(frame);
}});
</script></body></html>"""

START = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Jitsi stand-in</title></head><body><h1 id="welcome">Meetings</h1>
<p>This page stands in for Jitsi Meet's welcome page.</p>
<ul><li><a href="/standup">Join standup</a></li><li><a href="/retro">Join retro</a></li></ul>
</body></html>"""


class StartHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write(START)


class RoomHandler(tornado.web.RequestHandler):
    def initialize(self, gateway_url: str, jitsi: Jitsi, flag: str) -> None:
        self.gateway_url = gateway_url
        self.jitsi = jitsi
        self.flag = flag

    def get(self, tenant: str | None, room: str) -> None:
        token = self.get_query_argument("jwt", None)
        flagged = self.get_query_argument(self.flag, None) is not None
        if token is None and not flagged:  # nginx's entry rule: no token, no flag
            self.redirect(room_link(f"{self.gateway_url}/oidc/auth", room, tenant))
            return
        if token is None:
            status, claims = "token in the URL fragment (read by Jitsi's web client)", {}
        else:
            status, claims = self.check(token)
        self.set_header("Cache-Control", "no-store")
        self.write(
            PAGE.format(
                gateway=tornado.escape.xhtml_escape(self.gateway_url),
                logout_url=json.dumps(f"{self.gateway_url}/oidc/logout/silent").replace(
                    "<", "\\u003c"
                ),
                room=tornado.escape.xhtml_escape(room),
                status=tornado.escape.xhtml_escape(status),
                claims=tornado.escape.xhtml_escape(json.dumps(claims, indent=2, sort_keys=True)),
            )
        )

    def check(self, token: str) -> tuple[str, dict[str, Any]]:
        key: Any
        if self.jitsi.algorithm == "HS256" and self.jitsi.app_secret is not None:
            key = self.jitsi.app_secret.get_secret_value()
        else:
            return "signature not checked (RS256)", jwt.decode(
                token, options={"verify_signature": False}
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.jitsi.algorithm],
                audience=self.jitsi.audience,
                issuer=self.jitsi.app_id,
            )
        except jwt.InvalidTokenError as exc:
            return f"token rejected: {type(exc).__name__}", {}
        return "token accepted", claims


def make_standin(gateway_url: str, jitsi: Jitsi, flag: str = "oidc") -> tornado.web.Application:
    deps = {"gateway_url": gateway_url.rstrip("/"), "jitsi": jitsi, "flag": flag}
    return tornado.web.Application(
        [
            (r"/", StartHandler),
            (r"/(?:([A-Za-z0-9_-]+)/)?([A-Za-z0-9_~-]+)", RoomHandler, deps),
        ]
    )
