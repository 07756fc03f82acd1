"""``policy explain`` and ``check-config`` on policies, as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main
from tests.support.cli import Ran, run_cli
from tests.test_policy_e2e import POLICY


def settings_file(tmp_path: Path, policy: dict[str, Any]) -> Path:
    data = {
        "public_url": "https://meet.example.com",
        "cookies": {"secret": "s" * 40},
        "jitsi": {
            "base_url": "https://meet.example.com",
            "app_id": "app",
            "domain": "meet.example.com",
            "app_secret": "a" * 40,
        },
        "idps": [
            {
                "id": "testop",
                "adapter": "generic",
                "issuer": "https://idp.example",
                "client_id": "c",
                "client_secret": "x",
                "email_domains": ["corp.example"],
            },
            {
                "id": "kc",
                "adapter": "keycloak",
                "issuer": "https://kc.example/realms/staff",
                "client_id": "c",
                "client_secret": "x",
            },
        ],
        "policy": policy,
    }
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run(*args: str) -> Ran:
    """``jitsi-oidc-gateway ARGS`` in this process (``gateway.cli.main``)."""
    return run_cli(*args)


def test_explain_staff_member(tmp_path: Path) -> None:
    cfg = settings_file(tmp_path, POLICY)
    done = run(
        "policy",
        "explain",
        "-c",
        str(cfg),
        "--idp",
        "testop",
        "--groups",
        "staff",
        "--room",
        "Board",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert 'sign-in: ALLOWED by rule 1 "staff-moderators"' in lines
    assert 'room board: ALLOWED by rule 1 "staff-moderators"' in lines
    assert "token: affiliation=owner moderator=True" in done.stdout


def test_explain_partner_outside_partner_rooms(tmp_path: Path) -> None:
    cfg = settings_file(tmp_path, POLICY)
    done = run(
        "policy",
        "explain",
        "-c",
        str(cfg),
        "--idp",
        "testop",
        "--groups",
        "partners",
        "--room",
        "board",
        "--json",
    )
    assert done.returncode == 1
    out = json.loads(done.stdout)
    assert out["sign_in"]["allowed"] is True
    assert out["room"]["allowed"] is False
    assert out["room"]["rule"] == 'rule 3 "everyone-else"'
    assert out["room"]["trail"][1] == ("rule 2 \"partners\": room board not in ['partner-*']")


def test_explain_from_a_claims_file_uses_the_adapter(tmp_path: Path) -> None:
    policy = {
        "default": "deny",
        "rules": [{"name": "kc-mods", "roles": ["kc:jitsi:moderator"], "affiliation": "moderator"}],
    }
    cfg = settings_file(tmp_path, policy)
    claims = tmp_path / "claims.json"
    claims.write_text(
        json.dumps(
            {"sub": "u", "azp": "jitsi", "resource_access": {"jitsi": {"roles": ["moderator"]}}}
        )
    )
    done = run(
        "policy",
        "explain",
        "-c",
        str(cfg),
        "--idp",
        "kc",
        "--claims",
        str(claims),
        "--room",
        "r1",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["identity"]["roles"] == ["kc:jitsi:moderator"]
    assert out["room"]["affiliation"] == "moderator"


def test_explain_unverified_email_and_unknown_groups(tmp_path: Path) -> None:
    policy = {
        "default": "deny",
        "rules": [
            {"name": "corp-mail", "email_domains": ["corp.example"]},
            {"name": "staff", "groups": ["testop:staff"]},
        ],
    }
    cfg = settings_file(tmp_path, policy)
    done = run(
        "policy",
        "explain",
        "-c",
        str(cfg),
        "--idp",
        "testop",
        "--email",
        "u@corp.example",
        "--groups-unknown",
        "--room",
        "r",
    )
    assert done.returncode == 1
    assert "e-mail not verified by the IdP" in done.stdout
    assert "groups unknown" in done.stdout


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"rules": [{"name": "a", "idps": ["kc9"]}]}, "policy.rules[0] (a).idps: unknown IdP id"),
        ({"rules": [{"name": "a", "rooms": ["x/y"]}]}, "policy.rules[0].rooms: room pattern"),
        ({"rules": [{"name": "a", "groups": ["staff"]}]}, "policy.rules[0] (a).groups"),
        (
            {"rules": [{"name": "a", "email_domains": ["corp.example"], "idps": ["kc"]}]},
            "policy.rules[0] (a).email_domains: no IdP of this rule is trusted for 'corp.example'",
        ),
    ],
    ids=["unknown-idp", "malformed-pattern", "group-without-idp-prefix", "untrusted-domain"],
)
def test_check_config_names_the_rule_and_field(
    tmp_path: Path, policy: dict[str, Any], expected: str
) -> None:
    done = run("check-config", "-c", str(settings_file(tmp_path, policy)))
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_explain_says_why_a_token_is_room_scoped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: secret-* refused, everyone else room_scope any."""
    policy = {
        "rules": [
            {"name": "secret", "allow": False, "rooms": ["secret-*"]},
            {"name": "everyone", "room_scope": "any"},
        ]
    }
    cfg = settings_file(tmp_path, policy)
    data = yaml.safe_load(cfg.read_text())
    data["jitsi"]["room_wildcard"] = True
    cfg.write_text(yaml.safe_dump(data))
    args = ["policy", "explain", "-c", str(cfg), "--idp", "testop"]
    assert main([*args, "--room", "secret-x"]) == 1
    assert main([*args, "--room", "standup"]) == 0
    out = capsys.readouterr().out
    assert "room secret-x: REFUSED" in out
    assert "room=standup " in out
    assert (
        "token scope: this room only: rule 1 \"secret\" refuses rooms ['secret-*'] for this "
        "person, which a * token would open"
    ) in out


