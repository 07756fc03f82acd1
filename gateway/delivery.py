"""How the Jitsi token is handed to the room page: ``?jwt=`` (default) or ``#jwt=``.

In fragment mode the token never reaches a server log or a proxy (browsers do not send the
fragment); Jitsi's web client reads ``jwt`` from the fragment first. The room URL then
carries the flag parameter (``?oidc=1``) instead, which tells nginx's entry rule that this
request has been through the gateway, so it is served by Jitsi rather than sent back here.
"""

from __future__ import annotations

from urllib.parse import urlencode

from gateway.config import Delivery


def deliver(delivery: Delivery, room_page: str, token: str) -> str:
    """The room page (``<base>/[<tenant>/]<room>``) with the token in the configured place."""
    if delivery.mode == "query":
        return f"{room_page}?{urlencode({'jwt': token})}"
    flag = urlencode({delivery.flag_parameter: "1"})
    return f"{room_page}?{flag}#{urlencode({'jwt': token})}"
