"""docs/deploy.md's snippets, extracted and checked with the real tools installed here.

Every fenced block outside the nginx section (section 3, checked by tests/test_nginx.py and
tests/test_deploy.py) carries a ``<!-- check: KIND ... -->`` marker; a block without one
fails. KIND: prosody (prosodyctl check config), settings (the gateway's check-config),
systemd (systemd-analyze verify), env, yaml (parsed and asserted), sh (bash -n), js (node
--check), none (not checked; the guide says why next to it).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import cli

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "deploy.md"
NODE = ROOT / "tests" / "op" / "node_modules" / ".bin" / "node"
DEBIAN_PROSODY_CFG = Path("/etc/prosody/prosody.cfg.lua")
BLOCK = re.compile(r"(?:<!-- check: (\w+)[^>]*-->\n)?```(\w*)\n(.*?)```", re.S)
KINDS = {"prosody", "settings", "systemd", "env", "yaml", "sh", "js", "none"}


@dataclass(frozen=True)
class Snippet:
    kind: str | None
    lang: str
    text: str
    line: int


def snippets() -> list[Snippet]:
    """Blocks outside the nginx section, with their check marker (None: no marker)."""
    text = GUIDE.read_text(encoding="utf-8")
    nginx = re.search(r"^## 3\. nginx.*?(?=^## )", text, re.S | re.M)
    assert nginx, "the nginx section moved: update this test"
    out = []
    for match in BLOCK.finditer(text):
        if nginx.start() <= match.start() < nginx.end():
            continue
        line = text.count("\n", 0, match.start()) + 1
        out.append(Snippet(match.group(1), match.group(2), match.group(3), line))
    return out


def of_kind(kind: str) -> list[Snippet]:
    found = [s for s in snippets() if s.kind == kind]
    assert found, f"no {kind} snippet in the guide"
    return found


def test_every_snippet_has_a_check() -> None:
    for snippet in snippets():
        assert snippet.kind in KINDS, f"deploy.md line {snippet.line}: no <!-- check: ... -->"


def test_unchecked_snippets_say_so() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for snippet in of_kind("none"):
        if snippet.lang == "":
            continue  # the architecture picture
        start = text.index(snippet.text)
        nearby = text[max(0, start - 400) : start]
        assert "not checked here" in nearby, f"line {snippet.line}: say that it is not checked"


# ---- Prosody -------------------------------------------------------------------------------


def prosody_check(tmp_path: Path, snippet: str) -> subprocess.CompletedProcess:
    """Debian's own prosody.cfg.lua with the snippet in place of its conf.d include."""
    site = tmp_path / "site.cfg.lua"
    site.write_text(snippet, encoding="utf-8")
    base = DEBIAN_PROSODY_CFG.read_text(encoding="utf-8")
    assert 'Include "conf.d/*.cfg.lua"' in base
    config = tmp_path / "prosody.cfg.lua"
    config.write_text(base.replace('Include "conf.d/*.cfg.lua"', f'Include "{site}"'))
    (tmp_path / "certs").mkdir(exist_ok=True)
    return subprocess.run(
        ["prosodyctl", "--config", str(config), "check", "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def prosody_dir() -> Iterator[Path]:
    """A directory the ``prosody`` user can read (prosodyctl drops root for it)."""
    assert shutil.which("prosodyctl") and DEBIAN_PROSODY_CFG.exists(), (
        "Debian's prosody missing: bash scripts/setup.sh --test installs it"
    )
    path = Path(tempfile.mkdtemp(prefix="jog-prosody-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("index", [0, 1], ids=["hs256", "rs256"])
def test_prosody_blocks_pass_prosodyctl(prosody_dir: Path, index: int) -> None:
    snippet = of_kind("prosody")[index]
    done = prosody_check(prosody_dir, snippet.text)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All checks passed" in done.stdout, done.stdout
    assert str(prosody_dir / "site.cfg.lua") in done.stdout  # the snippet was really loaded
    assert 'authentication = "token"' in snippet.text
    assert 'asap_accepted_audiences = { "jitsi" }' in snippet.text


def lua_list(text: str, key: str) -> list[list[str]]:
    """Every ``key = { "a"; "b", ... }`` list in a Lua snippet, as lists of names."""
    found = re.findall(key + r"\s*=\s*\{(.*?)\}", re.sub(r"--[^\n]*", "", text), re.S)
    return [re.findall(r'"([^"]+)"', body) for body in found]


@pytest.mark.parametrize("index", [0, 1], ids=["hs256", "rs256"])
def test_prosody_blocks_load_what_the_token_contract_needs(index: int) -> None:
    """The moderator claims need token_affiliation next to token_verification (Debian's
    jitsi-meet-tokens loads only the latter); tenants need domain verification."""
    text = of_kind("prosody")[index].text
    host, component = re.split(r'^Component "conference\.', text, maxsplit=1, flags=re.M)
    (modules,) = lua_list(component, "modules_enabled")
    assert {"token_verification", "token_affiliation"} <= set(modules), modules
    assert re.search(r"^\s*enable_domain_verification = true\b", host, re.M)
    assert re.search(r"^\s*allow_empty_token = false\b", host, re.M)


def test_the_guide_states_the_clock_and_prosody_log_facts() -> None:
    text = " ".join(GUIDE.read_text(encoding="utf-8").split())
    assert "Prosody checks `nbf` and `exp` with no leeway" in text
    assert "Run NTP" in text
    assert "logs the complete JWT at level `error`" in text
    assert "`tokenAuthInline: true` is required" in text


def test_prosodyctl_fails_a_broken_block(prosody_dir: Path) -> None:
    broken = of_kind("prosody")[0].text.replace('app_id = "my_jitsi_app"', "app_id = ")
    done = prosody_check(prosody_dir, broken)
    assert done.returncode != 0


# ---- the gateway's settings and the systemd unit ---------------------------------------------


def unit_text() -> str:
    (unit,) = of_kind("systemd")
    return unit.text


def write_key(path: Path) -> None:
    key = rsa.generate_private_key(65537, 3072)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def check_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: dict) -> Path:
    """The guide's settings (plus ``extra`` top-level keys) with the secret and key files the
    unit and the settings name made under ``tmp_path``; returns the settings file."""
    etc = "/etc/jitsi-oidc-gateway/"
    local = f"{tmp_path}/"
    (tmp_path / "secrets").mkdir(parents=True)
    for name in [n for n in list(__import__("os").environ) if n.startswith("JOG_")]:
        monkeypatch.delenv(name)
    for var, path in re.findall(r"^Environment=(JOG_\w+_FILE)=(\S+)$", unit_text(), re.M):
        target = Path(path.replace(etc, local))
        if "MONGODB__URI" in var:
            target.write_text("mongodb://jog:pw@127.0.0.1:27017/?replicaSet=rs0&authSource=admin")
        else:
            target.write_text("s" * 48)
        monkeypatch.setenv(var, str(target))
    (settings_snippet,) = of_kind("settings")
    data = yaml.safe_load(settings_snippet.text) | extra
    write_key(Path(data["idps"][0]["client_assertion"]["key_file"].replace(etc, local)))
    if "token_service" in extra:
        write_key(Path(extra["token_service"]["signing_key_file"].replace(etc, local)))
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data).replace(etc, local), encoding="utf-8")
    return path


def test_settings_pass_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The settings with the secret files the unit names (made here) pass check-config."""
    path = check_settings(tmp_path, monkeypatch, {})
    assert cli.main(["check-config", "-c", str(path)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out == "configuration OK: 1 IdP(s): corp (keycloak)\n"
    assert yaml.safe_load(of_kind("settings")[0].text)["trusted_proxies"], (
        "the example must set trusted_proxies"
    )


def test_token_service_block_passes_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The token-service block, added to the guide's settings, passes check-config; its
    client's redirect URI is Jitsi's sso.html on the public host."""
    (block,) = [s for s in of_kind("yaml") if s.text.startswith("token_service:")]
    extra = yaml.safe_load(block.text)
    path = check_settings(tmp_path, monkeypatch, extra)
    assert cli.main(["check-config", "-c", str(path)]) == 0, capsys.readouterr().err
    (client,) = extra["token_service"]["clients"]
    assert client["redirect_uri"].endswith("/static/sso.html")
    # and the check is real: a client without a redirect URI is refused at its path
    extra["token_service"]["clients"][0].pop("redirect_uri")
    path = check_settings(tmp_path / "broken", monkeypatch, extra)
    assert cli.main(["check-config", "-c", str(path)]) != 0
    assert "token_service.clients[0].redirect_uri: Field required" in capsys.readouterr().err


def test_doctor_finds_the_guides_jitsi_side_matching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The guide's Prosody block, docker-jitsi-meet lines and config.js lines, with the
    guide's settings, pass ``doctor``; the Debian block as jitsi-meet-tokens leaves it (only
    token_verification) does not once the policy makes moderators."""
    path = check_settings(tmp_path, monkeypatch, {})
    secret = "s" * 48  # what check_settings wrote into the secret files
    files = {
        "prosody": of_kind("prosody")[0].text.replace("<jitsi.app_secret>", secret),
        "env": of_kind("env")[0].text.replace("<jitsi.app_secret>", secret),
        "config-js": next(s.text for s in of_kind("js") if "tokenLogoutUrl" in s.text),
    }
    argv = ["doctor", "-c", str(path)]
    for kind, text in files.items():
        (tmp_path / kind).write_text(text)
        argv += [f"--{kind}", str(tmp_path / kind)]
    assert cli.main(argv) == 0, capsys.readouterr().out
    assert capsys.readouterr().out.startswith("Jitsi side OK:")
    data = yaml.safe_load(path.read_text())
    data["policy"] = {"defaults": {"affiliation": "owner"}}
    path.write_text(yaml.safe_dump(data))
    debian_default = files["prosody"].replace('        "token_affiliation";', "")
    (tmp_path / "prosody").write_text(debian_default)
    assert cli.main(argv) == 1
    assert "does not load token_affiliation" in capsys.readouterr().out


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing (Debian's systemd package)"
    text = unit_text()
    for line in ("[Unit]", "After=network-online.target mongod.service", "[Install]"):
        assert line in text
    assert "StateDirectory=jitsi-oidc-gateway" in text and "User=jitsi-oidc-gateway" in text
    # verify requires ExecStart's program to exist: the test's virtualenv stands in for /opt.
    venv = Path(sys.executable).parent.parent
    assert (venv / "bin" / "jitsi-oidc-gateway").exists()
    unit = tmp_path / "jitsi-oidc-gateway.service"
    unit.write_text(text.replace("/opt/jitsi-oidc-gateway/bin/", f"{venv}/bin/"))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    # and the check does fail: a typo is reported
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restrat=on-failure"))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert "Unknown key 'Restrat'" in done.stderr


# ---- docker-jitsi-meet, MongoDB, shell and JavaScript ----------------------------------------


def test_docker_jitsi_meet_env_matches_the_settings() -> None:
    (env_snippet,) = of_kind("env")
    env = dict(line.split("=", 1) for line in env_snippet.text.splitlines() if "=" in line)
    settings = yaml.safe_load(of_kind("settings")[0].text)
    jitsi = settings["jitsi"]
    assert env["ENABLE_AUTH"] == "1" and env["AUTH_TYPE"] == "jwt"
    assert env["JWT_APP_ID"] == jitsi["app_id"] == env["JWT_ACCEPTED_ISSUERS"]
    assert env["JWT_ACCEPTED_AUDIENCES"] == jitsi["audience"]
    assert env["JWT_ALLOW_EMPTY"] == "0"
    # docker-jitsi-meet defaults these to "every tenant's token opens every tenant" and
    # "token_verification only, first person moderates".
    assert env["JWT_ENABLE_DOMAIN_VERIFICATION"] in ("1", "true")
    assert "token_affiliation" in env["XMPP_MUC_MODULES"].split(",")
    assert env["ENABLE_AUTO_OWNER"] == "0"
    assert env["TOKEN_AUTH_URL"] == (
        f"{settings['public_url']}/oidc/auth?room={{room}}&state={{state}}"
    )


def config_js(snippet: str, tmp_path: Path) -> dict:
    """What a config.js snippet sets, evaluated by node on an empty ``config``."""
    script = tmp_path / "config.js"
    script.write_text(f"var config = {{}};\n{snippet}\nconsole.log(JSON.stringify(config));")
    done = subprocess.run([str(NODE), str(script)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_token_service_config_js_uses_the_popup(tmp_path: Path) -> None:
    """Jitsi's sso.html works only from the popup (the nonce); the guide's lines say so."""
    assert NODE.exists(), "node missing: bash scripts/setup.sh --test"
    (snippet,) = [s for s in of_kind("js") if "config.sso" in s.text]
    config = config_js(snippet.text, tmp_path)
    assert config["tokenAuthInline"] is True
    assert config["tokenAuthUrl"].startswith("https://meet.example.com/oidc/authorize?")
    assert config["sso"] == {"tokenService": "meet.example.com/oidc", "clientId": "jitsi-web"}


def test_compose_env_fragment_is_the_guides_block() -> None:
    """deploy/compose/docker-jitsi-meet.env (what our compose file points docker-jitsi-meet's
    .env to) holds the guide's block, domain verification and token_affiliation included."""
    (env_snippet,) = of_kind("env")
    shipped = (ROOT / "deploy" / "compose" / "docker-jitsi-meet.env").read_text()
    lines = [line for line in shipped.splitlines() if line and not line.startswith("#")]
    assert lines == env_snippet.text.splitlines()
    assert "JWT_ENABLE_DOMAIN_VERIFICATION=1" in lines
    compose = (ROOT / "deploy" / "docker-compose.yml").read_text()
    assert "compose/docker-jitsi-meet.env" in compose


