"""Google: both issuer spellings, Workspace domain from the ``hd`` claim.

Google signs ID tokens with ``iss`` ``https://accounts.google.com`` or ``accounts.google.com``;
both are accepted. ``allowed_domains`` is checked against the ``hd`` claim only: never the
e-mail suffix (a gmail.com address can carry any name) and never the ``hd=`` request
parameter, which is only a hint for Google's account picker. Google puts no groups in tokens.
An unverified e-mail is kept but flagged, and policy never uses it for e-mail rules.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from adapters.base import AccessDenied, Claims, Identity
from adapters.generic import GenericAdapter, GenericOptions

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")


class GoogleOptions(GenericOptions):
    groups: str | None = None
    roles: str | None = None
    tenant: str | None = "hd"
    allowed_domains: tuple[str, ...] = Field(
        (), description="Workspace domains (hd claim) allowed to sign in; empty: any account"
    )


class GoogleAdapter(GenericAdapter):
    """Google accounts and Workspace domains."""

    Options = GoogleOptions
    description = "Google (Workspace domain from the hd claim)"
    options: GoogleOptions

    def resolve_issuer(self, configured: str, claims: Claims) -> str:
        iss = claims.get("iss")
        return iss if configured in GOOGLE_ISSUERS and iss in GOOGLE_ISSUERS else configured

    def accepts_issuer(self, configured: str, value: str) -> bool:
        """Google's two spellings of its issuer, for the RFC 9207 ``iss`` parameter too."""
        return value == configured or (configured in GOOGLE_ISSUERS and value in GOOGLE_ISSUERS)

    def authorization_params(self, login_hint: str | None) -> Mapping[str, str]:
        domains = self.options.allowed_domains
        return {"hd": domains[0]} if len(domains) == 1 else {}

    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        identity = super().identity(claims, userinfo)
        allowed = {d.lower() for d in self.options.allowed_domains}
        hd = claims.get("hd")
        if allowed and (not isinstance(hd, str) or hd.lower() not in allowed):
            raise AccessDenied(
                "domain_not_allowed", f"hd claim {hd!r} is not an allowed Workspace domain"
            )
        return identity
