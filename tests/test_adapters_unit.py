"""Unit tests of the provider adapters' rules that the test OP cannot produce (Google's
issuer spellings, legacy Keycloak issuers), plus routing and issuer templates."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from adapters.azure import AzureAdapter, AzureOptions
from adapters.base import AccessDenied, AdapterError
from adapters.google import GoogleAdapter, GoogleOptions
from adapters.keycloak import KeycloakAdapter, KeycloakOptions
from gateway.routing import eligible_idps, idp_for_email

TID = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.mark.parametrize(
    ("configured", "token_iss", "accepted"),
    [
        ("https://accounts.google.com", "https://accounts.google.com", True),
        ("https://accounts.google.com", "accounts.google.com", True),
        ("accounts.google.com", "https://accounts.google.com", True),
        ("https://accounts.google.com", "https://evil.example", False),
        ("https://login.example", "accounts.google.com", False),
    ],
    ids=["https", "bare-spelling", "configured-bare", "other-issuer", "not-google-configured"],
)
def test_google_issuer_spellings(configured: str, token_iss: str, accepted: bool) -> None:
    adapter = GoogleAdapter("g", GoogleOptions())
    assert (adapter.resolve_issuer(configured, {"iss": token_iss}) == token_iss) is accepted


def test_google_hd_hint_only_for_a_single_domain() -> None:
    one = GoogleAdapter("g", GoogleOptions(allowed_domains=("a.example",)))
    two = GoogleAdapter("g", GoogleOptions(allowed_domains=("a.example", "b.example")))
    assert one.authorization_params(None) == {"hd": "a.example"}
    assert two.authorization_params(None) == {}


@pytest.mark.parametrize(
    ("claims", "allowed"),
    [
        ({"hd": "a.example"}, True),
        ({"hd": "A.Example"}, True),
        ({"hd": "b.example"}, False),
        ({}, False),
        ({"email": "x@a.example"}, False),
    ],
    ids=["hd-match", "hd-case", "hd-other", "no-hd", "email-suffix-only"],
)
def test_google_domain_comes_from_hd_only(claims: dict[str, Any], allowed: bool) -> None:
    adapter = GoogleAdapter("g", GoogleOptions(allowed_domains=("a.example",)))
    full = {"iss": "https://accounts.google.com", "sub": "1", **claims}
    if allowed:
        assert adapter.identity(full, None).tenant == claims["hd"]
    else:
        with pytest.raises(AccessDenied):
            adapter.identity(full, None)


@pytest.mark.parametrize(
    ("issuer", "realm"),
    [
        ("https://kc.example/realms/staff", "staff"),
        ("https://kc.example/auth/realms/legacy", "legacy"),
        ("https://kc.example/other", None),
    ],
    ids=["current", "legacy-auth-prefix", "not-keycloak-shaped"],
)
def test_keycloak_realm_from_issuer(issuer: str, realm: str | None) -> None:
    adapter = KeycloakAdapter("kc", KeycloakOptions())
    claims = {
        "iss": issuer,
        "sub": "u1",
        "azp": "web",
        "realm_access": {"roles": ["staff"]},
        "resource_access": {"web": {"roles": ["mod"]}, "other": {"roles": ["no"]}},
        "groups": ["/a/b", "flat"],
    }
    identity = adapter.identity(claims, None)
    assert identity.tenant == realm
    # Client roles default to the token's azp; other clients' roles are left out.
    assert identity.roles == ("kc:staff", "kc:web:mod")
    assert identity.groups == ("kc:/a/b", "kc:b", "kc:flat")


def azure(**options: Any) -> AzureAdapter:
    return AzureAdapter("entra", AzureOptions(**options))


def test_azure_template_needs_allowed_tenants() -> None:
    template = "https://login.microsoftonline.com/{tenantid}/v2.0"
    assert azure().check_config(template)
    assert azure(allowed_tenants=(TID,)).check_config(template) == []
    assert azure().check_config(f"https://login.microsoftonline.com/{TID}/v2.0") == []


@pytest.mark.parametrize(
    ("tid", "resolved"),
    [
        (TID, f"https://login.microsoftonline.com/{TID}/v2.0"),
        ("../evil", "https://login.microsoftonline.com/{tenantid}/v2.0"),
        (None, "https://login.microsoftonline.com/{tenantid}/v2.0"),
    ],
    ids=["guid", "not-a-guid", "missing"],
)
def test_azure_resolves_tenant_template(tid: str | None, resolved: str) -> None:
    template = "https://login.microsoftonline.com/{tenantid}/v2.0"
    assert azure().resolve_issuer(template, {"tid": tid}) == resolved


def test_azure_email_trust_and_overage() -> None:
    claims = {
        "iss": "x",
        "sub": "pairwise",
        "tid": TID,
        "oid": "o-1",
        "email": "e@x.example",
        "_claim_names": {"groups": "src1"},
    }
    untrusted = azure().identity(claims, None)
    assert (untrusted.subject, untrusted.email_verified) == ("o-1", False)
    assert (untrusted.groups, untrusted.groups_complete) == ((), False)
    assert azure(trust_email=True).identity(claims, None).email_verified is True
    with pytest.raises(AdapterError):
        azure().identity({**claims, "tid": "nope"}, None)
    with pytest.raises(AccessDenied):
        azure(allowed_tenants=("00000000-0000-4000-8000-000000000000",)).identity(claims, None)


@pytest.mark.parametrize(
    ("configured", "value", "ok"),
    [
        ("https://idp.example", "https://idp.example", True),
        ("https://idp.example", "https://idp.example/", False),
        ("https://l.example/{tenantid}/v2.0", f"https://l.example/{TID}/v2.0", True),
        ("https://l.example/{tenantid}/v2.0", "https://l.example/evil/v2.0", False),
        ("https://l.example/{tenantid}/v2.0", f"https://evil.example/{TID}/v2.0", False),
    ],
    ids=["equal", "trailing-slash", "template-guid", "template-not-guid", "template-other-host"],
)
def test_entra_accepts_issuer(configured: str, value: str, ok: bool) -> None:
    """The {tenantid} template is the Entra adapter's rule (RFC 9207 iss, logout tokens)."""
    assert azure().accepts_issuer(configured, value) is ok


