"""Which configured IdPs may serve a room request, and which one an e-mail address picks.

Pinning: an IdP with ``rooms`` patterns serves the rooms they match; an IdP without serves
the rooms no IdP has pinned. The same holds for ``tenants``. So pinning ``partner-*`` to the
partner IdP takes those rooms away from every other IdP, and leaves all other rooms alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from gateway.idps import ConfiguredIdP
from gateway.trust import email_domain


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
    """The first IdP whose ``email_domains`` holds the address's domain (case-insensitive,
    without a trailing dot)."""
    domain = email_domain(email)
    if domain is None:
        return None
    return next((i for i in idps if domain in i.config.email_domains), None)


def hint_for(
    idp: ConfiguredIdP, idps: Iterable[ConfiguredIdP], login_hint: str | None
) -> str | None:
    """The ``login_hint`` to send ``idp``: none when it is an address of a domain another
    IdP owns (meant for that IdP: the person is asked again rather than named to the wrong
    one, e.g. a room pinned to another IdP)."""
    domain = email_domain(login_hint) if login_hint else None
    if domain is None:
        return login_hint or None  # a username: no IdP owns it
    owners = [i.id for i in idps if domain in i.config.email_domains]
    return login_hint if not owners or idp.id in owners else None
