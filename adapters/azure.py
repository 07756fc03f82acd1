"""Microsoft Entra ID (Azure AD), single- and multi-tenant.

- Multi-tenant apps discover from ``/common`` or ``/organizations``, whose issuer is the
  template ``https://login.microsoftonline.com/{tenantid}/v2.0``: configure that template
  as ``issuer`` (with ``discovery_url``); the ``tid`` claim is substituted and must be in
  ``allowed_tenants`` (required for templated issuers, so "any tenant" is never implicit).
- The stable identity is ``tid`` + ``oid`` (``sub`` is pairwise per application): the
  subject is ``oid`` and the issuer names the tenant.
- ``groups`` holds object ids (GUIDs); app roles come in ``roles``. Past 200 groups the
  token carries ``_claim_names.groups`` instead (overage): with ``graph_groups`` on, the
  groups are read from Microsoft Graph ``/me/transitiveMemberOf`` with the access token
  (the app needs ``GroupMember.Read.All``); otherwise the identity is marked
  ``groups_complete = False`` so policy never treats the person as having no groups.
- ``email`` is optional and mutable in Entra: it is treated as unverified unless
  ``trust_email`` is set.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from pydantic import Field

from adapters.base import (
    AccessDenied,
    AdapterError,
    Claims,
    ConfigProblem,
    Identity,
    JsonHttp,
    string_list,
)
from adapters.generic import GenericAdapter, GenericOptions

TENANT_PLACEHOLDER = "{tenantid}"
GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
MAX_GRAPH_PAGES = 50


class AzureOptions(GenericOptions):
    subject: str = "oid"
    username: tuple[str, ...] = ("preferred_username", "upn", "email", "oid")
    name: tuple[str, ...] = ("name", "preferred_username")
    tenant: str | None = "tid"
    picture: str | None = None
    allowed_tenants: tuple[str, ...] = Field((), description="tenant ids (tid) allowed in")
    trust_email: bool = False
    graph_groups: bool = False
    graph_url: str = "https://graph.microsoft.com/v1.0"


class AzureAdapter(GenericAdapter):
    """Microsoft Entra ID (tid+oid identity, group overage)."""

    Options = AzureOptions
    description = "Microsoft Entra ID / Azure AD (multi-tenant issuers, group overage)"
    options: AzureOptions

    def check_config(self, issuer: str) -> list[str | ConfigProblem]:
        if TENANT_PLACEHOLDER in issuer and not self.options.allowed_tenants:
            return ["allowed_tenants: required when the issuer is the {tenantid} template"]
        return []

    def resolve_issuer(self, configured: str, claims: Claims) -> str:
        tid = claims.get("tid")
        if TENANT_PLACEHOLDER in configured and isinstance(tid, str) and GUID.fullmatch(tid):
            return configured.replace(TENANT_PLACEHOLDER, tid)
        return configured

    def accepts_issuer(self, configured: str, value: str) -> bool:
        """The configured issuer, or its ``{tenantid}`` filled with a GUID."""
        if value == configured:
            return True
        if TENANT_PLACEHOLDER not in configured:
            return False
        pattern = re.escape(configured).replace(re.escape(TENANT_PLACEHOLDER), GUID.pattern)
        return re.fullmatch(pattern, value) is not None

    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        tid = claims.get("tid")
        if not isinstance(tid, str) or not GUID.fullmatch(tid):
            raise AdapterError("claims_invalid", "tid claim missing or not a GUID")
        allowed = {t.lower() for t in self.options.allowed_tenants}
        if allowed and tid.lower() not in allowed:
            raise AccessDenied("tenant_not_allowed", f"tenant {tid} is not allowed")
        identity = super().identity(claims, userinfo)
        overage = _has_overage(claims)
        return replace(
            identity,
            email_verified=bool(identity.email) and self.options.trust_email,
            groups=() if overage else identity.groups,
            groups_complete=not overage,
        )

    async def enrich(
        self, identity: Identity, access_token: str | None, http: JsonHttp
    ) -> Identity:
        if identity.groups_complete or not self.options.graph_groups:
            return identity
        if not access_token:
            return identity  # stays "groups unknown"
        url: str | None = (
            f"{self.options.graph_url}/me/transitiveMemberOf/microsoft.graph.group?$select=id"
        )
        groups: list[str] = []
        for _ in range(MAX_GRAPH_PAGES):
            if url is None:
                return replace(identity, groups=self.namespaced(groups), groups_complete=True)
            page: Any = await http.get_json(
                url, headers={"Authorization": f"Bearer {access_token}"}
            )
            if not isinstance(page, dict):
                raise AdapterError("claims_invalid", "Graph answered with something else than JSON")
            groups += [g["id"] for g in page.get("value", []) if isinstance(g, dict) and "id" in g]
            next_link = page.get("@odata.nextLink")
            url = (
                next_link
                if isinstance(next_link, str) and next_link.startswith(self.options.graph_url)
                else None
            )
        return identity  # too many pages: leave the groups marked unknown


def _has_overage(claims: Claims) -> bool:
    names = claims.get("_claim_names")
    return isinstance(names, dict) and "groups" in names and not string_list(claims.get("groups"))
