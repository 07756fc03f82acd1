"""Authorization policy: may this person sign in, open this room, and with what rights.

An ordered list of rules; the first that matches decides. A rule matches when every
condition it names holds (within one condition, any listed value will do):

- ``idps``: the identity's IdP id
- ``groups`` / ``roles``: namespaced names as the adapters emit them (``kc:/staff``); when
  the IdP cut the group list (Entra overage not resolved) the groups are unknown, which fails
  closed: an allowing rule's group condition does not hold, a refusing rule's does
- ``email_domains``: the e-mail's domain, only when the IdP asserted it verified **and the
  IdP is trusted for that domain** (the domain is in the IdP's own ``email_domains``): any
  IdP can assert any address, so a domain only counts from the IdPs that own it
- ``tenants``: the identity's tenant (Google ``hd``, Entra ``tid``, Keycloak realm)
- ``rooms``: globs on the lower-cased room name
- ``url_tenants``: the tenant of the room's URL (``/<tenant>/<room>``; ``""`` for none), so a
  multi-tenant Jitsi can keep each organisation's people in its own tenant

Two decisions use the same list. At **sign-in** the room is not part of the question:
rules are read for their identity conditions only; an allowing rule (with or without
``rooms``) admits the person, a refusing rule *without* ``rooms`` refuses the sign-in, and a
refusing rule *with* ``rooms`` is skipped (it refuses rooms, not people). At **tokenize**
every condition counts, rooms included, and the first match decides the room and the token:
``affiliation`` (owner / moderator / member), ``moderator`` (``context.user.moderator``),
``features`` (``context.features``), ``room_scope`` (``room``, or ``any`` for a ``*`` token)
and ``token_lifetime_seconds``. Those values are layered: ``defaults``, then
``idp_defaults[<idp>]``, then the rule. When no rule matches, ``default`` (allow or deny)
decides, with ``rule`` reported as ``default``.

Moderator rights are one decision with two claims. Jitsi's ``mod_token_affiliation`` makes a
person owner when ``affiliation`` is owner or moderator *or* ``moderator`` is true, and
member otherwise; the web client shows ``moderator``. So the two never contradict: a layer
may not set both inconsistently (``check-config`` refuses it), the highest layer that sets
either decides both, and the other is derived from it (``moderator`` from the affiliation;
an affiliation set below a layer that sets only ``moderator`` is dropped).

A ``*`` token opens every room of its ``sub`` (the URL's tenant or the domain), so
``room_scope: any`` gives one only where the policy could not decide any room differently
for that person: the deciding rule names no rooms, and no earlier rule that applies to the
person names rooms. Otherwise the token is for the room asked for, and the decision says
why (``policy explain`` shows it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.base import Identity

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


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str  # 'rule 3 "staff"' or 'default'
    reason: str  # one line: which rule and which conditions
    trail: tuple[str, ...]
    affiliation: str | None = None
    moderator: bool | None = None
    features: dict[str, bool] | None = None
    wildcard_room: bool = False
    token_lifetime_seconds: int | None = None
    scope: str = ""  # why the token is for this room only, or for every room ("*")

    def user_claims(self) -> dict[str, object]:
        """``context.user`` additions for the Jitsi token."""
        out: dict[str, object] = {}
        if self.affiliation:
            out["affiliation"] = self.affiliation
        if self.moderator is not None:
            out["moderator"] = self.moderator
        return out


class Policy:
    """``email_trust`` maps each IdP id to the e-mail domains it is trusted for (its
    ``idps[].email_domains``); an IdP missing from it is trusted for none."""

    def __init__(
        self, settings: PolicySettings, email_trust: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        self.settings = settings
        self.email_trust = {k: frozenset(v) for k, v in (email_trust or {}).items()}

    def _trusted(self, identity: Identity) -> frozenset[str]:
        return self.email_trust.get(identity.idp, frozenset())

    def sign_in(self, identity: Identity) -> Decision:
        trail: list[str] = []
        for i, rule in enumerate(self.settings.rules, start=1):
            label = f'rule {i} "{rule.name}"'
            about_rooms = bool(rule.rooms or rule.url_tenants)
            if about_rooms and not rule.allow:
                trail.append(f"{label}: skipped at sign-in (refuses rooms, not people)")
                continue
            matched, why = _match(
                rule, identity, room=None, url_tenant=None, trusted=self._trusted(identity)
            )
            trail.append(f"{label}: {'matched ' if matched else ''}{why}")
            if matched:
                verb = "admits for some rooms:" if about_rooms else "matched"
                return Decision(rule.allow, label, f"{label} {verb} {why}", tuple(trail))
        return self._default(trail, identity)

    def room(self, identity: Identity, room: str, url_tenant: str | None = None) -> Decision:
        """The decision for ``room`` (and the tenant of its URL, ``/<tenant>/<room>``)."""
        trail: list[str] = []
        tenant = (url_tenant or "").lower()
        for i, rule in enumerate(self.settings.rules, start=1):
            label = f'rule {i} "{rule.name}"'
            matched, why = _match(
                rule,
                identity,
                room=room.lower(),
                url_tenant=tenant,
                trusted=self._trusted(identity),
            )
            trail.append(f"{label}: {'matched ' if matched else ''}{why}")
            if matched:
                decision = self._outcome(
                    rule.allow, label, f"{label} matched {why}", trail, identity, rule
                )
                return self._scoped(decision, identity, tenant, i - 1)
        return self._scoped(self._default(trail, identity), identity, tenant, None)

    def _scoped(
        self, decision: Decision, identity: Identity, url_tenant: str, index: int | None
    ) -> Decision:
        """Keep a ``*`` token only where no room could be decided differently for this person."""
        if not decision.allowed:
            return decision
        if not decision.wildcard_room:
            return replace(decision, scope="this room only (room_scope: room)")
        rules = self.settings.rules
        if index is not None and rules[index].rooms:
            why = f"this room only: {decision.rule} covers only rooms {list(rules[index].rooms)}"
            return replace(decision, wildcard_room=False, scope=why)
        earlier = rules if index is None else rules[:index]
        for i, rule in enumerate(earlier, start=1):
            if rule.rooms and _match(rule, identity, room=None, url_tenant=url_tenant)[0]:
                verb = "refuses" if not rule.allow else "decides"
                why = (
                    f'this room only: rule {i} "{rule.name}" {verb} rooms {list(rule.rooms)} '
                    "for this person, which a * token would open"
                )
                return replace(decision, wildcard_room=False, scope=why)
        return replace(decision, scope="every room (*): no rule decides any room differently")

    def guest_allowed(self, room: str) -> bool:
        return any(fnmatchcase(room.lower(), p) for p in self.settings.guest_rooms)

    def _default(self, trail: list[str], identity: Identity) -> Decision:
        allowed = self.settings.default == "allow"
        reason = f"no rule matched; default {self.settings.default}"
        return self._outcome(allowed, "default", reason, trail, identity, None)

    def _outcome(
        self,
        allowed: bool,
        rule: str,
        reason: str,
        trail: list[str],
        identity: Identity,
        top: Outcome | None,
    ) -> Decision:
        layers = [self.settings.defaults, self.settings.idp_defaults.get(identity.idp), top]
        merged: dict[str, object] = {}
        for layer in layers:
            if layer is not None:
                for key in Outcome.model_fields:
                    value = getattr(layer, key)
                    if value is not None:
                        merged[key] = value
        rights = next((r for layer in reversed(layers) if layer and (r := layer.rights())), None)
        affiliation, moderator = rights if rights else (None, None)
        return Decision(
            allowed=allowed,
            rule=rule,
            reason=reason,
            trail=tuple(trail),
            affiliation=affiliation if allowed else None,  # type: ignore[arg-type]
            moderator=moderator if allowed else None,  # type: ignore[arg-type]
            features=merged.get("features") if allowed else None,  # type: ignore[arg-type]
            wildcard_room=allowed and merged.get("room_scope") == "any",
            token_lifetime_seconds=merged.get("token_lifetime_seconds"),  # type: ignore[arg-type]
        )


def _match(
    rule: Rule,
    identity: Identity,
    room: str | None,
    url_tenant: str | None,
    trusted: frozenset[str] = frozenset(),
) -> tuple[bool, str]:
    """Whether every condition holds; the text names what matched or what did not."""
    hits: list[str] = []
    if rule.idps:
        if identity.idp not in rule.idps:
            return False, f"idp {identity.idp} not in {list(rule.idps)}"
        hits.append(f"idp {identity.idp}")
    if rule.groups and not identity.groups_complete:
        # Fail closed: an unknown list never grants a group, and never escapes a refusal.
        if rule.allow:
            return False, "groups unknown (the IdP cut the list; overage not resolved)"
        hits.append("groups unknown, so the refusal applies")
    elif rule.groups:
        found = next((g for g in rule.groups if g in identity.groups), None)
        if found is None:
            return False, f"no group in {list(rule.groups)}"
        hits.append(f"group {found}")
    if rule.roles:
        found = next((r for r in rule.roles if r in identity.roles), None)
        if found is None:
            return False, f"no role in {list(rule.roles)}"
        hits.append(f"role {found}")
    if rule.email_domains:
        domain = identity.email.rpartition("@")[2].lower() if identity.email else None
        if domain is None:
            return False, "no e-mail"
        if not identity.email_verified:
            return False, "e-mail not verified by the IdP"
        if domain not in rule.email_domains:
            return False, f"e-mail domain {domain} not in {list(rule.email_domains)}"
        if domain not in trusted:
            return False, (
                f"e-mail domain {domain} does not count: IdP {identity.idp} is not trusted "
                f"for it (its email_domains: {sorted(trusted)})"
            )
        hits.append(f"verified e-mail domain {domain} (IdP {identity.idp} trusted for it)")
    if rule.tenants:
        tenant = (identity.tenant or "").lower()
        if tenant not in rule.tenants:
            return False, f"tenant {identity.tenant or '(none)'} not in {list(rule.tenants)}"
        hits.append(f"tenant {tenant}")
    if rule.rooms and room is not None:
        pattern = next((p for p in rule.rooms if fnmatchcase(room, p)), None)
        if pattern is None:
            return False, f"room {room} not in {list(rule.rooms)}"
        hits.append(f"room {room} ~ {pattern}")
    if rule.url_tenants and url_tenant is not None:
        if url_tenant not in rule.url_tenants:
            shown = url_tenant or "(none)"
            return False, f"URL tenant {shown} not in {list(rule.url_tenants)}"
        hits.append(f"URL tenant {url_tenant or '(none)'}")
    return True, ", ".join(hits) or "(no conditions)"
