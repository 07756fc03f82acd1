"""``jitsi-oidc-gateway doctor`` on the Jitsi files as operators have them.

The inputs are written here in the forms Debian's packages and docker-jitsi-meet produce
(facts, not copies: the Debian site file has ``app_id="..."`` written by jitsi-meet-tokens
without spaces, multi-line ``modules_enabled`` lists with ``;`` and ``--`` comments, the
conference component named ``conference.<domain>``; docker-jitsi-meet's ``.env`` has
commented-out defaults and ``KEY=value`` lines; Debian's ``<domain>-config.js`` is one
``var config = {...}`` object with commented-out examples, docker-jitsi-meet's
``custom-config.js`` assigns ``config.key = value;``). Each broken row changes one fact and
checks the one message, its line, and the line to write.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import cli

SECRET = "k" * 40
PUBLIC = "https://meet.example.com"

DEBIAN_SITE = """\
plugin_paths = {{ "/usr/share/jitsi-meet/prosody-plugins/" }}

-- domain mapper options, must at least have domain base set to use the mapper
muc_mapper_domain_base = "meet.example.com";

external_service_secret = "not-the-app-secret";

VirtualHost "meet.example.com"
    authentication = "token" -- do not delete me
    -- Properties below are modified by jitsi-meet-tokens package config
    -- and authentication above is switched to "token"
    app_id="my_jitsi_app"
    app_secret="{secret}"
    asap_accepted_issuers = {{ "my_jitsi_app" }}
    asap_accepted_audiences = {{ "jitsi" }}
    allow_empty_token = false
    enable_domain_verification = true
    ssl = {{
        key = "/etc/prosody/certs/meet.example.com.key";
        certificate = "/etc/prosody/certs/meet.example.com.crt";
    }}
    modules_enabled = {{
        "bosh";
        "websocket";
        "ping"; -- Enable mod_ping
        "speakerstats";
        "conference_duration";
        "muc_lobby_rooms";
    }}
    main_muc = "conference.meet.example.com"

Component "conference.meet.example.com" "muc"
    restrict_room_creation = true
    storage = "memory"
    modules_enabled = {{
        "muc_hide_all";
        "muc_meeting_id";
        "muc_domain_mapper";
        "polls";
        "token_verification";
        "token_affiliation";
        "muc_rate_limit";
    }}
    admins = {{ "focus@auth.meet.example.com" }}
    muc_room_locking = false

Component "internal.auth.meet.example.com" "muc"
    storage = "memory"
    modules_enabled = {{
        "muc_hide_all";
        "ping";
    }}
"""

DOCKER_ENV = """\
# Basic configuration options
CONFIG=~/.jitsi-meet-cfg
HTTP_PORT=8000
HTTPS_PORT=8443
TZ=UTC
PUBLIC_URL=https://meet.example.com

# Authentication configuration (see handbook for details)
ENABLE_AUTH=1
ENABLE_GUESTS=0
AUTH_TYPE=jwt
JWT_APP_ID=my_jitsi_app
JWT_APP_SECRET={secret}
JWT_ACCEPTED_ISSUERS=my_jitsi_app
JWT_ACCEPTED_AUDIENCES=jitsi
JWT_ALLOW_EMPTY=0
JWT_ENABLE_DOMAIN_VERIFICATION=1
XMPP_MUC_MODULES=muc_wait_for_host,token_affiliation
ENABLE_AUTO_OWNER=0
TOKEN_AUTH_URL=https://meet.example.com/oidc/auth?room={{room}}&state={{state}}
#JWT_TOKEN_AUTH_MODULE=token_verification
"""

DEBIAN_CONFIG_JS = """\
var config = {
    hosts: {
        domain: 'meet.example.com',
        muc: 'conference.<!--# echo var="subdomain" default="" -->meet.example.com'
    },

    // URL pointing to the token service
    // tokenAuthUrl: 'https://myservice.com/auth/{room}',
    tokenAuthUrl: 'https://meet.example.com/oidc/auth?room={room}&state={state}',

    /* tokenAuthInline: true, */
    // tokenLogoutUrl: 'https://myservice.com/logout',
    tokenLogoutUrl: 'https://meet.example.com/oidc/logout/silent',

    bosh: 'https://meet.example.com/' + subdir + 'http-bind',
};
"""

SSO_CUSTOM_CONFIG_JS = """\
config.tokenAuthUrl = 'https://meet.example.com/oidc/authorize?client_id=jitsi-web'
    + '&state={state}&code_challenge={code_challenge}';
