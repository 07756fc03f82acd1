"""The policy engine as a table: every condition, every outcome, first-match order, defaults,
per-IdP defaults, and the unverified-e-mail and unknown-groups cases."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.base import Identity
from gateway.policy import Policy, PolicySettings

BASE = Identity(
    idp="kc",
    issuer="https://kc.example/realms/staff",
    subject="u1",
    username="u1",
    name="U One",
    email="u1@corp.example",
    email_verified=True,
    groups=("kc:/staff", "kc:staff"),
    roles=("kc:jitsi:moderator",),
    tenant="staff",
)


def who(**changes: Any) -> Identity:
    return replace(BASE, **changes)


# kc owns corp.example; google owns nothing (a social login may assert any address).
TRUST = {"kc": ("corp.example",), "google": ()}


def policy(rules: list[dict[str, Any]], **top: Any) -> Policy:
    return Policy(PolicySettings.model_validate({"rules": rules, **top}), TRUST)


CONDITIONS = [
    # (id, rule conditions, identity, room, matches)
    ("idp-match", {"idps": ["kc"]}, who(), "r", True),
    ("idp-other", {"idps": ["google"]}, who(), "r", False),
    ("group-match", {"groups": ["kc:/staff"]}, who(), "r", True),
    ("group-other", {"groups": ["kc:/partners"]}, who(), "r", False),
    ("group-of-other-idp-same-name", {"groups": ["g:/staff"]}, who(), "r", False),
    (
        "groups-unknown",
        {"groups": ["kc:/staff"]},
        who(groups_complete=False, groups=()),
        "r",
        False,
    ),
    ("role-match", {"roles": ["kc:jitsi:moderator"]}, who(), "r", True),
    ("role-other", {"roles": ["kc:admin"]}, who(), "r", False),
    ("email-domain-verified", {"email_domains": ["corp.example"]}, who(), "r", True),
    (
        "email-domain-case",
        {"email_domains": ["CORP.example"]},
        who(email="u@Corp.Example"),
        "r",
        True,
    ),
    (
        "email-domain-unverified",
        {"email_domains": ["corp.example"]},
        who(email_verified=False),
        "r",
        False,
    ),
    ("email-domain-other", {"email_domains": ["x.example"]}, who(), "r", False),
    ("email-missing", {"email_domains": ["corp.example"]}, who(email=None), "r", False),
    (
        "email-domain-of-another-idp",
        {"email_domains": ["corp.example"]},
        who(idp="google"),
        "r",
        False,
    ),
    (
        "email-domain-idp-not-in-trust-map",
        {"email_domains": ["corp.example"]},
        who(idp="rogue"),
        "r",
        False,
    ),
    ("tenant-match", {"tenants": ["staff"]}, who(), "r", True),
    ("tenant-other", {"tenants": ["acme"]}, who(), "r", False),
    ("tenant-missing", {"tenants": ["acme"]}, who(tenant=None), "r", False),
    ("room-glob", {"rooms": ["team-*"]}, who(), "Team-Red", True),
    ("room-glob-miss", {"rooms": ["team-*"]}, who(), "red", False),
    ("all-conditions", {"idps": ["kc"], "groups": ["kc:staff"], "rooms": ["r"]}, who(), "r", True),
    ("one-condition-fails", {"idps": ["kc"], "groups": ["kc:nope"]}, who(), "r", False),
    ("no-conditions", {}, who(), "r", True),
]


@pytest.mark.parametrize(
    ("conditions", "identity", "room", "matches"),
    [c[1:] for c in CONDITIONS],
    ids=[c[0] for c in CONDITIONS],
)
def test_conditions(conditions: dict[str, Any], identity: Identity, room: str, matches: bool):
    engine = policy([{"name": "r1", **conditions}], default="deny")
    decision = engine.room(identity, room)
    assert decision.allowed is matches
    assert decision.rule == ('rule 1 "r1"' if matches else "default")


def test_groups_unknown_never_escapes_a_refusal() -> None:
    engine = policy(
        [{"name": "banned", "groups": ["kc:/banned"], "allow": False}, {"name": "all"}],
        default="allow",
    )
    unknown = who(groups=(), groups_complete=False)
    for decision in (engine.sign_in(unknown), engine.room(unknown, "r")):
        assert (decision.allowed, decision.rule) == (False, 'rule 1 "banned"')
    assert engine.room(who(), "r").rule == 'rule 2 "all"'


def test_groups_unknown_is_reported_in_the_trail() -> None:
    engine = policy([{"name": "staff", "groups": ["kc:/staff"]}], default="deny")
    decision = engine.room(who(groups=(), groups_complete=False), "r")
    assert "groups unknown" in decision.trail[0]


def test_unverified_email_is_reported_in_the_trail() -> None:
    engine = policy([{"name": "corp", "email_domains": ["corp.example"]}], default="deny")
    assert "not verified" in engine.room(who(email_verified=False), "r").trail[0]


def test_untrusted_email_domain_is_explained_in_the_trail() -> None:
    engine = policy([{"name": "corp", "email_domains": ["corp.example"]}], default="deny")
    step = engine.room(who(idp="google"), "r").trail[0]
    assert "IdP google is not trusted for it" in step
    assert "IdP kc trusted for it" in engine.room(who(), "r").trail[0]


def test_policy_without_trust_map_never_counts_a_domain() -> None:
    """Fail closed: an engine built without the IdPs' e-mail trust believes no domain."""
    engine = Policy(
        PolicySettings.model_validate(
            {"default": "deny", "rules": [{"name": "corp", "email_domains": ["corp.example"]}]}
        )
    )
    assert not engine.room(who(), "r").allowed


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"email_domains": ["corp.example"]}, []),
        ({"email_domains": ["corp.example"], "idps": ["kc"]}, []),
        ({"email_domains": ["corp.example"], "idps": ["google"]}, ["no IdP of this rule"]),
        ({"email_domains": ["gmail.example"]}, ["no IdP is trusted for 'gmail.example'"]),
    ],
    ids=["owned", "owned-by-rule-idp", "owned-by-other-idp", "owned-by-none"],
)
def test_problems_refuse_email_domains_no_idp_is_trusted_for(
    rule: dict[str, Any], expected: list[str]
) -> None:
    settings = PolicySettings.model_validate({"rules": [{"name": "r", **rule}]})
    found = settings.problems(TRUST, wildcard_allowed=False, email_trust=TRUST)
    assert len(found) == len(expected)
    for line, text in zip(found, expected, strict=True):
        assert line.startswith("policy.rules[0] (r).email_domains: ") and text in line


