"""Test-OP accounts shaped like each IdP's tokens (Keycloak, Google, Entra ID, GitLab)."""

from __future__ import annotations

from typing import Any

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "0b2f4a8e-1111-4222-8333-944455556666"
OID = "5d1a3c2e-aaaa-4bbb-8ccc-0123456789ab"
GROUP_A = "11111111-0000-4000-8000-00000000000a"
GROUP_B = "22222222-0000-4000-8000-00000000000b"


def account(sub: str, username: str, **claims: Any) -> dict[str, Any]:
    return {"sub": sub, "username": username, "password": f"{username}-pw", "claims": claims}


SHAPES_ACCOUNTS = [
    account(
        "kc-0001",
        "kc",
        preferred_username="kay",
        name="Kay Cloak",
        email="kay@corp.example",
        email_verified=False,
        realm_access={"roles": ["offline_access", "staff"]},
        resource_access={"jitsi-web": {"roles": ["moderator"]}, "other": {"roles": ["x"]}},
        groups=["/staff/devops", "/partners"],
    ),
    account(
        "108922",
        "gwork",
        name="Gee Work",
        email="gee@work.example",
        email_verified=True,
        hd="work.example",
        picture="https://lh3.googleusercontent.com/a/gee",
    ),
    # A consumer account whose address merely looks like the Workspace domain: no hd claim.
    account("108999", "gfake", name="Fake Work", email="eve@work.example", email_verified=True),
    account(
        "gl-42",
        "gitlab",
        nickname="gitty",
        name="Git Lab",
        email="gitty@lab.example",
        email_verified=True,
        groups_direct=["acme/devs", "other"],
        picture="https://gitlab.example/uploads/gitty.png",
    ),
]

ENTRA_ACCOUNTS = [
    account(
        "pairwise-sub-ed",
        "entra",
        tid=TENANT,
        oid=OID,
        preferred_username="ed@contoso.example",
        name="Ed Entra",
        email="ed@contoso.example",
        groups=[GROUP_A, GROUP_B],
        roles=["Meeting.Host"],
    ),
    account(
        "pairwise-sub-ov",
        "overage",
        tid=TENANT,
        oid="9e9e9e9e-aaaa-4bbb-8ccc-0123456789ab",
        preferred_username="ova@contoso.example",
        name="Ova Rage",
        _claim_names={"groups": "src1"},
        _claim_sources={
            "src1": {"endpoint": "https://graph.windows.net/x/users/y/getMemberObjects"}
        },
    ),
]
