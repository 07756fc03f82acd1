"""The GitLab adapter checked with the gateway's conformance kit, as any plugin would.

Run with the plugin installed next to the gateway (``pip install -e .`` here, or the
gateway's own suite, which pip-installs this package and runs this file):
``python -m pytest tests``. The kit checks the entry point, the options, the Identity, the
refusals and malformed claims; the tests below it are GitLab's own rules.
"""

from __future__ import annotations

from jog_gitlab import GitLabAdapter, GitLabOptions

from adapters.base import AccessDenied, AdapterError
from adapters.conformance import AdapterKit, BadConfig, Good, Refused

ISSUER = "https://gitlab.example"
TOKEN = {"iss": ISSUER, "aud": "jitsi", "exp": 2_000_000_000, "iat": 1_700_000_000, "nonce": "n"}
MEMBER = {
    **TOKEN,
    "sub": "42",
    "nickname": "gitty",
    "name": "Git Tea",
    "email": "gitty@gitlab.example",
    "email_verified": True,
    "picture": "https://gitlab.example/uploads/gitty.png",
    "groups_direct": ["acme/devs", "other"],
}

KIT = AdapterKit(
    GitLabAdapter,
    entry_point="gitlab",
    issuer=ISSUER,
    options={"allowed_groups": ["acme"]},
    good=[
        Good(
            "member-of-a-subgroup",
            MEMBER,
            expect={
                "subject": "42",
                "username": "gitty",
                "name": "Git Tea",
                "email_verified": True,
                "groups": ["conformance:acme/devs", "conformance:other"],
                "roles": [],
                "picture": "https://gitlab.example/uploads/gitty.png",
            },
        ),
        Good(
            "no-name-no-email-any-group",
            {**TOKEN, "sub": "43", "nickname": "quiet"},
            options={},
            expect={"name": "quiet", "email": None, "email_verified": False, "groups": []},
        ),
        Good(
            "token-wins-over-userinfo",
            {**MEMBER, "name": "From Token"},
            userinfo={"sub": "42", "name": "From Userinfo", "groups_direct": ["acme"]},
            expect={"name": "From Token", "groups": ["conformance:acme/devs", "conformance:other"]},
        ),
    ],
    refused=[
        Refused(
            "outside-the-allowed-groups",
            {**MEMBER, "groups_direct": ["acme-corp", "other"]},
            AccessDenied,
            reason="group_not_allowed",
        ),
        Refused("no-nickname", {**TOKEN, "sub": "44"}, AdapterError, reason="claims_invalid"),
    ],
    bad_options=[{"allowed_group": ["acme"]}, {"allowed_groups": "acme"}],
    bad_config=[
        BadConfig(
            "issuer-with-a-path",
            "idps[0].issuer: GitLab's issuer is the instance root",
            issuer="https://gitlab.example/users/sign_in",
        )
    ],
)

test_gitlab_adapter_conforms = KIT.pytest_test()


def test_subgroup_prefix_is_not_a_subgroup() -> None:
    """``acme-corp`` starts with ``acme`` but is not ``acme`` nor below it."""
    adapter = GitLabAdapter("gitlab", GitLabOptions(allowed_groups=("acme",)))
    assert adapter.identity({**MEMBER, "groups_direct": ["acme/x/y"]}, None).groups == (
        "gitlab:acme/x/y",
    )