def test_tenant_rule_without_idps_is_a_warning() -> None:
    loose = PolicySettings.model_validate({"rules": [{"name": "t", "tenants": ["acme"]}]})
    pinned = PolicySettings.model_validate(
        {"rules": [{"name": "t", "tenants": ["acme"], "idps": ["kc"]}]}
    )
    assert loose.warnings() == [
        "policy.rules[0] (t).tenants: any IdP can assert a tenant value; name the IdPs whose "
        "tenants count in this rule's idps"
    ]
    assert pinned.warnings() == []


STAFF_PARTNERS = [
    {
        "name": "staff-moderators",
        "groups": ["kc:/staff"],
        "affiliation": "owner",
        "features": {"recording": True, "livestreaming": True},
    },
    {
        "name": "partners",
        "groups": ["kc:/partners"],
        "rooms": ["partner-*"],
        "affiliation": "member",
    },
    {
        "name": "no-lobby-for-contractors",
        "groups": ["kc:/contractors"],
        "rooms": ["lobby"],
        "allow": False,
    },
    {"name": "contractors", "groups": ["kc:/contractors"], "affiliation": "member"},
    {"name": "everyone-else", "allow": False},
]


@pytest.mark.parametrize(
    ("groups", "room", "sign_in", "room_allowed", "rule", "affiliation"),
    [
        (("kc:/staff",), "anything", True, True, 'rule 1 "staff-moderators"', "owner"),
        (("kc:/partners",), "partner-sync", True, True, 'rule 2 "partners"', "member"),
        (("kc:/partners",), "standup", True, False, 'rule 5 "everyone-else"', None),
        (("kc:/contractors",), "lobby", True, False, 'rule 3 "no-lobby-for-contractors"', None),
        (("kc:/contractors",), "standup", True, True, 'rule 4 "contractors"', "member"),
        ((), "standup", False, False, 'rule 5 "everyone-else"', None),
        (
            ("kc:/staff", "kc:/partners"),
            "partner-x",
            True,
            True,
            'rule 1 "staff-moderators"',
            "owner",
        ),
    ],
    ids=[
        "staff",
        "partner-in-partner-room",
        "partner-elsewhere",
        "room-refusal-rule",
        "contractor",
        "outsider",
        "first-match-wins",
    ],
)
def test_staff_partners_everyone_else(
    groups: tuple[str, ...],
    room: str,
    sign_in: bool,
    room_allowed: bool,
    rule: str,
    affiliation: str | None,
) -> None:
    engine = policy(STAFF_PARTNERS, default="deny")
    identity = who(groups=groups)
    assert engine.sign_in(identity).allowed is sign_in
    decision = engine.room(identity, room)
    assert (decision.allowed, decision.rule, decision.affiliation) == (
        room_allowed,
        rule,
        affiliation,
    )
    if affiliation:
        assert decision.moderator is (affiliation == "owner")


