"""Strict validation of the room and tenant names that arrive in query strings.

Only names made of ASCII letters, digits, ``-``, ``_`` and ``~`` are accepted (no dots, no
slashes, no percent signs), so a room can never turn into a path trick such as
``//evil.example`` or ``..``. Jitsi lower-cases room names; the token carries the lower-cased
name, the redirect keeps what the person typed.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

ROOM_RE = re.compile(r"[A-Za-z0-9_~-]{1,128}")
TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


def valid_room(value: str | None) -> bool:
    return value is not None and ROOM_RE.fullmatch(value) is not None


def valid_tenant(value: str | None) -> bool:
    return value is not None and TENANT_RE.fullmatch(value) is not None


def room_link(path: str, room: str, tenant: str | None, **extra: str) -> str:
    """A gateway or entry-rule link for a room: ``<path>?room=R[&tenant=T][&extra...]``."""
    query = {"room": room, **({"tenant": tenant} if tenant else {}), **extra}
    return f"{path}?{urlencode(query)}"
