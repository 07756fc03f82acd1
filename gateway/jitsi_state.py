"""The ``state`` Jitsi's login button appends to ``tokenAuthUrl``.

Jitsi Meet (``config.tokenAuthUrl = 'https://meet.example.com/oidc/auth?room={room}&state={state}'``)
fills ``{state}`` with URL-encoded JSON: ``{"room": ..., "roomSafe": ..., "tenant": ...}``
plus ``config.*`` / ``interfaceConfig.*`` overrides and ``electron``. Only the room and the
tenant are used, and both pass the same strict name rules as the ``room`` parameter; the
state is never a redirect target, so the browser can only ever go back to the configured
Jitsi base URL. Anything that is not that shape is refused.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import GatewayError
from gateway.rooms import valid_room, valid_tenant

MAX_STATE = 4096
MAX_KEYS = 64


def room_from_state(state: str, room_param: str | None) -> tuple[str, str | None]:
    """(room, tenant) from Jitsi's state; ``room_param`` (``{room}``) must agree when given."""
    if len(state) > MAX_STATE:
        raise GatewayError("bad_request", "state longer than allowed")
    try:
        doc: Any = json.loads(state)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        raise GatewayError("bad_request", "state is not JSON") from None
    if not isinstance(doc, dict) or len(doc) > MAX_KEYS:
        raise GatewayError("bad_request", "state is not a small JSON object")
    for key, value in doc.items():
        if not isinstance(value, str | bool | int | float) and value is not None:
            raise GatewayError("bad_request", "state values must be scalars")
        if not isinstance(key, str) or len(key) > 128:
            raise GatewayError("bad_request", "state has a malformed key")
    room, tenant = doc.get("room"), doc.get("tenant")
    if not isinstance(room, str) or not valid_room(room):
        raise GatewayError("bad_request", "state names no valid room")
    if tenant in (None, ""):
        tenant = None
    elif not isinstance(tenant, str) or not valid_tenant(tenant):
        raise GatewayError("bad_request", "state names a malformed tenant")
    if room_param is not None and room_param != room:
        raise GatewayError("bad_request", "room parameter and state disagree")
    return room, tenant