def test_sign_in_names_the_rule_and_why() -> None:
    engine = policy(STAFF_PARTNERS, default="deny")
    decision = engine.sign_in(who(groups=("kc:/staff",)))
    assert decision.reason == 'rule 1 "staff-moderators" matched group kc:/staff'
    refused = engine.sign_in(who(groups=()))
    assert refused.reason.startswith('rule 5 "everyone-else" matched')
    assert (
        refused.trail[2] == 'rule 3 "no-lobby-for-contractors": skipped at sign-in '
        "(refuses rooms, not people)"
    )


@pytest.mark.parametrize(
    ("default", "allowed"), [("allow", True), ("deny", False)], ids=["allow", "deny"]
)
def test_default_when_nothing_matches(default: str, allowed: bool) -> None:
    engine = policy([{"name": "x", "idps": ["other"]}], default=default)
    for decision in (engine.sign_in(who()), engine.room(who(), "r")):
        assert (decision.allowed, decision.rule) == (allowed, "default")


def test_layers_defaults_idp_defaults_rule() -> None:
    engine = policy(
        [{"name": "r", "groups": ["kc:/staff"], "features": {"recording": True}}],
        defaults={
            "affiliation": "member",
            "features": {"recording": False},
            "token_lifetime_seconds": 120,
        },
        idp_defaults={"kc": {"affiliation": "moderator", "room_scope": "any"}},
    )
    decision = engine.room(who(), "r")
    assert decision.affiliation == "moderator"  # idp default over global default
    assert decision.moderator is True  # derived from the affiliation
    assert decision.features == {"recording": True}  # the rule over both
    assert decision.wildcard_room is True
    assert decision.token_lifetime_seconds == 120
    other_idp = engine.room(who(idp="g", groups=()), "r")
    assert (other_idp.rule, other_idp.affiliation, other_idp.wildcard_room) == (
        "default",
        "member",
        False,
    )


@pytest.mark.parametrize(
    ("affiliation", "moderator"),
    [("owner", False), ("moderator", False), ("member", True)],
)
def test_affiliation_and_moderator_that_contradict_are_refused(
    affiliation: str, moderator: bool
) -> None:
    """mod_token_affiliation would make the person a moderator anyway (or the UI would lie)."""
    with pytest.raises(ValidationError, match="contradict each other"):
        policy([{"name": "r", "affiliation": affiliation, "moderator": moderator}])