config.tokenAuthInline = true; // sso.html needs the popup
config.sso = { tokenService: 'meet.example.com/oidc', clientId: 'jitsi-web' };
config.tokenLogoutUrl = 'https://meet.example.com/oidc/logout/silent';
"""


def settings_file(tmp_path: Path, **over: Any) -> Path:
    """A gateway whose policy makes owners and pins a tenant (both rules need Prosody's
    help: token_affiliation and domain verification)."""
    key = tmp_path / "ts.pem"
    from tests.support.token_service import signing_key_file

    key = Path(signing_key_file(tmp_path))
    data: dict[str, Any] = {
        "public_url": PUBLIC,
        "cookies": {"secret": "c" * 40},
        "jitsi": {
            "base_url": PUBLIC,
            "app_id": "my_jitsi_app",
            "audience": "jitsi",
            "domain": "meet.example.com",
            "app_secret": SECRET,
        },
        "idps": [
            {
                "id": "corp",
                "adapter": "generic",
                "issuer": "https://idp.example.com",
                "client_id": "c",
                "client_secret": "s",
            }
        ],
        "policy": {
            "rules": [
                {"name": "staff", "groups": ["corp:staff"], "affiliation": "owner"},
                {"name": "acme", "idps": ["corp"], "url_tenants": ["acme"]},
            ]
        },
        "token_service": {
            "enabled": True,
            "clients": [{"client_id": "jitsi-web", "redirect_uri": f"{PUBLIC}/static/sso.html"}],
            "signing_key_file": str(key),
        },
    }
    for dotted, value in over.items():
        *parents, last = dotted.split("__")
        node = data
        for name in parents:
            node = node[name]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run_doctor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: Path, **files: str
) -> tuple[int, str]:
    argv = ["doctor", "-c", str(settings)]
    for kind, text in files.items():
        path = tmp_path / kind
        path.write_text(text, encoding="utf-8")
        argv += [f"--{kind.replace('_', '-')}", str(path)]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out + err


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("JOG_")]:
        monkeypatch.delenv(name)


def test_matching_deployments_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_doctor(
        tmp_path,
        capsys,
        settings_file(tmp_path),
        prosody=DEBIAN_SITE.format(secret=SECRET),
        env=DOCKER_ENV.format(secret=SECRET),
        config_js=DEBIAN_CONFIG_JS,
    )
    assert code == 0, out
    assert out.startswith("Jitsi side OK:")
    code, out = run_doctor(
        tmp_path, capsys, settings_file(tmp_path), config_js=SSO_CUSTOM_CONFIG_JS
    )
    assert code == 0, out


def _replace(old: str, new: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return change


PROSODY_ROWS = [
    (
        "debian_tokens_default_modules",  # jitsi-meet-tokens enables token_verification only
        _replace('        "token_affiliation";\n', ""),
        "conference.meet.example.com does not load token_affiliation: the policy grants "
        "owner/moderator",
        'modules_enabled = { "muc_hide_all"; "muc_meeting_id"; "muc_domain_mapper"; "polls"; '
        '"token_verification"; "muc_rate_limit"; "token_affiliation" }',
        "conference modules_enabled",
    ),
    (
        "token_verification_commented_out",
        _replace('        "token_verification";', '        --"token_verification";'),
        "does not load token_verification",
        '"token_verification" }',
        "conference modules_enabled",
    ),
    (
        "domain_verification_off",
        _replace("enable_domain_verification = true", "enable_domain_verification = false"),
        "enable_domain_verification is off while the policy uses tenants",
        "    enable_domain_verification = true",
        "    enable_domain_verification = false",
    ),
    (
        "domain_verification_absent",
        _replace("    enable_domain_verification = true\n", ""),
        "enable_domain_verification is off",
        "    enable_domain_verification = true",
        'VirtualHost "meet.example.com"',
    ),
    (
        "wrong_app_id",
        _replace('app_id="my_jitsi_app"', 'app_id="other_app"'),
        "app_id is not the gateway's jitsi.app_id ('my_jitsi_app')",
        '    app_id = "my_jitsi_app"',
        '    app_id="other_app"',
    ),
    (
        "wrong_secret",
        _replace(f'app_secret="{SECRET}"', 'app_secret="not-the-secret-at-all"'),
        "app_secret is missing or differs from the gateway's jitsi.app_secret",
        '    app_secret = "<jitsi.app_secret>"',
        '    app_secret="not-the-secret-at-all"',
    ),
    (
        "allow_empty_token",
        _replace("allow_empty_token = false", "allow_empty_token = true"),
        "allow_empty_token = true: anyone without a token joins",
        "    allow_empty_token = false",
        "    allow_empty_token = true",
    ),
    (
        "issuer_not_accepted",
        _replace('asap_accepted_issuers = { "my_jitsi_app" }', 'asap_accepted_issuers = { "x" }'),
        "asap_accepted_issuers does not list the gateway's iss ('my_jitsi_app')",
        '    asap_accepted_issuers = { "my_jitsi_app" }',
        '    asap_accepted_issuers = { "x" }',
    ),
    (
        "audience_not_accepted",
        _replace('asap_accepted_audiences = { "jitsi" }', 'asap_accepted_audiences = { "app" }'),
        "asap_accepted_audiences does not list the gateway's aud ('jitsi')",
        '    asap_accepted_audiences = { "jitsi" }',
        '    asap_accepted_audiences = { "app" }',
    ),
    (
        "anonymous_host",
        _replace('authentication = "token"', 'authentication = "jitsi-anonymous"'),
        'no VirtualHost uses authentication = "token"',
        '    authentication = "token"',
        'VirtualHost "meet.example.com"',
    ),
    (
        "asap_key_server_with_hs256",
        _replace(
            "    allow_empty_token",
            '    asap_key_server = "https://k.example"\n    allow_empty_token',
        ),
        "asap_key_server is set: Prosody then expects RS256 tokens",
        "remove asap_key_server",
        '    asap_key_server = "https://k.example"',
    ),
]


@pytest.mark.parametrize(
    ("change", "problem", "fix", "at_line"),
    [row[1:] for row in PROSODY_ROWS],
    ids=[row[0] for row in PROSODY_ROWS],
)
def test_prosody_mismatches(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[str], str],
    problem: str,
    fix: str,
    at_line: str,
) -> None:
    text = change(DEBIAN_SITE.format(secret=SECRET))
    code, out = run_doctor(tmp_path, capsys, settings_file(tmp_path), prosody=text)
    assert code == 1, out
    lines = out.splitlines()
    assert len(lines) == 3, out  # one finding: problem, fix, summary
    lines_of = text.splitlines()
    if at_line == "conference modules_enabled":  # the list of the conference component
        start = lines_of.index('Component "conference.meet.example.com" "muc"')
        number = next(
            i for i, line in enumerate(lines_of, 1) if i > start and "modules_enabled" in line
        )
    else:
        number = next(i for i, line in enumerate(lines_of, 1) if line.startswith(at_line))
    assert lines[0].startswith(f"{tmp_path / 'prosody'}:{number}: "), out
    assert problem in lines[0]
    assert lines[1].startswith("    change to: ") and fix in lines[1]
    assert lines[2].startswith("1 mismatch(es)")
    assert SECRET not in out and "not-the-secret-at-all" not in out


def test_token_affiliation_not_required_without_moderators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy that makes nobody owner/moderator needs only token_verification."""
    rules = [{"name": "acme", "idps": ["corp"], "url_tenants": ["acme"]}]
    text = DEBIAN_SITE.format(secret=SECRET).replace('        "token_affiliation";\n', "")
    settings = settings_file(tmp_path, policy__rules=rules)
    code, out = run_doctor(tmp_path, capsys, settings, prosody=text)
    assert code == 0, out


