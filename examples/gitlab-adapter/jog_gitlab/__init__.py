"""GitLab (gitlab.com or self-managed) as an identity provider for jitsi-oidc-gateway.

GitLab's ID token carries ``nickname`` (the username), ``name``, ``email``,
``email_verified``, ``picture`` and ``groups_direct``: the full paths of the groups the
person is a direct member of (``acme/devs``). GitLab has no roles. Configure the IdP with
``issuer: https://gitlab.com`` (or your instance), scopes ``openid profile email``, and
``adapter: gitlab``.

Options (``idps[].options``): ``allowed_groups`` refuses anyone outside those group paths
(or their subgroups) at sign-in, before the gateway's policy even runs. The options model is
a plain pydantic model on purpose: the gateway refuses unknown keys for every adapter, so a
typo such as ``allowed_group:`` stops start-up instead of switching the check off.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from adapters.base import (
    AccessDenied,
    Adapter,
    AdapterError,
    Claims,
    ConfigProblem,
    Identity,
    string_list,
    subject_problem,
)


class GitLabOptions(BaseModel):
    allowed_groups: tuple[str, ...] = Field((), description="group paths allowed to sign in")


class GitLabAdapter(Adapter):
    """GitLab: username from nickname, groups from groups_direct."""

    Options = GitLabOptions
    description = "GitLab (example plugin: groups_direct as groups)"
    options: GitLabOptions

    def check_config(self, issuer: str) -> list[str | ConfigProblem]:
        """GitLab's issuer is the instance root; a path is a mistaken copy of some URL."""
        if urlsplit(issuer).path.strip("/"):
            return [ConfigProblem("issuer", "GitLab's issuer is the instance root, no path")]
        return []

    def authorization_params(self, login_hint: str | None) -> Mapping[str, str]:
        return {}  # GitLab ignores login_hint; nothing to add

    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        merged = {**(userinfo or {}), **claims}
        sub, nickname = _text(merged.get("sub")), _text(merged.get("nickname"))
        if sub is None or nickname is None:
            raise AdapterError("claims_invalid", "GitLab token lacks sub or nickname")
        problem = subject_problem(sub)
        if problem:  # the gateway would refuse it anyway; say why here
            raise AdapterError("claims_invalid", f"GitLab sub {problem}")
        groups = string_list(merged.get("groups_direct"))
        allowed = self.options.allowed_groups
        if allowed and not any(g == a or g.startswith(a + "/") for g in groups for a in allowed):
            raise AccessDenied("group_not_allowed", "not a member of an allowed GitLab group")
        return Identity(
            idp=self.idp_id,
            issuer=str(claims["iss"]),
            subject=sub,
            username=nickname,
            name=_text(merged.get("name")) or nickname,
            email=_text(merged.get("email")),
            email_verified=merged.get("email_verified") is True,
            groups=self.namespaced(groups),
            picture=_text(merged.get("picture")),
        )


def _text(value: object) -> str | None:
    """A claim that should be text: blank or not a string counts as absent."""
    return value.strip() if isinstance(value, str) and value.strip() else None