@pytest.mark.parametrize(
    ("layers", "claims"),
    [
        pytest.param(
            {"defaults": {"affiliation": "owner"}, "rule": {"moderator": False}},
            {"moderator": False},
            id="rule_moderator_false_drops_default_owner",
        ),
        pytest.param(
            {"defaults": {"moderator": True}, "rule": {"affiliation": "member"}},
            {"affiliation": "member", "moderator": False},
            id="rule_member_overrides_default_moderator",
        ),
        pytest.param(
            {"defaults": {"affiliation": "member"}, "rule": {"moderator": True}},
            {"moderator": True},
            id="rule_moderator_true_over_default_member",
        ),
        pytest.param(
            {"defaults": {"affiliation": "owner", "moderator": True}, "rule": {}},
            {"affiliation": "owner", "moderator": True},
            id="consistent_pair_kept",
        ),
    ],
)
def test_moderator_rights_come_from_one_layer(
    layers: dict[str, dict[str, Any]], claims: dict[str, Any]
) -> None:
    engine = policy([{"name": "r", **layers["rule"]}], defaults=layers["defaults"])
    decision = engine.room(who(), "r")
    assert decision.user_claims() == claims
    # What Jitsi's mod_token_affiliation makes of them agrees with the moderator flag.
    affiliation = claims.get("affiliation")
    owner = affiliation in ("owner", "moderator") or claims.get("moderator") is True
    assert owner == decision.moderator


WILDCARD = [
    # (id, rules, room asked for, expected token room scope)
    ("no_room_rules", [{"name": "all", "room_scope": "any"}], "standup", "*"),
    (
        "earlier_refusal_of_rooms",
        [
            {"name": "secret", "allow": False, "rooms": ["secret-*"]},
            {"name": "all", "room_scope": "any"},
        ],
        "standup",
        "room",
    ),
    (
        "earlier_refusal_for_another_idp_only",
        [
            {"name": "secret", "allow": False, "idps": ["g"], "rooms": ["secret-*"]},
            {"name": "all", "room_scope": "any"},
        ],
        "standup",
        "*",
    ),
    (
        "earlier_room_rule_with_other_rights",
        [
            {"name": "lobby", "rooms": ["lobby-*"], "affiliation": "member"},
            {"name": "all", "room_scope": "any", "affiliation": "owner"},
        ],
        "standup",
        "room",
    ),
    (
        "deciding_rule_names_rooms",
        [{"name": "team", "rooms": ["team-*"], "room_scope": "any"}],
        "team-a",
        "room",
    ),
    (
        "later_refusal_never_reached",
        [
            {"name": "all", "room_scope": "any"},
            {"name": "secret", "allow": False, "rooms": ["secret-*"]},
        ],
        "standup",
        "*",
    ),
]


@pytest.mark.parametrize(
    ("rules", "room", "scope"), [w[1:] for w in WILDCARD], ids=[w[0] for w in WILDCARD]
)
def test_wildcard_token_only_where_no_room_is_decided_differently(
    rules: list[dict[str, Any]], room: str, scope: str
) -> None:
    engine = policy(rules)
    decision = engine.room(who(), room)
    assert decision.allowed
    assert decision.wildcard_room is (scope == "*"), decision.scope
    assert decision.scope.startswith("every room" if scope == "*" else "this room only")
    if decision.wildcard_room:
        # The property a * token must have: every room gets the same decision.
        for other in ("secret-x", "lobby-1", "team-a", "standup", "board"):
            again = engine.room(who(), other)
            assert again.allowed and again.rule == decision.rule, other


def test_refusal_carries_no_token_settings() -> None:
    engine = policy([{"name": "no", "allow": False, "affiliation": "owner"}])
    decision = engine.room(who(), "r")
    assert (decision.allowed, decision.affiliation, decision.user_claims()) == (False, None, {})


