"""``jitsi-oidc-gateway doctor``: the Jitsi side read next to the gateway's settings.

``check-config`` proves the gateway's settings consistent in themselves; the people who sign
in still get the wrong rights, or no sign-in at all, when Jitsi's side disagrees. This reads
what Jitsi's operators edit, each file optional and named by path:

* a Prosody site file in the form Debian's ``jitsi-meet-prosody`` / ``jitsi-meet-tokens``
  write (``/etc/prosody/conf.avail/<domain>.cfg.lua``): ``VirtualHost`` and ``Component``
  blocks of ``key = value`` lines, lists in braces;
* docker-jitsi-meet's ``.env`` (``KEY=value`` lines);
* Jitsi Meet's ``config.js`` (Debian's ``<domain>-config.js`` object literal, or
  ``config.key = value;`` lines as in docker-jitsi-meet's ``custom-config.js``; the last
  setting wins, as when the browser runs them in order).

Each mismatch names the file and line and the line to write instead. Values are compared,
never printed, where they are secrets. The files are read as text, not run: a Prosody file
that builds options with Lua code, or a config.js that computes them, is read for its
literal lines only.

"Tenants are used" means the gateway's policy or IdPs name tenants, or a rule mints
``room: "*"`` tokens (``room_scope: any``): only then can a token opening another tenant's
rooms give someone more than the policy decided. Owner/moderator rights are "granted" when
any layer of the policy sets ``affiliation: owner|moderator`` or ``moderator: true``.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from gateway.config import Settings

CONFERENCE_PREFIXES = ("conference.", "muc.")  # Debian's and docker-jitsi-meet's names


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    problem: str
    fix: str

    def render(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}\n    change to: {self.fix}"


# ---- reading the files ----------------------------------------------------------------------


@dataclass
class LuaValue:
    value: str | bool | list[str] | None  # a string, a boolean, a list of strings, or other
    line: int


@dataclass
class LuaBlock:
    kind: str  # "global", "VirtualHost" or "Component"
    name: str
    component_type: str | None
    line: int
    options: dict[str, LuaValue]


BLOCK_HEAD = re.compile(r'^\s*(VirtualHost|Component)\s+"([^"]+)"(?:\s+"([^"]+)")?')
ASSIGN = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*(.*)$")
QUOTED = re.compile(r'"([^"]*)"|\'([^\']*)\'')


def _strip_lua_comment(line: str) -> str:
    out, quote = [], None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif line.startswith("--", i):
            break
        out.append(ch)
    return "".join(out)


def read_prosody(text: str) -> list[LuaBlock]:
    blocks = [LuaBlock("global", "", None, 1, {})]
    lines = [_strip_lua_comment(line) for line in text.splitlines()]
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        head = BLOCK_HEAD.match(line)
        if head:
            blocks.append(LuaBlock(head[1], head[2], head[3], number, {}))
        elif assign := ASSIGN.match(line):
            key, raw = assign[1], assign[2].strip()
            if raw.startswith("{"):
                while "}" not in raw and i + 1 < len(lines):
                    i += 1
                    raw += " " + lines[i]
                body = raw[1 : raw.index("}")] if "}" in raw else raw[1:]
                value: str | bool | list[str] | None = [a or b for a, b in QUOTED.findall(body)]
            elif raw.rstrip(";").strip() in ("true", "false"):
                value = raw.rstrip(";").strip() == "true"
            elif quoted := QUOTED.match(raw):
                value = quoted[1] if quoted[1] is not None and raw[0] == '"' else quoted[2]
            else:
                value = None
            blocks[-1].options[key] = LuaValue(value, number)
        i += 1
    return blocks


def read_env(text: str) -> dict[str, tuple[str, int]]:
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = (value, number)
    return out


def _strip_js_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m[0].count("\n"), text, flags=re.S)
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)
    return re.sub(r"\s//[^'\"`\n]*$", "", text, flags=re.M)  # not the // of https://


def _js_strings(text: str, start: int) -> str | None:
    """String literals joined by ``+`` from ``start`` on ('a' + 'b' -> 'ab')."""
    out, pos = [], start
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text) or text[pos] not in "'\"`":
            return "".join(out) if out else None
        quote = text[pos]
        end = text.find(quote, pos + 1)
        if end < 0:
            return None
        out.append(text[pos + 1 : end])
        pos = end + 1
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text) or text[pos] != "+":
            return "".join(out)
        pos += 1


@dataclass
class JsConfig:
    values: dict[str, tuple[str | bool | dict[str, str], int]]


def read_config_js(text: str) -> JsConfig:
    text = _strip_js_comments(text)
    found: dict[str, tuple[str | bool | dict[str, str], int]] = {}

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    for key in ("tokenAuthUrl", "tokenLogoutUrl"):
        for match in re.finditer(rf"\b{key}\s*[:=]\s*", text):
            value = _js_strings(text, match.end())
            if value is not None:
                found[key] = (value, line_of(match.start()))
    for match in re.finditer(r"\btokenAuthInline\s*[:=]\s*(true|false)\b", text):
        found["tokenAuthInline"] = (match[1] == "true", line_of(match.start()))
    for match in re.finditer(r"\bsso\s*[:=]\s*\{([^}]*)\}", text):
        sso = {}
        for name in ("tokenService", "clientId"):
            inner = re.search(rf"\b{name}\s*:\s*", match[1])
            value = _js_strings(match[1], inner.end()) if inner else None
            if value is not None:
                sso[name] = value
        found["sso"] = (sso, line_of(match.start()))
    return JsConfig(found)


# ---- what the settings decide -----------------------------------------------------------------


def grants_moderators(settings: Settings) -> bool:
    policy = settings.policy
    layers = [policy.defaults, *policy.idp_defaults.values(), *policy.rules]
    return any((r := layer.rights()) is not None and r[1] for layer in layers)


def tenants_used(settings: Settings) -> bool:
    policy = settings.policy
    return (
        any(idp.tenants for idp in settings.idps)
        or any(rule.tenants or rule.url_tenants for rule in policy.rules)
        or any(
            layer.room_scope == "any"
            for layer in [policy.defaults, *policy.idp_defaults.values(), *policy.rules]
        )
    )


def _secret(settings: Settings) -> str:
    secret = settings.jitsi.app_secret
    return secret.get_secret_value() if secret else ""


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# ---- the checks ------------------------------------------------------------------------------


def check_prosody(settings: Settings, path: str, text: str) -> Iterator[Finding]:
    jitsi = settings.jitsi
    blocks = read_prosody(text)
    glob = blocks[0].options
    hosts = [b for b in blocks if b.kind == "VirtualHost"]
    token_hosts = [
        b for b in hosts if (o := b.options.get("authentication")) and o.value == "token"
    ]
    if not token_hosts:
        where = hosts[0].line if hosts else 1
        yield Finding(
            path,
            where,
            'no VirtualHost uses authentication = "token": Prosody does not read the tokens',
            '    authentication = "token"',
        )
        return
    host = token_hosts[0]

    def option(key: str) -> LuaValue | None:
        return host.options.get(key) or glob.get(key)

    app_id = option("app_id")
    if app_id is None or app_id.value != jitsi.app_id:
        yield Finding(
            path,
            app_id.line if app_id else host.line,
            f"app_id is not the gateway's jitsi.app_id ({jitsi.app_id!r})",
            f'    app_id = "{jitsi.app_id}"',
        )
    secret, key_server = option("app_secret"), option("asap_key_server")
    if jitsi.algorithm == "HS256":
        if (
            secret is None
            or not isinstance(secret.value, str)
            or not _same(secret.value, _secret(settings))
        ):
            yield Finding(
                path,
                secret.line if secret else host.line,
                "app_secret is missing or differs from the gateway's jitsi.app_secret "
                "(HS256: Prosody refuses every token)",
                '    app_secret = "<jitsi.app_secret>"',
            )
        if key_server is not None:
            yield Finding(
                path,
                key_server.line,
                "asap_key_server is set: Prosody then expects RS256 tokens, the gateway "
                "signs HS256 (jitsi.algorithm)",
                "    -- remove asap_key_server, or set jitsi.algorithm: RS256",
            )
    elif key_server is None or not isinstance(key_server.value, str) or not key_server.value:
        yield Finding(
            path,
            host.line,
            "jitsi.algorithm is RS256 but Prosody has no asap_key_server to fetch the "
            f"gateway's public key (kid {jitsi.key_id!r}) from",
            '    asap_key_server = "https://<host>/asap"  -- serves <sha256(kid)>.pem',
        )
    issuers = option("asap_accepted_issuers")
    if issuers is not None and isinstance(issuers.value, list):
        if jitsi.app_id not in issuers.value and "*" not in issuers.value:
            yield Finding(
                path,
                issuers.line,
                f"asap_accepted_issuers does not list the gateway's iss ({jitsi.app_id!r})",
                f'    asap_accepted_issuers = {{ "{jitsi.app_id}" }}',
            )
    audiences = option("asap_accepted_audiences")
    if audiences is not None and isinstance(audiences.value, list):
        if jitsi.audience not in audiences.value and "*" not in audiences.value:
            yield Finding(
                path,
                audiences.line,
                f"asap_accepted_audiences does not list the gateway's aud ({jitsi.audience!r})",
                f'    asap_accepted_audiences = {{ "{jitsi.audience}" }}',
            )
    empty = option("allow_empty_token")
    if empty is not None and empty.value is True:
        yield Finding(
            path,
            empty.line,
            "allow_empty_token = true: anyone without a token joins, the policy is bypassed",
            "    allow_empty_token = false",
        )
    verify = option("enable_domain_verification")
    if tenants_used(settings) and (verify is None or verify.value is not True):
        yield Finding(
            path,
            verify.line if verify else host.line,
            "enable_domain_verification is off while the policy uses tenants: Prosody "
            "ignores the token's sub, so one tenant's token opens every tenant's rooms",
            "    enable_domain_verification = true",
        )
    yield from _check_conference(settings, path, blocks, host)


def _check_conference(
    settings: Settings, path: str, blocks: list[LuaBlock], host: LuaBlock
) -> Iterator[Finding]:
    names = tuple(prefix + host.name for prefix in CONFERENCE_PREFIXES)
    conference = next((b for b in blocks if b.kind == "Component" and b.name in names), None)
    if conference is None:
        yield Finding(
            path,
            host.line,
            f"no conference component ({' or '.join(names)}) to load the token modules on",
            f'Component "conference.{host.name}" "muc"',
        )
        return
    listed = conference.options.get("modules_enabled")
    modules = listed.value if listed and isinstance(listed.value, list) else []
    needed = ["token_verification"]
    if grants_moderators(settings):
        needed.append("token_affiliation")
    missing = [m for m in needed if m not in modules]
    if missing:
        why = (
            "the policy grants owner/moderator, which Prosody applies only with token_affiliation"
            if "token_affiliation" in missing
            else "the token's room is not checked against the room joined"
        )
        names_line = "; ".join(f'"{m}"' for m in [*modules, *missing])
        yield Finding(
            path,
            listed.line if listed else conference.line,
            f"{conference.name} does not load {', '.join(missing)}: {why}",
            f"    modules_enabled = {{ {names_line} }}",
        )


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def check_env(settings: Settings, path: str, text: str) -> Iterator[Finding]:
    jitsi = settings.jitsi
    env = read_env(text)

    def get(key: str) -> tuple[str | None, int]:
        value, line = env.get(key, (None, len(text.splitlines()) + 1))
        return value, line

    enabled, line = get("ENABLE_AUTH")
    auth_type, type_line = get("AUTH_TYPE")
    if enabled is None or not _truthy(enabled):
        yield Finding(path, line, "ENABLE_AUTH is not on: Jitsi reads no tokens", "ENABLE_AUTH=1")
    if auth_type != "jwt":
        yield Finding(path, type_line, "AUTH_TYPE is not jwt", "AUTH_TYPE=jwt")
    app_id, line = get("JWT_APP_ID")
    if app_id != jitsi.app_id:
        yield Finding(
            path,
            line,
            f"JWT_APP_ID is not the gateway's jitsi.app_id ({jitsi.app_id!r})",
            f"JWT_APP_ID={jitsi.app_id}",
        )
    secret, line = get("JWT_APP_SECRET")
    key_server, ks_line = get("JWT_ASAP_KEYSERVER")
    if jitsi.algorithm == "HS256":
        if secret is None or not _same(secret, _secret(settings)):
            yield Finding(
                path,
                line,
                "JWT_APP_SECRET is missing or differs from the gateway's jitsi.app_secret "
                "(HS256: Prosody refuses every token)",
                "JWT_APP_SECRET=<jitsi.app_secret>",
            )
    elif not key_server:
        yield Finding(
            path,
            ks_line,
            "jitsi.algorithm is RS256 but JWT_ASAP_KEYSERVER is not set",
            "JWT_ASAP_KEYSERVER=https://<host>/asap",
        )
    issuers, line = get("JWT_ACCEPTED_ISSUERS")
    if issuers is not None and not {jitsi.app_id, "*"} & {x.strip() for x in issuers.split(",")}:
        yield Finding(
            path,
            line,
            f"JWT_ACCEPTED_ISSUERS does not list the gateway's iss ({jitsi.app_id!r})",
            f"JWT_ACCEPTED_ISSUERS={jitsi.app_id}",
        )
    audiences, line = get("JWT_ACCEPTED_AUDIENCES")
    if audiences is not None and not {jitsi.audience, "*"} & {
        x.strip() for x in audiences.split(",")
    }:
        yield Finding(
            path,
            line,
            f"JWT_ACCEPTED_AUDIENCES does not list the gateway's aud ({jitsi.audience!r})",
            f"JWT_ACCEPTED_AUDIENCES={jitsi.audience}",
        )
    empty, line = get("JWT_ALLOW_EMPTY")
    if empty is not None and _truthy(empty):
        yield Finding(
            path,
            line,
            "JWT_ALLOW_EMPTY is on: anyone without a token joins, the policy is bypassed",
            "JWT_ALLOW_EMPTY=0",
        )
    verify, line = get("JWT_ENABLE_DOMAIN_VERIFICATION")
    if tenants_used(settings) and (verify is None or not _truthy(verify)):
        yield Finding(
            path,
            line,
            "JWT_ENABLE_DOMAIN_VERIFICATION is off (docker-jitsi-meet's default) while the "
            "policy uses tenants: one tenant's token opens every tenant's rooms",
            "JWT_ENABLE_DOMAIN_VERIFICATION=1",
        )
    if grants_moderators(settings):
        modules, line = get("XMPP_MUC_MODULES")
        listed = [m.strip() for m in (modules or "").split(",") if m.strip()]
        if "token_affiliation" not in listed:
            yield Finding(
                path,
                line,
                "XMPP_MUC_MODULES lacks token_affiliation while the policy grants "
                "owner/moderator: everyone joins as a plain participant",
                f"XMPP_MUC_MODULES={','.join([*listed, 'token_affiliation'])}",
            )
        auto, line = get("ENABLE_AUTO_OWNER")
        if auto is None or _truthy(auto):
            yield Finding(
                path,
                line,
                "ENABLE_AUTO_OWNER is on (docker-jitsi-meet's default): the first person in a "
                "room becomes moderator whatever the policy says",
                "ENABLE_AUTO_OWNER=0",
            )
    url, line = get("TOKEN_AUTH_URL")
    if url is not None:
        yield from _check_auth_url(settings, path, line, url, "TOKEN_AUTH_URL=", inline=None)


def check_config_js(settings: Settings, path: str, text: str) -> Iterator[Finding]:
    values = read_config_js(text).values
    end = len(text.splitlines()) + 1
    public = settings.public_url.rstrip("/")
    url = values.get("tokenAuthUrl")
    if url is None:
        yield Finding(
            path,
            end,
            "no tokenAuthUrl: Jitsi's login button does not lead to the gateway",
            f"config.tokenAuthUrl = '{public}/oidc/auth?room={{room}}&state={{state}}';",
        )
    else:
        inline = values.get("tokenAuthInline", (False, end))
        sso = values.get("sso")
        yield from _check_auth_url(
            settings,
            path,
            url[1],
            str(url[0]),
            "config.tokenAuthUrl = ",
            inline=(bool(inline[0]), inline[1]),
            sso=(sso[0], sso[1]) if sso else None,  # type: ignore[arg-type]
            end=end,
        )
    logout = values.get("tokenLogoutUrl")
    wanted = f"{public}/oidc/logout/silent"
    if logout is None or logout[0] != wanted:
        yield Finding(
            path,
            logout[1] if logout else end,
            "tokenLogoutUrl is not the gateway's silent logout: logging out in Jitsi leaves "
            "the gateway session (and single sign-on) alive",
            f"config.tokenLogoutUrl = '{wanted}';",
        )


def _check_auth_url(
    settings: Settings,
    path: str,
    line: int,
    url: str,
    prefix: str,
    *,
    inline: tuple[bool, int] | None,
    sso: tuple[dict[str, str], int] | None = None,
    end: int = 0,
) -> Iterator[Finding]:
    public = settings.public_url.rstrip("/")
    redirect_flow = f"{public}/oidc/auth?room={{room}}&state={{state}}"
    quote = "'" if prefix.startswith("config.") else ""
    tail = ";" if quote else ""
    if url.startswith(f"{public}/oidc/auth?"):
        if "{state}" not in url and "{room}" not in url:
            yield Finding(
                path,
                line,
                "tokenAuthUrl carries neither {room} nor {state}: the gateway cannot tell the room",
                f"{prefix}{quote}{redirect_flow}{quote}{tail}",
            )
        return
    if not url.startswith(f"{public}/oidc/authorize?"):
        yield Finding(
            path,
            line,
            f"tokenAuthUrl does not lead to the gateway ({public}/oidc/auth or /oidc/authorize)",
            f"{prefix}{quote}{redirect_flow}{quote}{tail}",
        )
        return
    service = settings.token_service
    client_id = (parse_qs(urlsplit(url).query).get("client_id") or [None])[0]
    if not service.enabled:
        yield Finding(
            path,
            line,
            "tokenAuthUrl is the token service's /oidc/authorize, but token_service.enabled "
            "is false in the gateway's settings",
            "token_service: {enabled: true, ...}  (settings.yaml), or use /oidc/auth",
        )
    elif service.client(client_id) is None or client_id is None:
        yield Finding(
            path,
            line,
            f"tokenAuthUrl names client_id {client_id!r}, which token_service.clients does "
            "not register",
            f"{prefix}{quote}{public}/oidc/authorize?client_id="
            f"{service.clients[0].client_id if service.clients else '<client_id>'}"
            f"&state={{state}}&code_challenge={{code_challenge}}{quote}{tail}",
        )
    for needed in ("{state}", "{code_challenge}"):
        if needed not in url:
            yield Finding(
                path,
                line,
                f"tokenAuthUrl lacks {needed}, which Jitsi's sso.html needs back",
                f"{prefix}{quote}{public}/oidc/authorize?client_id={client_id or '<client_id>'}"
                f"&state={{state}}&code_challenge={{code_challenge}}{quote}{tail}",
            )
    if inline is not None and not inline[0]:
        yield Finding(
            path,
            inline[1],
            "tokenAuthInline is not true: Jitsi's sso.html works only in the popup (its "
            'full-page path has no nonce: "No OAuth nonce found in session"); for a '
            "full-page sign-in use the redirect flow (/oidc/auth) instead",
            "config.tokenAuthInline = true;",
        )
    if inline is None:
        return
    host = urlsplit(public)
    wanted = {"tokenService": f"{host.netloc}{host.path}/oidc", "clientId": client_id or ""}
    have = sso[0] if sso else {}
    if any(have.get(k) != v for k, v in wanted.items()):
        yield Finding(
            path,
            sso[1] if sso else end,
            "config.sso does not name the gateway's token service and the tokenAuthUrl's "
            "client (sso.html POSTs to https://<sso.tokenService>/token)",
            f"config.sso = {{ tokenService: '{wanted['tokenService']}', "
            f"clientId: '{wanted['clientId']}' }};",
        )


CHECKS = {"prosody": check_prosody, "env": check_env, "config_js": check_config_js}


def diagnose(settings: Settings, files: dict[str, Path]) -> list[Finding]:
    """Every mismatch between the given Jitsi files (kind -> path) and the settings."""
    findings: list[Finding] = []
    for kind, path in files.items():
        text = path.read_text(encoding="utf-8", errors="replace")
        findings.extend(CHECKS[kind](settings, str(path), text))
    return findings
