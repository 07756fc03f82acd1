"""How the Jitsi token is handed to the room: ``?jwt=`` (default) or ``#jwt=``, in the web
page or, when Jitsi's mobile or desktop app started the sign-in, in the app.

Written the way Jitsi Meet's web client reads it (``parseJWTFromURLParams``): the fragment
first, each hash value JSON-parsed (Jitsi itself writes ``#jwt="<token>"``, so the token is
written as a JSON string, percent-encoded), then the query, whose value Jitsi takes as it
stands, without percent-decoding (so the token goes there verbatim; a JWS in compact form
is base64url and dots only, which needs no encoding). The room URL's ``config.*``,
``interfaceConfig.*`` and ``iceServers.*`` overrides that Jitsi put in ``{state}`` go back
into the hash the same way (key verbatim, value as percent-encoded JSON), in both modes.

In fragment mode the token never reaches a server log or a proxy (browsers do not send the
fragment). The room URL then carries the flag parameter (``?oidc=1``) instead, which tells
nginx's entry rule that this request has been through the gateway, so it is served by Jitsi
rather than sent back here.

The apps get the same URL under their own scheme (``org.jitsi.meet://host/room?jwt=...``;
Android as an ``intent://...#Intent;scheme=...;package=...;end`` URI, whose data URI keeps
the hash), from the operator's ``delivery.apps`` settings, never from request input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from gateway.config import Apps, Delivery

COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def hash_value(value: object) -> str:
    """One hash parameter's value as Jitsi's ``parseURLParams`` reads it back: JSON, encoded."""
    return quote(json.dumps(value, separators=(",", ":"), ensure_ascii=False), safe="")


def deliver(
    delivery: Delivery,
    room_page: str,
    token: str,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """The room page (``<base>/[<tenant>/]<room>``) with the token in the configured place
    and the overrides (keys already checked by ``jitsi_state``) in the hash."""
    if not COMPACT_JWS.fullmatch(token):
        raise ValueError("a Jitsi token must be a JWS in compact serialization")
    hash_params = [f"{key}={hash_value(value)}" for key, value in (overrides or {}).items()]
    if delivery.mode == "query":
        url = f"{room_page}?jwt={token}"
    else:
        url = f"{room_page}?{urlencode({delivery.flag_parameter: '1'})}"
        hash_params.insert(0, f"jwt={hash_value(token)}")
    return url + ("#" + "&".join(hash_params) if hash_params else "")


def app_url(apps: Apps, app: str, web_url: str) -> str | None:
    """``web_url`` for Jitsi's ``ios``, ``android`` or ``electron`` app, or None when the
    operator gave that app no scheme (then the web page it is)."""
    parts = urlsplit(web_url)
    rest = web_url[len(f"{parts.scheme}://") :]
    if app == "ios" and apps.ios_scheme:
        return f"{apps.ios_scheme}://{rest}"
    if app == "electron" and apps.electron_scheme:
        return f"{apps.electron_scheme}://{rest}"
    if app == "android" and apps.android_scheme and apps.android_package:
        intent = f"#Intent;scheme={apps.android_scheme};package={apps.android_package};end"
        return f"intent://{rest}{intent}"
    return None