def test_domain_verification_not_required_without_tenants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = [{"name": "staff", "groups": ["corp:staff"], "affiliation": "owner"}]
    text = DEBIAN_SITE.format(secret=SECRET).replace("    enable_domain_verification = true\n", "")
    code, out = run_doctor(
        tmp_path, capsys, settings_file(tmp_path, policy__rules=rules), prosody=text
    )
    assert code == 0, out
    # ... but a room_scope: any rule mints "*" tokens, which open every tenant too.
    rules.append({"name": "all", "groups": ["corp:ops"], "room_scope": "any"})
    wildcard = settings_file(tmp_path, policy__rules=rules, jitsi__room_wildcard=True)
    code, out = run_doctor(tmp_path, capsys, wildcard, prosody=text)
    assert code == 1 and "enable_domain_verification is off" in out


def test_rs256_needs_an_asap_key_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = Path(__import__("tests.support.token_service", fromlist=["x"]).signing_key_file(tmp_path))
    jitsi = {
        "base_url": PUBLIC,
        "app_id": "my_jitsi_app",
        "audience": "jitsi",
        "domain": "meet.example.com",
        "algorithm": "RS256",
        "private_key_file": str(key),
        "key_id": "jog-1",
    }
    settings = settings_file(tmp_path, jitsi=jitsi)
    site = DEBIAN_SITE.format(secret=SECRET).replace(f'    app_secret="{SECRET}"\n', "")
    code, out = run_doctor(tmp_path, capsys, settings, prosody=site)
    assert code == 1 and "has no asap_key_server" in out, out
    served = site.replace(
        "    allow_empty_token",
        '    asap_key_server = "https://meet.example.com/asap"\n    allow_empty_token',
    )
    code, out = run_doctor(tmp_path, capsys, settings, prosody=served)
    assert code == 0, out