def test_guest_rooms() -> None:
    engine = policy([], guest_rooms=["lobby-*"])
    assert engine.guest_allowed("Lobby-1") and not engine.guest_allowed("standup")


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"rules": [{"name": "a", "idps": ["nope"]}]}, "policy.rules[0] (a).idps: unknown IdP id"),
        (
            {"rules": [{"name": "a", "groups": ["staff"]}]},
            "policy.rules[0] (a).groups: 'staff' must start with a configured IdP id",
        ),
        ({"rules": [{"name": "a", "roles": ["x:admin"]}]}, "policy.rules[0] (a).roles"),
        ({"idp_defaults": {"nope": {}}}, "policy.idp_defaults.nope: unknown IdP id"),
        (
            {"rules": [{"name": "a", "room_scope": "any"}]},
            "room_scope: 'any' needs jitsi.room_wildcard",
        ),
        ({"rules": [{"name": "a"}, {"name": "a"}]}, "rule name 'a' is used twice"),
        ({"guest_rooms": ["Lobby/*"]}, "policy.guest_rooms[0]: malformed room pattern"),
    ],
    ids=[
        "unknown-idp",
        "group-not-namespaced",
        "role-of-unknown-idp",
        "idp-defaults-unknown",
        "wildcard-not-enabled",
        "duplicate-name",
        "bad-guest-pattern",
    ],
)
def test_problems_name_rule_and_field(settings: dict[str, Any], problem: str) -> None:
    problems = PolicySettings.model_validate(settings).problems(["kc", "g"], False)
    assert any(problem in p for p in problems), problems


def test_current_jitsi_features_pass_and_unknown_ones_only_warn() -> None:
    """Jitsi's list grows: a name the gateway does not know yet is passed on, with a warning."""
    features = {"moderation": True, "live-translation": True, "name-readonly": True}
    known = PolicySettings.model_validate({"defaults": {"features": features}})
    assert known.problems(["kc"], False) == [] and known.warnings() == []
    newer = PolicySettings.model_validate(
        {"rules": [{"name": "r", "features": {"holograms": True}}]}
    )
    assert newer.problems(["kc"], False) == []
    [warning] = newer.warnings()
    assert warning.startswith("policy.rules[0] (r).features: 'holograms' is not a Jitsi feature")
    assert Policy(newer).room(who(), "x").features == {"holograms": True}


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "a", "rooms": ["Team/*"]},
        {"name": "a", "affiliation": "admin"},
        {"name": "a", "features": {"Recording!": True}},
        {"name": "a", "unknown_key": 1},
        {"name": "a", "token_lifetime_seconds": 5},
        {"name": "a", "email_domains": ["@@@"]},
        {"name": "a", "email_domains": ["user@corp.example"]},
    ],
    ids=[
        "malformed-room-pattern",
        "bad-affiliation",
        "bad-feature-name",
        "typo-key",
        "lifetime-too-short",
        "email-domain-garbage",
        "email-address-not-domain",
    ],
)
def test_malformed_rules_are_rejected(rule: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PolicySettings.model_validate({"rules": [rule]})


@pytest.mark.parametrize(
    ("url_tenant", "allowed"),
    [("acme", True), ("ACME", True), ("globex", False), (None, False)],
    ids=["own-tenant", "case", "other-tenant", "no-tenant"],
)
def test_url_tenants_keep_people_in_their_tenant(url_tenant: str | None, allowed: bool) -> None:
    engine = policy(
        [{"name": "acme-people", "tenants": ["acme"], "url_tenants": ["acme"]}], default="deny"
    )
    decision = engine.room(who(tenant="acme"), "r", url_tenant)
    assert decision.allowed is allowed


def test_url_tenant_refusal_does_not_refuse_sign_in() -> None:
    engine = policy([{"name": "no-globex", "url_tenants": ["globex"], "allow": False}])
    assert engine.sign_in(who()).allowed is True
    assert engine.room(who(), "r", "globex").allowed is False
    assert engine.room(who(), "r", None).allowed is True