def idp(id_: str, rooms: tuple[str, ...] = (), tenants: tuple[str, ...] = (), domains=()) -> Any:
    config = SimpleNamespace(rooms=rooms, tenants=tenants, email_domains=domains)
    return SimpleNamespace(id=id_, config=config)


ROUTING = [
    idp("a"),
    idp("b", domains=("b.example",)),
    idp("p", rooms=("partner-*",)),
    idp("t", tenants=("acme",)),
    idp("pt", rooms=("x-*",), tenants=("acme",)),
]


@pytest.mark.parametrize(
    ("room", "tenant", "expected"),
    [
        ("weekly", None, ["a", "b"]),
        ("Partner-Sync", None, ["p"]),
        ("weekly", "ACME", ["t"]),
        ("x-1", "acme", ["pt"]),
        ("x-1", None, []),
        ("weekly", "other", ["a", "b"]),
    ],
    ids=[
        "unpinned",
        "pinned-room",
        "pinned-tenant",
        "room-and-tenant",
        "room-pin-needs-tenant",
        "unknown-tenant",
    ],
)
def test_eligible_idps(room: str, tenant: str | None, expected: list[str]) -> None:
    assert [i.id for i in eligible_idps(ROUTING, room, tenant)] == expected


def test_idp_for_email() -> None:
    assert idp_for_email(ROUTING, " x@B.Example ").id == "b"
    assert idp_for_email(ROUTING, "x@c.example") is None
    assert idp_for_email(ROUTING, "not-an-email") is None
