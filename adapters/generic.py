"""Generic OpenID Connect adapter: every claim name configurable, dotted paths allowed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.base import (
    Adapter,
    AdapterError,
    Claims,
    Identity,
    claim_path,
    string_list,
    subject_problem,
)


class GenericOptions(BaseModel):
    """Claim paths. ``name`` and ``username`` are tried in order; the first non-empty wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = "sub"
    username: tuple[str, ...] = ("preferred_username", "email", "sub")
    name: tuple[str, ...] = ("name", "preferred_username")
    email: str = "email"
    email_verified: str = "email_verified"
    groups: str | None = "groups"
    roles: str | None = "roles"
    picture: str | None = "picture"
    tenant: str | None = None
    extra_claims: tuple[str, ...] = Field(
        (), description="claims copied into Identity.extra (allow-list)"
    )


class GenericAdapter(Adapter):
    """Any OIDC provider whose claims can be found by name."""

    Options = GenericOptions
    description = "Generic OpenID Connect provider (claim names configurable)"
    options: GenericOptions

    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        """The ID token wins over userinfo for a claim in both (userinfo fills gaps);
        ``issuer`` is the validated token ``iss``; the name falls back to given + family
        name, the e-mail's local part, then the username."""
        merged: dict[str, Any] = dict(userinfo or {})
        merged.update(claims)
        opts = self.options
        subject = claim_path(merged, opts.subject)
        problem = "missing" if subject is None else subject_problem(subject)
        if problem:  # blank too: the username and name fall back to it
            raise AdapterError("claims_invalid", f"claim {opts.subject!r} {problem}")
        email = _string(claim_path(merged, opts.email))
        verified = claim_path(merged, opts.email_verified)
        username = _first(merged, opts.username) or subject
        name = (
            _first(merged, opts.name)
            or _joined_name(merged)
            or (email.split("@", 1)[0] if email else None)
            or username
        )
        return Identity(
            idp=self.idp_id,
            issuer=str(claims["iss"]),
            subject=subject,
            username=username,
            name=name,
            email=email,
            email_verified=verified is True or verified == "true",
            groups=self.namespaced(string_list(claim_path(merged, opts.groups)))
            if opts.groups
            else (),
            roles=self.namespaced(string_list(claim_path(merged, opts.roles)))
            if opts.roles
            else (),
            tenant=_string(claim_path(merged, opts.tenant)) if opts.tenant else None,
            picture=_string(claim_path(merged, opts.picture)) if opts.picture else None,
            extra={k: merged[k] for k in opts.extra_claims if k in merged},
        )


def _string(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _first(claims: Claims, paths: tuple[str, ...]) -> str | None:
    for path in paths:
        value = _string(claim_path(claims, path))
        if value:
            return value
    return None


def _joined_name(claims: Claims) -> str | None:
    parts = [_string(claims.get("given_name")), _string(claims.get("family_name"))]
    joined = " ".join(p for p in parts if p)
    return joined or None