ENV_ROWS = [
    (
        "docker_default_domain_verification",
        _replace("JWT_ENABLE_DOMAIN_VERIFICATION=1\n", ""),
        "JWT_ENABLE_DOMAIN_VERIFICATION is off (docker-jitsi-meet's default)",
        "JWT_ENABLE_DOMAIN_VERIFICATION=1",
    ),
    (
        "domain_verification_false",
        _replace("JWT_ENABLE_DOMAIN_VERIFICATION=1", "JWT_ENABLE_DOMAIN_VERIFICATION=false"),
        "JWT_ENABLE_DOMAIN_VERIFICATION is off",
        "JWT_ENABLE_DOMAIN_VERIFICATION=1",
    ),
    (
        "no_token_affiliation",
        _replace(
            "XMPP_MUC_MODULES=muc_wait_for_host,token_affiliation",
            "XMPP_MUC_MODULES=muc_wait_for_host",
        ),
        "XMPP_MUC_MODULES lacks token_affiliation",
        "XMPP_MUC_MODULES=muc_wait_for_host,token_affiliation",
    ),
    (
        "auto_owner_default",
        _replace("ENABLE_AUTO_OWNER=0\n", ""),
        "ENABLE_AUTO_OWNER is on",
        "ENABLE_AUTO_OWNER=0",
    ),
    (
        "wrong_app_id",
        _replace("JWT_APP_ID=my_jitsi_app", "JWT_APP_ID=jitsi_app"),
        "JWT_APP_ID is not the gateway's jitsi.app_id",
        "JWT_APP_ID=my_jitsi_app",
    ),
    (
        "wrong_secret",
        _replace(f"JWT_APP_SECRET={SECRET}", "JWT_APP_SECRET=another-secret"),
        "JWT_APP_SECRET is missing or differs",
        "JWT_APP_SECRET=<jitsi.app_secret>",
    ),
    (
        "allow_empty",
        _replace("JWT_ALLOW_EMPTY=0", "JWT_ALLOW_EMPTY=1"),
        "JWT_ALLOW_EMPTY is on",
        "JWT_ALLOW_EMPTY=0",
    ),
    (
        "audience",
        _replace("JWT_ACCEPTED_AUDIENCES=jitsi", "JWT_ACCEPTED_AUDIENCES=my_jitsi_app"),
        "JWT_ACCEPTED_AUDIENCES does not list the gateway's aud ('jitsi')",
        "JWT_ACCEPTED_AUDIENCES=jitsi",
    ),
    (
        "auth_url_elsewhere",
        _replace(
            "TOKEN_AUTH_URL=https://meet.example.com/oidc/auth?",
            "TOKEN_AUTH_URL=https://auth.example.com/login?",
        ),
        "tokenAuthUrl does not lead to the gateway",
        "TOKEN_AUTH_URL=https://meet.example.com/oidc/auth?room={room}&state={state}",
    ),
    (
        "internal_auth",
        _replace("AUTH_TYPE=jwt", "AUTH_TYPE=internal"),
        "AUTH_TYPE is not jwt",
        "AUTH_TYPE=jwt",
    ),
]


@pytest.mark.parametrize(
    ("change", "problem", "fix"), [row[1:] for row in ENV_ROWS], ids=[row[0] for row in ENV_ROWS]
)
def test_docker_env_mismatches(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[str], str],
    problem: str,
    fix: str,
) -> None:
    text = change(DOCKER_ENV.format(secret=SECRET))
    code, out = run_doctor(tmp_path, capsys, settings_file(tmp_path), env=text)
    assert code == 1, out
    first, fix_line, summary = out.splitlines()
    assert first.startswith(f"{tmp_path / 'env'}:") and problem in first, out
    assert fix_line == f"    change to: {fix}"
    assert summary.startswith("1 mismatch(es)")
    assert SECRET not in out and "another-secret" not in out