def test_check_config_warns_on_unknown_features_and_refuses_contradictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = settings_file(
        tmp_path, {"defaults": {"features": {"moderation": True, "teleport": True}}}
    )
    assert main(["check-config", "-c", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "warning: policy.defaults.features: 'teleport' is not a Jitsi feature" in err
    assert "moderation" not in err.split("known:")[0]
    cfg = settings_file(
        tmp_path, {"rules": [{"name": "r", "affiliation": "owner", "moderator": False}]}
    )
    assert main(["check-config", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "  policy.rules[0]: affiliation 'owner' with moderator: false contradict" in err


@pytest.mark.parametrize(
    ("idp", "code", "expected"),
    [
        ("kc", 1, "e-mail domain corp.example: does not count (IdP kc is not trusted for it"),
        ("testop", 0, "e-mail domain corp.example: counts (verified, IdP testop is trusted"),
    ],
    ids=["asserted-by-another-idp", "asserted-by-its-owner"],
)
def test_explain_says_whether_the_email_domain_counts(
    tmp_path: Path, idp: str, code: int, expected: str
) -> None:
    policy = {
        "default": "deny",
        "rules": [{"name": "corp-mail", "email_domains": ["corp.example"]}],
    }
    cfg = settings_file(tmp_path, policy)
    done = run(
        "policy",
        "explain",
        "-c",
        str(cfg),
        "--idp",
        idp,
        "--email",
        "eve@corp.example",
        "--email-verified",
        "--room",
        "board",
    )
    assert done.returncode == code, done.stdout + done.stderr
    assert expected in done.stdout


def test_check_config_warns_on_tenant_rule_any_idp_could_satisfy(tmp_path: Path) -> None:
    policy = {"rules": [{"name": "acme", "tenants": ["acme"]}]}
    done = run("check-config", "-c", str(settings_file(tmp_path, policy)))
    assert done.returncode == 0, done.stderr
    assert "warning: policy.rules[0] (acme).tenants: any IdP can assert a tenant" in done.stderr
