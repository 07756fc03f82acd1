"""Unit tests for adapters.generic: claims (+ userinfo) -> Identity, claim paths configurable."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.base import AdapterError, Identity
from adapters.generic import GenericAdapter, GenericOptions

ISS = "https://idp.example.org/realms/staff"


def adapter(**options: Any) -> GenericAdapter:
    return GenericAdapter("corp", GenericOptions(**options))


def claims(**extra: Any) -> dict[str, Any]:
    return {"iss": ISS, "sub": "alice-sub", "aud": "jitsi", **extra}


def test_identity_fields_from_claims() -> None:
    identity = adapter().identity(
        claims(
            preferred_username="alice",
            name="Alice Example",
            email="alice@example.org",
            email_verified=True,
            groups=["staff", "admins"],
            roles=["moderator"],
            picture="https://idp.example.org/a.png",
        ),
        None,
    )
    assert identity == Identity(
        idp="corp",
        issuer=ISS,
        subject="alice-sub",
        username="alice",
        name="Alice Example",
        email="alice@example.org",
        email_verified=True,
        groups=("corp:staff", "corp:admins"),
        roles=("corp:moderator",),
        picture="https://idp.example.org/a.png",
    )
    assert identity.user_id == "corp:alice-sub"


@pytest.mark.parametrize(
    ("options", "extra", "attribute", "expected"),
    [
        pytest.param(
            {"groups": "realm_access.roles"},
            {"realm_access": {"roles": ["admin", "user"]}},
            "groups",
            ("corp:admin", "corp:user"),
            id="groups_from_dotted_path",
        ),
        pytest.param(
            {"roles": "resource_access.jitsi.roles"},
            {"resource_access": {"jitsi": {"roles": ["moderator"]}}},
            "roles",
            ("corp:moderator",),
            id="roles_from_deep_path",
        ),
        pytest.param(
            {"groups": "realm_access.roles"},
            {"realm_access": "not-a-mapping"},
            "groups",
            (),
            id="path_through_a_string_is_absent",
        ),
        pytest.param(
            {"subject": "ext.oid"},
            {"ext": {"oid": "object-id"}},
            "subject",
            "object-id",
            id="subject_from_dotted_path",
        ),
        pytest.param(
            {"email": "contact.mail"},
            {"contact": {"mail": " a@example.org "}},
            "email",
            "a@example.org",
            id="email_from_path_trimmed",
        ),
        pytest.param(
            {"tenant": "org.slug"}, {"org": {"slug": "acme"}}, "tenant", "acme", id="tenant_path"
        ),
        pytest.param({}, {"org": "acme"}, "tenant", None, id="tenant_off_by_default"),
        pytest.param({"groups": None}, {"groups": ["staff"]}, "groups", (), id="groups_disabled"),
        pytest.param({}, {"groups": "staff"}, "groups", ("corp:staff",), id="single_string_group"),
        pytest.param(
            {}, {"groups": ["a", 7, None, "b"]}, "groups", ("corp:a", "corp:b"), id="non_strings"
        ),
        pytest.param({}, {"groups": {"a": 1}}, "groups", (), id="groups_mapping_ignored"),
        pytest.param(
            {"extra_claims": ("hd", "department")},
            {"hd": "example.org", "secret_claim": "x"},
            "extra",
            {"hd": "example.org"},
            id="extra_claims_allow_listed",
        ),
        pytest.param({}, {"picture": "   "}, "picture", None, id="blank_picture_absent"),
    ],
)
def test_claim_paths(
    options: dict[str, Any], extra: dict[str, Any], attribute: str, expected: Any
) -> None:
    identity = adapter(**options).identity(claims(**extra), None)
    assert getattr(identity, attribute) == expected


@pytest.mark.parametrize(
    ("extra", "name", "username"),
    [
        pytest.param(
            {"name": "Alice Example", "preferred_username": "alice"},
            "Alice Example",
            "alice",
            id="name_claim",
        ),
        pytest.param(
            {"name": "   ", "preferred_username": "alice"}, "alice", "alice", id="blank_name"
        ),
        pytest.param({"preferred_username": "alice"}, "alice", "alice", id="preferred_username"),
        pytest.param(
            {"given_name": "Alice", "family_name": "Example", "email": "al@example.org"},
            "Alice Example",
            "al@example.org",
            id="given_and_family",
        ),
        pytest.param({"given_name": "Alice"}, "Alice", "alice-sub", id="given_only"),
        pytest.param(
            {"email": "al.ice@example.org"}, "al.ice", "al.ice@example.org", id="email_local_part"
        ),
        pytest.param({}, "alice-sub", "alice-sub", id="username_falls_back_to_sub"),
    ],
)
def test_name_fallbacks(extra: dict[str, Any], name: str, username: str) -> None:
    """name -> preferred_username -> given+family -> e-mail local part -> username."""
    identity = adapter().identity(claims(**extra), None)
    assert (identity.name, identity.username) == (name, username)


def test_name_and_username_paths_configurable() -> None:
    identity = adapter(name=("profile.display",), username=("upn",)).identity(
        claims(profile={"display": "A. Example"}, upn="alice@corp", name="ignored"), None
    )
    assert (identity.name, identity.username) == ("A. Example", "alice@corp")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(True, True, id="true"),
        pytest.param("true", True, id="string_true_as_cognito_sends"),
        pytest.param(False, False, id="false"),
        pytest.param("false", False, id="string_false"),
        pytest.param("True", False, id="string_capitalised"),
        pytest.param(1, False, id="integer_one"),
        pytest.param("yes", False, id="string_yes"),
        pytest.param(None, False, id="null"),
    ],
)
def test_email_verified_only_when_asserted(value: Any, expected: bool) -> None:
    identity = adapter().identity(claims(email="a@example.org", email_verified=value), None)
    assert identity.email_verified is expected


def test_email_verified_absent_is_false() -> None:
    identity = adapter().identity(claims(email="a@example.org"), None)
    assert identity.email_verified is False


def test_groups_namespaced_and_deduplicated() -> None:
    identity = adapter().identity(claims(groups=["staff", "staff", "", "admins", "staff"]), None)
    assert identity.groups == ("corp:staff", "corp:admins")


def test_same_group_name_differs_between_idps() -> None:
    a = GenericAdapter("corp", GenericOptions()).identity(claims(groups=["staff"]), None)
    b = GenericAdapter("partner", GenericOptions()).identity(claims(groups=["staff"]), None)
    assert set(a.groups).isdisjoint(b.groups)


@pytest.mark.parametrize(
    "sub",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param(12345, id="number"),
        pytest.param(["a"], id="list"),
    ],
)
def test_missing_subject_refused(sub: Any) -> None:
    data = claims()
    if sub is None:
        del data["sub"]
    else:
        data["sub"] = sub
    with pytest.raises(AdapterError) as info:
        adapter().identity(data, None)
    assert info.value.reason == "claims_invalid"
    assert "'sub'" in str(info.value)


def test_userinfo_merged_but_id_token_wins() -> None:
    identity = adapter().identity(
        claims(email="token@example.org", email_verified=True),
        {
            "sub": "alice-sub",
            "email": "userinfo@example.org",
            "email_verified": False,
            "name": "From Userinfo",
            "groups": ["from-userinfo"],
        },
    )
    assert identity.email == "token@example.org"
    assert identity.email_verified is True
    assert identity.name == "From Userinfo"
    assert identity.groups == ("corp:from-userinfo",)


def test_userinfo_cannot_change_subject_or_issuer() -> None:
    identity = adapter().identity(
        claims(), {"sub": "mallory-sub", "iss": "https://evil.example.org"}
    )
    assert (identity.subject, identity.issuer) == ("alice-sub", ISS)


def test_options_reject_typos() -> None:
    with pytest.raises(ValueError, match="subjekt"):
        GenericOptions(subjekt="oid")  # type: ignore[call-arg]
