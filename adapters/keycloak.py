"""Keycloak: realm and client roles, group paths, the realm as tenant.

Issuers look like ``https://host/realms/<realm>`` (Keycloak 17+) or
``https://host/auth/realms/<realm>`` (the legacy WildFly distribution); both are accepted as
configured, and the realm name is read from either. Roles come from
``realm_access.roles`` and ``resource_access.<client>.roles``; client roles are emitted as
``<idp>:<client>:<role>`` so they never collide with realm roles (``<idp>:<role>``). Groups
(from a group-membership mapper, "full group path" on) are kept as paths, and each leaf name
is added too: ``/staff/devops`` gives ``kc:/staff/devops`` and ``kc:devops``.
``email_verified`` is passed through as asserted (often false for LDAP or brokered users).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from pydantic import Field

from adapters.base import Claims, Identity, claim_path, string_list
from adapters.generic import GenericAdapter, GenericOptions

REALM_IN_ISSUER = re.compile(r"/(?:auth/)?realms/([^/]+)/?$")


class KeycloakOptions(GenericOptions):
    roles: str | None = None  # realm/client roles are read from their fixed places
    client_roles: tuple[str, ...] = Field(
        (), description="clients whose resource_access roles to include; empty: the token's azp"
    )
    realm_roles: bool = True
    group_leaves: bool = True


class KeycloakAdapter(GenericAdapter):
    """Keycloak realms (realm/client roles, group paths)."""

    Options = KeycloakOptions
    description = "Keycloak (realm and client roles, group paths, legacy /auth issuers)"
    options: KeycloakOptions

    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        base = super().identity(claims, userinfo)
        merged: dict[str, Any] = {**(userinfo or {}), **claims}
        roles: list[str] = []
        if self.options.realm_roles:
            roles += string_list(claim_path(merged, "realm_access.roles"))
        clients = self.options.client_roles or tuple(
            c for c in (merged.get("azp"),) if isinstance(c, str)
        )
        resource_access = merged.get("resource_access")
        for client in clients:
            entry = resource_access.get(client) if isinstance(resource_access, dict) else None
            if isinstance(entry, dict):
                roles += [f"{client}:{r}" for r in string_list(entry.get("roles"))]
        groups: list[str] = []
        for path in string_list(claim_path(merged, self.options.groups or "groups")):
            groups.append(path)
            leaf = path.rstrip("/").rsplit("/", 1)[-1]
            if self.options.group_leaves and path.startswith("/") and leaf:
                groups.append(leaf)
        match = REALM_IN_ISSUER.search(base.issuer)
        return replace(
            base,
            roles=self.namespaced(roles),
            groups=self.namespaced(groups),
            tenant=base.tenant or (match.group(1) if match else None),
        )
