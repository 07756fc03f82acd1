"""How the Jitsi token is handed to the room page: ``?jwt=`` (default) or ``#jwt=``.

In fragment mode the token never reaches a server log or a proxy (browsers do not send the
fragment); Jitsi's web client reads ``jwt`` from the fragment first. The room URL then
carries the flag parameter (``?oidc=1``) instead, which tells nginx's entry rule that this
request has been through the gateway, so it is served by Jitsi rather than sent back here.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.config import Delivery


def deliver(delivery: Delivery, room_url: str) -> str:
    """Turn ``<base>/<room>?jwt=T`` into the configured form (unchanged in query mode)."""
    if delivery.mode == "query":
        return room_url
    parts = urlsplit(room_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    token = next(v for k, v in query if k == "jwt")
    rest = [(k, v) for k, v in query if k != "jwt"] + [(delivery.flag_parameter, "1")]
    fragment = urlencode({"jwt": token})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), fragment))
