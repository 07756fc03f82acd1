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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from adapters.base import Identity
from gateway.policy_settings import (  # noqa: F401  (re-exported: the policy's vocabulary)
    KNOWN_FEATURES,
    MODERATOR_AFFILIATIONS,
    Outcome,
    PolicySettings,
    Rule,
)


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
