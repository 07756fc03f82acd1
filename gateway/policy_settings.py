"""The policy's settings (``policy:`` in settings.yaml), validated at start-up.

Kept apart from the decisions (``gateway.policy``) so the configuration model needs nothing
of the adapters; see ``gateway.policy`` for what the rules mean.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ROOM_GLOB = re.compile(r"[a-z0-9_~*?\[\]!-]{1,128}")
FEATURE = re.compile(r"[a-z][a-z0-9-]{0,40}")
DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
# Feature names Jitsi reads from context.features: the web client's MEET_FEATURES
# (jitsi-meet react/features/base/jwt/constants.ts, 2026) and names read only by Prosody
# modules. A name missing here is warned about (a typo?), not refused: Jitsi's list grows.
KNOWN_FEATURES = (
    "branding",
    "calendar",
    "create-polls",
    "file-upload",
    "flip",
    "inbound-call",
    "list-visitors",
    "live-translation",
    "livestreaming",
    "lobby",
    "moderation",
    "outbound-call",
    "recording",
    "room",
    "screen-sharing",
    "send-groupchat",
    "send-private-message",
    "sip-inbound-call",
    "sip-outbound-call",
    "transcription",
    # read by Prosody modules only
    "live-translation-subscribe",
    "name-readonly",
)
MODERATOR_AFFILIATIONS = ("owner", "moderator")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Outcome(_Strict):
    """What an allowed room gets; unset fields fall through to the layer below."""

    affiliation: Literal["owner", "moderator", "member"] | None = None
    moderator: bool | None = None
    features: dict[str, bool] | None = None
    room_scope: Literal["room", "any"] | None = None
    token_lifetime_seconds: int | None = Field(None, ge=30, le=86400)

    @field_validator("features")
    @classmethod
    def _feature_names(cls, v: dict[str, bool] | None) -> dict[str, bool] | None:
        for name in v or {}:
            if not FEATURE.fullmatch(name):
                raise ValueError(f"feature {name!r} is not a Jitsi feature name")
        return v

    @model_validator(mode="after")
    def _rights_agree(self) -> Self:
        if self.affiliation is None or self.moderator is None:
            return self
        if self.moderator != (self.affiliation in MODERATOR_AFFILIATIONS):
            raise ValueError(
                f"affiliation {self.affiliation!r} with moderator: {str(self.moderator).lower()} "
                "contradict each other (Jitsi's mod_token_affiliation makes owner/moderator "
                "affiliations and moderator: true moderators); set only one of them"
            )
        return self

    def rights(self) -> tuple[str | None, bool] | None:
        """(affiliation, moderator) when this layer decides moderator rights, else None."""
        if self.affiliation is not None:
            return self.affiliation, self.affiliation in MODERATOR_AFFILIATIONS
        if self.moderator is not None:
            return None, self.moderator
        return None


class Rule(Outcome):
    name: str = Field(min_length=1, max_length=64)
    allow: bool = True
    idps: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    email_domains: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    rooms: tuple[str, ...] = ()
    url_tenants: tuple[str, ...] = Field(
        (), description='tenants in the room URL (/<tenant>/<room>); "" is a URL without one'
    )

    @field_validator("rooms")
    @classmethod
    def _room_globs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in v:
            if not ROOM_GLOB.fullmatch(pattern):
                raise ValueError(
                    f"room pattern {pattern!r}: use lower-case room characters and * ? [ ]"
                )
        return v

    @field_validator("email_domains", "tenants", "url_tenants")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(x.strip().lower() for x in v)

    @field_validator("email_domains")
    @classmethod
    def _domains(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for domain in v:
            if not DOMAIN.fullmatch(domain):
                raise ValueError(f"{domain!r} is not a domain name (no @, e.g. example.org)")
        return v


class PolicySettings(_Strict):
    default: Literal["allow", "deny"] = "allow"
    defaults: Outcome = Outcome()
    idp_defaults: dict[str, Outcome] = Field(default_factory=dict)
    guest_rooms: tuple[str, ...] = Field((), description="rooms whose refusal page offers guests")
    rules: tuple[Rule, ...] = ()

    def problems(
        self,
        idp_ids: Iterable[str],
        wildcard_allowed: bool,
        email_trust: Mapping[str, Iterable[str]] | None = None,
    ) -> list[str]:
        """Rules that can never match or cannot be honoured, by path (for start-up).

        With ``email_trust`` (IdP id -> the e-mail domains it is trusted for), an
        ``email_domains`` entry no IdP the rule admits is trusted for is a problem: the
        condition could never hold, and the rule was probably meant to let that domain in.
        """
        known = set(idp_ids)
        out: list[str] = []
        for idp in self.idp_defaults:
            if idp not in known:
                out.append(f"policy.idp_defaults.{idp}: unknown IdP id")
        layers = [("policy.defaults", self.defaults)]
        layers += [(f"policy.idp_defaults.{k}", v) for k, v in self.idp_defaults.items()]
        for i, rule in enumerate(self.rules):
            where = f"policy.rules[{i}] ({rule.name})"
            layers.append((where, rule))
            for idp in rule.idps:
                if idp not in known:
                    out.append(f"{where}.idps: unknown IdP id {idp!r}")
            if email_trust is not None:
                out += _untrusted_domains(where, rule, email_trust)
            for kind in ("groups", "roles"):
                for name in getattr(rule, kind):
                    prefix = name.split(":", 1)[0] if ":" in name else None
                    if prefix not in known:
                        out.append(
                            f"{where}.{kind}: {name!r} must start with a configured IdP id "
                            "(names are namespaced, e.g. kc:/staff)"
                        )
        for where, layer in layers:
            if layer.room_scope == "any" and not wildcard_allowed:
                out.append(f"{where}.room_scope: 'any' needs jitsi.room_wildcard: true")
        names = [r.name for r in self.rules]
        for name in {n for n in names if names.count(n) > 1}:
            out.append(f"policy.rules: rule name {name!r} is used twice")
        for i, pattern in enumerate(self.guest_rooms):
            if not ROOM_GLOB.fullmatch(pattern):
                out.append(f"policy.guest_rooms[{i}]: malformed room pattern {pattern!r}")
        return out

    def warnings(self) -> list[str]:
        """Settings that run but may not mean what was meant, or trust more than they seem to,
        by path (logged at start-up, printed by check-config)."""
        layers = [("policy.defaults", self.defaults)]
        layers += [(f"policy.idp_defaults.{k}", v) for k, v in self.idp_defaults.items()]
        layers += [(f"policy.rules[{i}] ({r.name})", r) for i, r in enumerate(self.rules)]
        out = [
            f"{where}.features: {name!r} is not a Jitsi feature this gateway knows; it is "
            "passed to Jitsi as written (a typo? known: " + ", ".join(KNOWN_FEATURES) + ")"
            for where, layer in layers
            for name in layer.features or {}
            if name not in KNOWN_FEATURES
        ]
        for i, rule in enumerate(self.rules):
            if rule.tenants and not rule.idps:
                out.append(
                    f"policy.rules[{i}] ({rule.name}).tenants: any IdP can assert a tenant "
                    "value; name the IdPs whose tenants count in this rule's idps"
                )
        return out


def _untrusted_domains(
    where: str, rule: Rule, email_trust: Mapping[str, Iterable[str]]
) -> list[str]:
    idps = rule.idps or tuple(email_trust)
    trusted = {d for idp in idps for d in email_trust.get(idp, ())}
    return [
        f"{where}.email_domains: no IdP{' of this rule' if rule.idps else ''} is trusted "
        f"for {domain!r} (list it in that IdP's idps[].email_domains)"
        for domain in rule.email_domains
        if domain not in trusted
    ]
