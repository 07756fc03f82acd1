"""How the Jitsi token is handed to the room page: ``?jwt=`` (default) or ``#jwt=``.

Written the way Jitsi Meet's web client reads it (``parseJWTFromURLParams``): the fragment
first, each hash value JSON-parsed (Jitsi itself writes ``#jwt="<token>"``, so the token is
written as a JSON string, percent-encoded), then the query, whose value Jitsi takes as it
stands, without percent-decoding (so the token goes there verbatim; a JWS in compact form
is base64url and dots only, which needs no encoding).

In fragment mode the token never reaches a server log or a proxy (browsers do not send the
fragment). The room URL then carries the flag parameter (``?oidc=1``) instead, which tells
nginx's entry rule that this request has been through the gateway, so it is served by Jitsi
rather than sent back here.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, urlencode

from gateway.config import Delivery

COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def hash_value(value: object) -> str:
    """One hash parameter's value as Jitsi's ``parseURLParams`` reads it back: JSON, encoded."""
    return quote(json.dumps(value, separators=(",", ":"), ensure_ascii=False), safe="")


def deliver(delivery: Delivery, room_page: str, token: str) -> str:
    """The room page (``<base>/[<tenant>/]<room>``) with the token in the configured place."""
    if not COMPACT_JWS.fullmatch(token):
        raise ValueError("a Jitsi token must be a JWS in compact serialization")
    if delivery.mode == "query":
        return f"{room_page}?jwt={token}"
    flag = urlencode({delivery.flag_parameter: "1"})
    return f"{room_page}?{flag}#jwt={hash_value(token)}"