CONFIG_JS_ROWS = [
    (
        "sso_full_page",
        SSO_CUSTOM_CONFIG_JS.replace("tokenAuthInline = true", "tokenAuthInline = false"),
        ["tokenAuthInline is not true: Jitsi's sso.html works only in the popup"],
        "config.tokenAuthInline = true;",
    ),
    (
        "sso_inline_unset",  # Jitsi's default is false
        SSO_CUSTOM_CONFIG_JS.replace(
            "config.tokenAuthInline = true; // sso.html needs the popup\n", ""
        ),
        ["tokenAuthInline is not true"],
        "config.tokenAuthInline = true;",
    ),
    (
        "unregistered_client",
        SSO_CUSTOM_CONFIG_JS.replace("client_id=jitsi-web'", "client_id=jitsi-app'"),
        [
            "names client_id 'jitsi-app', which token_service.clients does not register",
            "config.sso does not name the gateway's token service",
        ],
        "config.tokenAuthUrl = 'https://meet.example.com/oidc/authorize?client_id=jitsi-web"
        "&state={state}&code_challenge={code_challenge}';",
    ),
    (
        "sso_service_elsewhere",
        SSO_CUSTOM_CONFIG_JS.replace(
            "tokenService: 'meet.example.com/oidc'", "tokenService: 'auth.example.com'"
        ),
        ["config.sso does not name the gateway's token service"],
        "config.sso = { tokenService: 'meet.example.com/oidc', clientId: 'jitsi-web' };",
    ),
    (
        "no_code_challenge",
        SSO_CUSTOM_CONFIG_JS.replace("&code_challenge={code_challenge}", ""),
        ["tokenAuthUrl lacks {code_challenge}"],
        "config.tokenAuthUrl = 'https://meet.example.com/oidc/authorize?client_id=jitsi-web"
        "&state={state}&code_challenge={code_challenge}';",
    ),
    (
        "debian_no_logout_url",
        DEBIAN_CONFIG_JS.replace(
            "    tokenLogoutUrl: 'https://meet.example.com/oidc/logout/silent',\n", ""
        ),
        ["tokenLogoutUrl is not the gateway's silent logout"],
        "config.tokenLogoutUrl = 'https://meet.example.com/oidc/logout/silent';",
    ),
    (
        "debian_commented_auth_url_only",
        DEBIAN_CONFIG_JS.replace(
            "    tokenAuthUrl: 'https://meet.example.com/oidc/auth?room={room}&state={state}',\n",
            "",
        ),
        ["no tokenAuthUrl"],
        "config.tokenAuthUrl = 'https://meet.example.com/oidc/auth?room={room}&state={state}';",
    ),
]


@pytest.mark.parametrize(
    ("text", "problems", "fix"),
    [row[1:] for row in CONFIG_JS_ROWS],
    ids=[row[0] for row in CONFIG_JS_ROWS],
)
def test_config_js_mismatches(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    text: str,
    problems: list[str],
    fix: str,
) -> None:
    code, out = run_doctor(tmp_path, capsys, settings_file(tmp_path), config_js=text)
    assert code == 1, out
    lines = out.splitlines()
    assert len(lines) == 2 * len(problems) + 1, out
    for i, problem in enumerate(problems):
        assert lines[2 * i].startswith(f"{tmp_path / 'config_js'}:") and problem in lines[2 * i]
    assert lines[1] == f"    change to: {fix}"


def test_token_service_url_while_the_service_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_file(tmp_path, token_service__enabled=False)
    code, out = run_doctor(tmp_path, capsys, settings, config_js=SSO_CUSTOM_CONFIG_JS)
    assert code == 1 and "token_service.enabled is false" in out, out


def test_cli_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_file(tmp_path)
    assert cli.main(["doctor", "-c", str(settings)]) == 2
    assert "give at least one of --prosody, --env, --config-js" in capsys.readouterr().err
    assert cli.main(["doctor", "-c", str(settings), "--env", str(tmp_path / "nope")]) == 2
    assert "nope: no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("public_url: [\n")
    (tmp_path / "e").write_text(DOCKER_ENV)
    assert cli.main(["doctor", "-c", str(broken), "--env", str(tmp_path / "e")]) == 2