def test_mongod_conf_is_a_replica_set() -> None:
    (conf,) = [s for s in of_kind("yaml") if "mongod.conf" in s.text]
    data = yaml.safe_load(conf.text)
    assert data["replication"]["replSetName"] == "rs0"
    assert data["security"]["authorization"] == "enabled"
    text = GUIDE.read_text(encoding="utf-8")
    assert 'rs.initiate({_id: "rs0"' in text and "replicaSet=rs0" in text


def test_shell_snippets_parse(tmp_path: Path) -> None:
    for snippet in of_kind("sh"):
        script = tmp_path / "snippet.sh"
        script.write_text(snippet.text)
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"line {snippet.line}: {done.stderr}"


def test_javascript_snippets_parse(tmp_path: Path) -> None:
    assert NODE.exists(), "node missing: bash scripts/setup.sh --test"
    for snippet in of_kind("js"):
        script = tmp_path / "snippet.js"
        script.write_text(snippet.text)
        done = subprocess.run([str(NODE), "--check", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"line {snippet.line}: {done.stderr}"


def test_examples_set_trusted_proxies() -> None:
    """The examples name nginx as the trusted proxy (empty: audit records nginx's address)."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    env = compose["services"]["gateway"]["environment"]
    trusted = [ipaddress.ip_network(n) for n in yaml.safe_load(env["JOG_TRUSTED_PROXIES"])]
    (subnet,) = compose["networks"]["frontend"]["ipam"]["config"]
    assert "frontend" in compose["services"]["nginx"]["networks"]
    assert any(ipaddress.ip_network(subnet["subnet"]).subnet_of(t) for t in trusted)
    example = yaml.safe_load((ROOT / "settings.yaml").read_text())
    assert "127.0.0.1/32" in example["trusted_proxies"]
