"""Which configured IdPs may serve a room request, and which one an e-mail address picks.

Pinning: an IdP with ``rooms`` patterns serves the rooms they match; an IdP without serves
the rooms no IdP has pinned. The same holds for ``tenants``. So pinning ``partner-*`` to the
partner IdP takes those rooms away from every other IdP, and leaves all other rooms alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from gateway.idps import ConfiguredIdP


def _room_pinned(idp: ConfiguredIdP, room: str) -> bool:
    return any(fnmatchcase(room.lower(), p) for p in idp.config.rooms)


def eligible_idps(
    idps: Iterable[ConfiguredIdP], room: str, tenant: str | None
) -> list[ConfiguredIdP]:
    candidates = list(idps)
    pinned = [i for i in candidates if _room_pinned(i, room)]
    candidates = pinned or [i for i in candidates if not i.config.rooms]
    key = (tenant or "").lower()
    by_tenant = [i for i in candidates if key and key in i.config.tenants]
    return by_tenant or [i for i in candidates if not i.config.tenants]


def idp_for_email(idps: Iterable[ConfiguredIdP], email: str) -> ConfiguredIdP | None:
    """The first IdP whose ``email_domains`` holds the address's domain (case-insensitive)."""
    _, at, domain = email.strip().rpartition("@")
    if not at or not domain:
        return None
    domain = domain.lower()
    return next((i for i in idps if domain in i.config.email_domains), None)
