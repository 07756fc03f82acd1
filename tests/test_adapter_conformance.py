"""The conformance kit (adapters.conformance) run against every built-in adapter, and
shown to catch deliberately broken adapters: each broken row must fail the named check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from adapters.azure import AzureAdapter
from adapters.base import (
    AccessDenied,
    Adapter,
    AdapterError,
    Claims,
    Identity,
    subject_problem,
)
from adapters.conformance import AdapterKit, BadConfig, Check, Good, Refused, check_identity
from adapters.generic import GenericAdapter
from adapters.google import GoogleAdapter
from adapters.keycloak import KeycloakAdapter

TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TID = "00000000-0000-4000-8000-000000000000"
TOKEN = {"aud": "jitsi", "exp": 2_000_000_000, "iat": 1_700_000_000, "nonce": "n"}

GENERIC = AdapterKit(
    GenericAdapter,
    entry_point="generic",
    issuer="https://idp.example.org",
    good=[
        Good(
            "full",
            {
                **TOKEN,
                "iss": "https://idp.example.org",
                "sub": "u-1",
                "preferred_username": "ada",
                "name": "Ada Lovelace",
                "email": "ada@example.org",
                "email_verified": True,
                "groups": ["staff", "staff", "ops"],
                "roles": ["admin"],
                "department": "R&D",
            },
            options={"extra_claims": ["department"]},
            expect={
                "subject": "u-1",
                "username": "ada",
                "email_verified": True,
                "groups": ["conformance:staff", "conformance:ops"],
                "roles": ["conformance:admin"],
                "extra": {"department": "R&D"},
            },
        ),
        Good(
            "userinfo-fills-gaps",
            {**TOKEN, "iss": "https://idp.example.org", "sub": "u-2", "email": "t@x.example"},
            userinfo={"sub": "u-2", "email": "u@x.example", "given_name": "Bo", "groups": "g"},
            expect={"email": "t@x.example", "name": "Bo", "groups": ["conformance:g"]},
        ),
    ],
    refused=[
        Refused(
            "no-configured-subject",
            {**TOKEN, "iss": "https://idp.example.org", "sub": "pairwise"},
            AdapterError,
            options={"subject": "oid"},
            reason="claims_invalid",
        ),
    ],
    bad_options=[{"username": 5}, {"groups": ["a"]}],
)

KEYCLOAK = AdapterKit(
    KeycloakAdapter,
    entry_point="keycloak",
    issuer="https://kc.example/realms/staff",
    good=[
        Good(
            "roles-and-groups",
            {
                **TOKEN,
                "iss": "https://kc.example/realms/staff",
                "sub": "u1",
                "azp": "jitsi",
                "email": "a@kc.example",
                "email_verified": False,
                "realm_access": {"roles": ["staff"]},
                "resource_access": {"jitsi": {"roles": ["mod"]}, "other": {"roles": ["no"]}},
                "groups": ["/a/b", "flat"],
            },
            expect={
                "tenant": "staff",
                "roles": ["conformance:staff", "conformance:jitsi:mod"],
                "groups": ["conformance:/a/b", "conformance:b", "conformance:flat"],
                "email_verified": False,
            },
        ),
        Good(
            "legacy-issuer",
            {**TOKEN, "iss": "https://kc.example/auth/realms/old", "sub": "u2"},
            issuer="https://kc.example/auth/realms/old",
            expect={"tenant": "old", "roles": [], "groups": []},
        ),
    ],
    bad_options=[{"realm_roles": "sometimes"}],
)

GOOGLE = AdapterKit(
    GoogleAdapter,
    entry_point="google",
    issuer="https://accounts.google.com",
    options={"allowed_domains": ["a.example"]},
    good=[
        Good(
            "workspace",
            {
                **TOKEN,
                "iss": "https://accounts.google.com",
                "sub": "1",
                "hd": "a.example",
                "email": "x@a.example",
                "email_verified": True,
            },
            expect={"tenant": "a.example", "email_verified": True, "groups": []},
        ),
        Good(
            "bare-issuer-spelling",
            {**TOKEN, "iss": "accounts.google.com", "sub": "2", "hd": "A.Example"},
            expect={"issuer": "accounts.google.com"},
        ),
    ],
    refused=[
        Refused(
            "other-domain",
            {**TOKEN, "iss": "https://accounts.google.com", "sub": "3", "hd": "b.example"},
            AccessDenied,
            reason="domain_not_allowed",
        ),
        Refused(
            "email-suffix-is-not-hd",
            {**TOKEN, "iss": "https://accounts.google.com", "sub": "4", "email": "x@a.example"},
            AccessDenied,
            reason="domain_not_allowed",
        ),
    ],
    bad_options=[{"allowed_domains": "a.example,b.example"}],
)

AZURE_TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"
AZURE_ISS = f"https://login.microsoftonline.com/{TID}/v2.0"
AZURE_CLAIMS = {
    **TOKEN,
    "iss": AZURE_ISS,
    "sub": "pairwise",
    "tid": TID,
    "oid": "o-1",
    "preferred_username": "ada@contoso.example",
    "email": "ada@contoso.example",
    "groups": ["g-1"],
    "roles": ["Jitsi.Moderator"],
}
AZURE = AdapterKit(
    AzureAdapter,
    entry_point="azure",
    issuer=AZURE_TEMPLATE,
    options={"allowed_tenants": [TID]},
    good=[
        Good(
            "tenant-member",
            AZURE_CLAIMS,
            expect={
                "subject": "o-1",
                "tenant": TID,
                "email_verified": False,
                "groups": ["conformance:g-1"],
                "roles": ["conformance:Jitsi.Moderator"],
            },
        ),
        Good(
            "overage-resolved-through-graph",
            {**AZURE_CLAIMS, "groups": None, "_claim_names": {"groups": "src1"}},
            options={"allowed_tenants": [TID], "graph_groups": True},
            expect={"groups": [], "groups_complete": False},
        ),
    ],
    refused=[
        Refused("tid-not-a-guid", {**AZURE_CLAIMS, "tid": "../evil"}, AdapterError),
        Refused(
            "other-tenant",
            {**AZURE_CLAIMS, "tid": OTHER_TID},
            AccessDenied,
            reason="tenant_not_allowed",
        ),
    ],
    bad_options=[{"trust_email": "perhaps"}],
    bad_config=[
        BadConfig(
            "template-without-allowed-tenants",
            "idps[0].options.allowed_tenants: required",
            options={},
        )
    ],
)

BUILT_IN = {"generic": GENERIC, "keycloak": KEYCLOAK, "google": GOOGLE, "azure": AZURE}


def all_checks() -> list[Any]:
    return [
        pytest.param(check, id=f"{name}-{check.id}")
        for name, kit in BUILT_IN.items()
        for check in kit.checks()
    ]


@pytest.mark.parametrize("check", all_checks())
def test_built_in_adapters_conform(check: Check) -> None:
    check()


def test_every_built_in_adapter_has_a_kit() -> None:
    from gateway.plugins import discover

    builtin = {
        i.name for i in discover().adapters.values() if i.distribution == "jitsi-oidc-gateway"
    }
    assert builtin == set(BUILT_IN)


def test_pytest_helper_makes_one_test_per_check() -> None:
    test = GENERIC.pytest_test()
    (mark,) = test.pytestmark
    assert [c.id for c in mark.args[1]] == [c.id for c in GENERIC.checks()]
    assert mark.kwargs["ids"][:3] == ["entry-point", "class", "options"]


def test_kit_by_entry_point_name_resolves_the_class() -> None:
    kit = AdapterKit("keycloak", good=KEYCLOAK.good, issuer=KEYCLOAK.issuer)
    assert kit.adapter_class is KeycloakAdapter
    kit.check_all()


# ---- the kit catches broken adapters ---------------------------------------------------

BASE = {**TOKEN, "iss": "https://idp.example.org", "sub": "u-1", "nickname": "ada"}
GOOD = [Good("base", {**BASE, "email": "a@x.example", "email_verified": True, "groups": ["g"]})]


class Careful(Adapter):
    """A correct minimal adapter: the broken ones below each change one thing."""

    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        sub, nick = claims.get("sub"), claims.get("nickname")
        if subject_problem(sub) or not isinstance(nick, str) or not nick.strip():
            raise AdapterError("claims_invalid", "sub or nickname missing or malformed")
        groups = claims.get("groups")
        if groups == ["banned"]:
            raise AccessDenied("banned", "banned group")
        email = claims.get("email")
        return Identity(
            idp=self.idp_id,
            issuer=str(claims["iss"]),
            subject=sub,
            username=nick,
            name=nick,
            email=email if isinstance(email, str) and email.strip() else None,
            email_verified=claims.get("email_verified") is True,
            groups=self.namespaced([g for g in groups if isinstance(g, str)])
            if isinstance(groups, list)
            else (),
        )


class LeaksKeyError(Careful):
    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        claims["nickname"]  # the bug: a missing claim is a KeyError
        return super().identity(claims, userinfo)


class IteratesGroupsBlindly(Careful):
    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        base = super().identity(claims, userinfo)
        return replace(base, groups=self.namespaced(list(claims.get("groups", []))))


class DefaultsEmailVerified(Careful):
    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        verified = claims.get("email_verified", True)
        return replace(super().identity(claims, userinfo), email_verified=verified is True)


class GroupsNotNamespaced(Careful):
    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        base = super().identity(claims, userinfo)
        return replace(base, groups=tuple(g.split(":", 1)[1] for g in base.groups))


class GroupsAsList(Careful):
    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        base = super().identity(claims, userinfo)
        return replace(base, groups=list(base.groups))  # type: ignore[arg-type]


class IssuerFromElsewhere(Careful):
    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        return replace(super().identity(claims, userinfo), issuer="https://configured.example")


class DeniesAsClaimsInvalid(Careful):
    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        try:
            return super().identity(claims, userinfo)
        except AccessDenied as exc:
            raise AdapterError(exc.reason, str(exc)) from None


class MutatesClaims(Careful):
    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        claims.pop("email", None)  # type: ignore[attr-defined]
        return super().identity(claims, userinfo)


class UnstorableExtra(Careful):
    def identity(self, claims: Claims, userinfo: Claims | None) -> Identity:
        return replace(super().identity(claims, userinfo), extra={"seen": {1, 2}})


class OverridesState(Careful):
    def authorization_params(self, login_hint: str | None) -> Mapping[str, str]:
        return {"prompt": "login", "state": "fixed"}


class HalfAResolver(Careful):
    """Only resolve_issuer: not an IssuerResolver, so the gateway would ignore it."""

    def resolve_issuer(self, configured: str, claims: Claims) -> str:
        return configured


class AcceptsAnyIssuerParameter(Careful):
    def resolve_issuer(self, configured: str, claims: Claims) -> str:
        return configured

    def accepts_issuer(self, configured: str, value: str) -> bool:
        return True


class TrustsAnyIssuer(Careful):
    def resolve_issuer(self, configured: str, claims: Claims) -> str:
        return str(claims.get("iss"))

    def accepts_issuer(self, configured: str, value: str) -> bool:
        return value == configured


class EnrichChangesSubject(Careful):
    async def enrich(self, identity: Identity, access_token: str | None, http: Any) -> Identity:
        return replace(identity, subject="someone-else")


class EnrichCrashesOnOddJson(Careful):
    async def enrich(self, identity: Identity, access_token: str | None, http: Any) -> Identity:
        if access_token is None:
            return identity
        page = await http.get_json("https://api.example/groups")
        return replace(identity, groups=self.namespaced([g["id"] for g in page["value"]]))


class SyncEnrich(Careful):
    def enrich(self, identity: Identity, access_token: str | None, http: Any) -> Identity:
        return identity


class LooseOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    allowed: tuple[str, ...] = ()


class AllowsAnyOption(Careful):
    Options = LooseOptions


class Nested(BaseModel):
    url: str = "https://x.example"


class NestedOptions(BaseModel):
    graph: Nested = Nested()


class LooseNestedOptions(Careful):
    Options = NestedOptions


class Abstract(Adapter):
    pass


def failure(adapter: Any, check: str, **kit: Any) -> str:
    """The message of ``check`` run against ``adapter`` (the test fails if it passes)."""
    kit.setdefault("good", GOOD)
    checks = {c.id: c for c in AdapterKit(adapter, **kit).checks()}
    with pytest.raises(AssertionError) as info:
        checks[check]()
    return str(info.value)


def test_the_careful_adapter_passes_everything_but_registration() -> None:
    kit = AdapterKit(
        Careful,
        good=GOOD,
        refused=[Refused("banned", {**BASE, "groups": ["banned"]}, AccessDenied)],
    )
    for check in kit.checks():
        if check.id != "entry-point":
            check()


@pytest.mark.parametrize(
    ("adapter", "check", "message", "kit"),
    [
        (Careful, "entry-point", "is not registered in the 'jitsi_oidc_gateway.adapters'", {}),
        (
            Careful,
            "entry-point",
            "loads adapters.generic:GenericAdapter",
            {"entry_point": "generic"},
        ),
        ("no-such-adapter", "entry-point", "no such entry point", {}),
        (Abstract, "class", "is abstract", {}),
        (LeaksKeyError, "robust:base", "claims['nickname'] missing: KeyError", {}),
        (IteratesGroupsBlindly, "robust:base", "claims['groups'] int: TypeError", {}),
        (
            DefaultsEmailVerified,
            "email-verified-not-defaulted:base",
            "never default it to true",
            {},
        ),
        (GroupsNotNamespaced, "good:base", "namespaced 'conformance:'", {}),
        (GroupsAsList, "good:base", "groups must be a tuple, got list", {}),
        (IssuerFromElsewhere, "good:base", "issuer is 'https://configured.example'", {}),
        (MutatesClaims, "good:base", "changed the claims", {}),
        (UnstorableExtra, "good:base", "extra['seen'] holds a set", {}),
        (
            Careful,
            "good:base",
            "groups is ('conformance:g',), expected ['h']",
            {"good": [Good("base", GOOD[0].claims, expect={"groups": ["h"]})]},
        ),
        (Careful, "good:base", "not the configured issuer", {"issuer": "https://other.example"}),
        (
            DeniesAsClaimsInvalid,
            "refused:banned",
            "expected AccessDenied, got AdapterError",
            {"refused": [Refused("banned", {**BASE, "groups": ["banned"]}, AccessDenied)]},
        ),
        (
            Careful,
            "refused:banned",
            "reason is 'banned', expected 'other'",
            {
                "refused": [
                    Refused("banned", {**BASE, "groups": ["banned"]}, AccessDenied, reason="other")
                ]
            },
        ),
        (
            LeaksKeyError,
            "refused:no-nick",
            "KeyError",
            {
                "refused": [
                    Refused(
                        "no-nick", {k: v for k, v in BASE.items() if k != "nickname"}, AdapterError
                    )
                ]
            },
        ),
        (
            Careful,
            "refused:ok",
            "got an Identity",
            {"refused": [Refused("ok", BASE, AdapterError)]},
        ),
        (OverridesState, "capability:authorization-params", "sets ['state']", {}),
        (TrustsAnyIssuer, "capability:resolve-issuer", "accepts that foreign issuer", {}),
        (HalfAResolver, "capability:resolve-issuer", "needs both", {}),
        (AcceptsAnyIssuerParameter, "capability:resolve-issuer", "accepts a foreign issuer", {}),
        (EnrichChangesSubject, "capability:enrich:base", "changed the person's key", {}),
        (EnrichCrashesOnOddJson, "capability:enrich:base", "null: TypeError", {}),
        (SyncEnrich, "capability:enrich:base", "enrich must be an async def", {}),
        (AllowsAnyOption, "options", "extra='allow'", {}),
        (LooseNestedOptions, "options", "does not forbid unknown keys", {}),
        (GenericAdapter, "bad-options:0", "was accepted", {"bad_options": [{"email": "mail"}]}),
        (
            AzureAdapter,
            "options",
            "reports problems for the kit's own options",
            {"issuer": AZURE_TEMPLATE, "good": AZURE.good},
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_the_kit_catches_a_broken_adapter(
    adapter: Any, check: str, message: str, kit: dict[str, Any]
) -> None:
    assert message in failure(adapter, check, **kit)


def test_typo_of_a_declared_option_is_refused_like_the_gateway() -> None:
    """The options check feeds ``allowed`` (a typo of ``allowed_x``) to the gateway's own
    validator: a model the gateway would not refuse it for would fail the check."""

    class Opts(BaseModel):
        allowed_x: tuple[str, ...] = ()

    class WithOpts(Careful):
        Options = Opts

    kit = AdapterKit(WithOpts, good=GOOD)
    checks = {c.id: c for c in kit.checks()}
    checks["options"]()  # the gateway refuses unknown keys even for a plain BaseModel


def test_check_all_lists_every_failure() -> None:
    with pytest.raises(AssertionError) as info:
        AdapterKit(GroupsAsList, good=GOOD).check_all()
    text = str(info.value)
    assert "[entry-point]" in text and "[good:base]" in text and "[robust:base]" in text


def test_check_identity_names_each_problem() -> None:
    bad = Identity(idp="x", issuer="", subject="s", username="u", name=" ", groups=("g",))
    with pytest.raises(AssertionError) as info:
        check_identity(bad, "conformance")
    text = str(info.value)
    for part in ("idp is 'x'", "issuer must be", "name must be", "namespaced 'conformance:'"):
        assert part in text


def test_kit_refuses_nonsense_cases() -> None:
    with pytest.raises(ValueError, match="at least one Good"):
        AdapterKit(Careful, good=[])
    with pytest.raises(ValueError, match="unique"):
        AdapterKit(Careful, good=[GOOD[0], GOOD[0]])
    with pytest.raises(ValueError, match="raises"):
        AdapterKit(Careful, good=GOOD, refused=[Refused("x", BASE, KeyError)])  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_enrich_check_runs_inside_an_event_loop() -> None:
    """Plugin suites are often async: the kit's sync checks still run enrich there."""
    checks = {c.id: c for c in AZURE.checks()}
    checks["capability:enrich:overage-resolved-through-graph"]()


def test_importing_the_kit_pulls_in_no_test_or_server_dependency() -> None:
    """Plugins import the kit from the installed gateway: no pytest, Tornado or MongoDB."""
    import subprocess
    import sys

    code = (
        "import sys, adapters.conformance; "
        "print(sorted(m for m in ('pytest', 'tornado', 'pymongo') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
