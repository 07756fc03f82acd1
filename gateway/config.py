"""Settings: settings.yaml plus environment overrides, validated into typed models.

Every key can be overridden from the environment: ``JOG_`` followed by the key's path in
upper case with ``__`` between levels and list indices as numbers, for example
``JOG_JITSI__APP_SECRET`` or ``JOG_IDPS__0__CLIENT_SECRET``. A variable ending in ``_FILE``
(``JOG_IDPS__0__CLIENT_SECRET_FILE=/run/secrets/kc``) reads the value from that file, the
Docker/Kubernetes secrets convention. Values are parsed as YAML scalars, so ``true`` and
``300`` become a boolean and a number.

Validation errors are collected and reported as ``path: what is wrong`` lines; the CLI prints
them and exits without a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.policy_settings import PolicySettings
from gateway.tokenservice.settings import TokenServiceSettings

ENV_PREFIX = "JOG_"
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class ConfigError(Exception):
    """Settings that cannot run; ``problems`` holds one ``path: message`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str, *, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} must not carry a query or fragment")
    return value.rstrip("/")


class Listen(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    drain_seconds: float = Field(
        8.0, ge=0, le=300, description="on SIGTERM: how long requests in flight may finish"
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="uvloop (libuv; about a third less CPU per request) or asyncio's own"
    )
    # Limits on the gateway's own port (gateway/serving.py): nothing it serves needs more.
    max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="largest request body (forms, logout tokens); larger ones get 400 unread",
    )
    max_header_bytes: int = Field(
        32 * 1024, ge=4096, le=1024 * 1024, description="request line plus headers"
    )
    idle_seconds: float = Field(
        75.0,
        gt=0,
        le=3600,
        description="an idle keep-alive connection, or one sending no headers (above nginx's 60 s)",
    )
    body_seconds: float = Field(30.0, gt=0, le=3600, description="time to send a request body")
    max_connections: int = Field(
        2000, ge=1, le=1_000_000, description="open connections per process; more are closed"
    )


class Mongo(Strict):
    uri: str | None = Field(
        None, description="mongodb:// URI; empty starts the embedded SecantusDB (demo/dev only)"
    )
    database: str = Field("jitsi_oidc_gateway", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    embedded_path: str = "./var/secantus"
    durable_writes: bool = Field(
        True,
        description="journaled, majority-acknowledged writes (w: majority, j: true)",
    )


class Cookies(Strict):
    """Signed cookies. Names may carry the ``__Host-`` prefix (needs ``secure``): browsers
    then refuse the cookie from sibling subdomains, so none can plant a session or flow."""

    secret: SecretStr
    secure: bool = True
    session_name: str = Field("jog_session", pattern=r"^(__Host-)?[A-Za-z0-9_]{1,40}$")
    flow_name: str = Field("jog_flow", pattern=r"^(__Host-)?[A-Za-z0-9_]{1,40}$")

    @model_validator(mode="after")
    def _host_prefix_needs_secure(self) -> Cookies:
        for name in (self.session_name, self.flow_name):
            if name.startswith("__Host-") and not self.secure:
                raise ValueError(f"cookie name {name!r} needs secure: true (HTTPS)")
        return self

    @field_validator("secret")
    @classmethod
    def _not_placeholder(cls, v: SecretStr) -> SecretStr:
        if v.get_secret_value().startswith("CHANGE-ME"):
            raise ValueError("is still the example placeholder; set a random value of 32+ chars")
        if len(v.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (use a random value)")
        return v


class Session(Strict):
    lifetime_seconds: int = Field(8 * 3600, ge=60, le=30 * 86400)
    flow_lifetime_seconds: int = Field(600, ge=30, le=3600)
    refresh_token_key: SecretStr | None = Field(
        None,
        description="key (32+ characters) that encrypts the IdPs' refresh tokens at rest "
        "(AES-256-GCM); default: derived from cookies.secret",
    )

    @field_validator("refresh_token_key")
    @classmethod
    def _key_strength(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        if v.get_secret_value().startswith("CHANGE-ME"):
            raise ValueError("is still the example placeholder; set a random value of 32+ chars")
        if len(v.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (use a random value)")
        return v


class Avatar(Strict):
    gravatar: bool = True
    default_url: str | None = None


class Jitsi(Strict):
    base_url: str
    app_id: str = Field(min_length=1)
    audience: str = Field("jitsi", min_length=1)
    domain: str = Field(min_length=1, description="token `sub` when no tenant is given")
    algorithm: Literal["HS256", "RS256"] = "HS256"
    app_secret: SecretStr | None = None
    private_key_file: Path | None = None
    key_id: str | None = None
    token_lifetime_seconds: int = Field(300, ge=30, le=86400)
    not_before_skew_seconds: int = Field(10, ge=0, le=300)
    room_wildcard: bool = False
    avatar: Avatar = Avatar()

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return _http_url(v, what="base_url")

    @model_validator(mode="after")
    def _key_for_algorithm(self) -> Jitsi:
        # "key: problem" messages are reported at that key's path (see _problem_line).
        secret = self.app_secret.get_secret_value() if self.app_secret else ""
        if secret.startswith("CHANGE-ME"):
            raise ValueError("app_secret: is still the example placeholder; use Prosody's secret")
        if self.algorithm == "HS256":
            if self.app_secret is None:
                raise ValueError("app_secret: required by algorithm HS256 (Prosody's app_secret)")
            if len(secret) < 32:
                raise ValueError(
                    f"app_secret: must be at least 32 characters for HS256 (RFC 7518 3.2), "
                    f"got {len(secret)}"
                )
        else:
            if self.private_key_file is None:
                raise ValueError("private_key_file: required by algorithm RS256")
            if not self.key_id:
                raise ValueError("key_id: required by algorithm RS256")
            if not self.private_key_file.is_file():
                raise ValueError(f"private_key_file: {self.private_key_file} does not exist")
        return self


class ClientAssertion(Strict):
    """``private_key_jwt`` (RFC 7523): the gateway signs a short assertion with this key."""

    key_file: Path = Field(description="PEM private key (RSA 2048+ or EC P-256/384/521)")
    key_id: str | None = Field(None, description="JWS kid; default: the RFC 7638 thumbprint")
    algorithm: Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] | None = Field(
        None, description="RSA keys only; EC keys use their curve's ES algorithm"
    )
    certificate_file: Path | None = Field(
        None, description="PEM certificate of the key: adds x5t / x5t#S256 (Entra ID)"
    )
    audience: Literal["token_endpoint", "issuer"] = "token_endpoint"
    lifetime_seconds: int = Field(60, ge=10, le=300)

    @model_validator(mode="after")
    def _key_loads(self) -> ClientAssertion:
        from gateway.oidc.client_auth import KeyFileError, SigningKey

        try:
            SigningKey.load(
                self.key_file,
                key_id=self.key_id,
                algorithm=self.algorithm,
                certificate_file=self.certificate_file,
            )
        except KeyFileError as exc:
            raise ValueError(f"key_file: {exc}") from None
        return self


class IdP(Strict):
    id: str = Field(pattern=ID_PATTERN)
    adapter: str = Field(min_length=1)
    display_name: str | None = None
    issuer: str
    discovery_url: str | None = None
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    token_endpoint_auth_method: Literal[
        "client_secret_basic", "client_secret_post", "private_key_jwt"
    ] = "client_secret_basic"
    client_assertion: ClientAssertion | None = None
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    userinfo: bool = False
    allowed_algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
    clock_leeway_seconds: int = Field(60, ge=0, le=300)
    jwks_min_refresh_seconds: float = Field(10.0, ge=0, le=3600)
    jwks_max_age_seconds: float = Field(3600.0, ge=60)
    http_timeout_seconds: float = Field(10.0, gt=0, le=60)
    options: dict[str, Any] = Field(default_factory=dict)
    email_domains: tuple[str, ...] = Field(
        (),
        description="e-mail domains this IdP owns: the chooser sends them here, and only this "
        "IdP's assertions of them count for policy and the displayed e-mail",
    )
    rooms: tuple[str, ...] = Field(
        (), description="glob patterns (lower-case room names) this IdP is pinned to; empty: any"
    )
    tenants: tuple[str, ...] = Field((), description="tenants this IdP is pinned to; empty: any")
    external: bool | None = Field(
        None,
        description="people from outside: Jitsi shows their name as 'Name (label)' and the "
        "admin tools' username searches leave them out; unset: outside unless the IdP owns an "
        "e-mail domain or no IdP owns one (gateway/trust.py)",
    )
    picture_avatar: bool = Field(
        False, description="use the IdP's https picture claim as the Jitsi avatar"
    )
    revalidate_seconds: int = Field(
        300,
        ge=0,
        le=86400,
        description="ask the IdP (refresh token) at most this long after the last answer "
        "whether the person may still sign in; 0: never",
    )
    revalidate_outage: Literal["allow", "refuse"] = Field(
        "allow",
        description="the IdP unreachable at revalidation: allow (for at most "
        "revalidate_outage_grace_seconds) or refuse (end the session)",
    )
    revalidate_outage_grace_seconds: int = Field(900, ge=0, le=86400)
    max_session_age_seconds: int = Field(
        3600,
        ge=60,
        le=30 * 86400,
        description="with revalidation on but no refresh token from the IdP: the person "
        "signs in at the IdP again after this long",
    )
    par: Literal["auto", "always", "never"] = Field(
        "auto",
        description="pushed authorization requests (RFC 9126): auto uses them when the IdP "
        "requires them",
    )
    frontchannel_logout: bool = Field(
        True,
        description="accept OpenID Connect front-channel logout at "
        "/oidc/frontchannel-logout/<id> (framed by this IdP's pages only)",
    )

    @field_validator("email_domains", "tenants")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(x.strip().lower() for x in v)

    @field_validator("rooms")
    @classmethod
    def _room_globs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in v:
            if not re.fullmatch(r"[a-z0-9_~*?\[\]!-]{1,128}", pattern):
                raise ValueError(
                    f"room pattern {pattern!r}: lower-case room characters and * ? [ ]"
                )
        return v

    @model_validator(mode="after")
    def _credentials(self) -> IdP:
        if self.token_endpoint_auth_method == "private_key_jwt":
            if self.client_assertion is None:
                raise ValueError("client_assertion: required by private_key_jwt (key_file)")
        elif self.client_secret is None:
            raise ValueError(
                f"client_secret: required by {self.token_endpoint_auth_method} "
                "(or use token_endpoint_auth_method: private_key_jwt)"
            )
        return self

    @model_validator(mode="after")
    def _templated_issuer(self) -> IdP:
        if "{" in self.issuer and not self.discovery_url:
            raise ValueError(
                "an issuer with a placeholder (such as {tenantid}) needs discovery_url: the "
                "discovery document cannot be found from a template"
            )
        return self

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an absolute http(s) URL, got {v!r}")
        return v

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in v:
            raise ValueError("must contain 'openid'")
        return v

    @field_validator("allowed_algorithms")
    @classmethod
    def _asymmetric_only(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"}
        allowed |= {"ES512", "EdDSA"}
        bad = [a for a in v if a not in allowed]
        if bad:
            raise ValueError(
                f"unsupported or unsafe algorithms {bad}; choose from {sorted(allowed)}"
            )
        if not v:
            raise ValueError("must list at least one algorithm")
        return v

    @property
    def label(self) -> str:
        return self.display_name or self.id


# An app's own scheme, by an allow-list of shapes rather than a deny-list of browser schemes:
# a reverse-DNS name (org.jitsi.meet, com.example.meet: the form the mobile apps use and no
# browser-handled scheme has), or the Jitsi desktop app's own jitsi-meet.
APP_SCHEME = re.compile(r"[a-z][a-z0-9-]{0,30}(\.[a-z0-9][a-z0-9-]{0,30}){1,6}")
DESKTOP_SCHEMES = frozenset({"jitsi-meet"})
ANDROID_PACKAGE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+")


class Apps(Strict):
    """Where a sign-in that Jitsi's mobile or desktop app started ends: the app's own scheme.

    The apps open ``tokenAuthUrl`` in the system browser with ``ios``, ``android`` or
    ``electron`` in ``{state}``; after sign-in the meeting must open in the app again.
    White-labelled apps have their own schemes and package. ``null`` sends that app's people
    to the web page instead. Never derived from request input.
    """

    ios_scheme: str | None = "org.jitsi.meet"
    android_scheme: str | None = "org.jitsi.meet"
    android_package: str | None = "org.jitsi.meet"
    electron_scheme: str | None = "jitsi-meet"

    @field_validator("ios_scheme", "android_scheme", "electron_scheme")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not (APP_SCHEME.fullmatch(v) or v in DESKTOP_SCHEMES):
            raise ValueError(
                f"{v!r} is not an app's own URI scheme: a reverse-DNS name such as "
                "com.example.meet (lower-case), or jitsi-meet"
            )
        return v

    @field_validator("android_package")
    @classmethod
    def _package(cls, v: str | None) -> str | None:
        if v is not None and not ANDROID_PACKAGE.fullmatch(v):
            raise ValueError(f"{v!r} is not an Android package name (like org.jitsi.meet)")
        return v


class Delivery(Strict):
    """How the Jitsi token reaches the room page.

    ``fragment`` puts it after ``#`` (never sent to servers or logged by proxies); the room
    URL then carries ``flag_parameter=1`` so nginx's entry rule does not send it back here.
    """

    mode: Literal["query", "fragment"] = "query"
    flag_parameter: str = Field("oidc", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    apps: Apps = Apps()

    @field_validator("flag_parameter")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in {"jwt", "room", "tenant", "state", "idp", "login_hint"}:
            raise ValueError(f"{v!r} is used by Jitsi or the gateway; pick another name")
        return v


class Http(Strict):
    """Outbound calls to IdPs (discovery, keys, token, userinfo, Graph)."""

    max_response_bytes: int = Field(
        1024 * 1024, ge=16 * 1024, le=64 * 1024 * 1024, description="answers above are refused"
    )


class Logout(Strict):
    """Ending sessions: here, at the IdP (RP-initiated) and from the IdP (back-channel)."""

    idp_logout: bool = Field(True, description="continue to the IdP's end_session_endpoint")
    backchannel: bool = Field(True, description="accept back-channel logout tokens")
    logout_token_max_age_seconds: int = Field(300, ge=30, le=3600)


class Metrics(Strict):
    """``/metrics`` (Prometheus). With ``bearer_token`` set, scrapes must send it."""

    enabled: bool = True
    bearer_token: SecretStr | None = Field(None, min_length=16)


class Audit(Strict):
    """The audit trail: write bound, batching, the local spool for outages, retention."""

    write_timeout_seconds: float = Field(1.0, gt=0, le=10)
    wait_for_store: bool = Field(
        False,
        description="true: each answer waits until its events are in MongoDB (or the spool); "
        "false: until they are in the local journal in spool_dir (needs a spool_dir)",
    )
    batch_size: int = Field(500, ge=1, le=10000)
    spool_dir: str | None = Field(
        "./var/audit-spool", description="where events wait while MongoDB is down; null: off"
    )
    spool_max_bytes: int = Field(256 * 1024 * 1024, ge=4096)
    replay_interval_seconds: float = Field(5.0, gt=0, le=3600)
    retention_days: int | None = Field(None, ge=1, le=36500)


class AdminToken(Strict):
    """One admin bearer token, stored only as the SHA-256 hex digest of the token."""

    name: str = Field(pattern=ID_PATTERN)
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, v: str) -> str:
        v = v.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError(
                "must be the SHA-256 hex digest of the token (64 hex characters), not the "
                "token itself; `jitsi-oidc-gateway audit new-token` prints both"
            )
        return v


class Admin(Strict):
    """The admin API (``/admin/audit``) and its web page (``/admin/``); no tokens: every
    request is refused."""

    tokens: tuple[AdminToken, ...] = ()
    max_page_size: int = Field(1000, ge=1, le=10000)
    query_timeout_seconds: float = Field(120, gt=0, le=3600, description="a page or stats")
    export_timeout_seconds: float = Field(3600, gt=0, le=86400, description="a whole export")
    web_session_seconds: int = Field(
        8 * 3600, ge=60, le=7 * 86400, description="how long a /admin/ sign-in lasts"
    )
    max_failures: int = Field(
        10, ge=1, le=1000, description="wrong admin tokens per client address per window"
    )
    failure_window_seconds: int = Field(
        300, ge=1, le=86400, description="after max_failures, refused until the oldest leaves"
    )

    @model_validator(mode="after")
    def _unique(self) -> Admin:
        names = [t.name for t in self.tokens]
        if len(names) != len(set(names)):
            raise ValueError("admin token names must be unique")
        return self


class Settings(Strict):
    public_url: str
    listen: Listen = Listen()
    mongodb: Mongo = Mongo()
    cookies: Cookies
    session: Session = Session()
    jitsi: Jitsi
    idps: tuple[IdP, ...] = Field(min_length=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    delivery: Delivery = Delivery()
    logout: Logout = Logout()
    http: Http = Http()
    metrics: Metrics = Metrics()
    audit: Audit = Audit()
    admin: Admin = Admin()
    trusted_proxies: tuple[IPvAnyNetwork, ...] = Field(
        (), description="CIDRs whose X-Forwarded-For / X-Real-IP is believed (nginx)"
    )
    policy: PolicySettings = PolicySettings()
    token_service: TokenServiceSettings = TokenServiceSettings()

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str) -> str:
        return _http_url(v, what="public_url")

    @field_validator("idps")
    @classmethod
    def _unique_idp_ids(cls, v: tuple[IdP, ...]) -> tuple[IdP, ...]:
        seen: set[str] = set()
        for idp in v:
            if idp.id in seen:
                raise ValueError(f"duplicate IdP id {idp.id!r}")
            seen.add(idp.id)
        return v

    def redirect_uri(self, idp_id: str) -> str:
        """Each IdP has its own callback URI: a code can only ever reach the flow's IdP
        (mix-up defence for IdPs that send no RFC 9207 ``iss``; RFC 9700 4.4.2)."""
        return f"{self.public_url}/oidc/redirect/{idp_id}"

    def idp(self, idp_id: str) -> IdP | None:
        return next((i for i in self.idps if i.id == idp_id), None)

    def email_trust(self) -> dict[str, tuple[str, ...]]:
        """IdP id -> the e-mail domains it is trusted for: its ``email_domains``. One list
        serves the chooser and the trust, so an IdP routed a domain is the one believed for it."""
        return {i.id: i.email_domains for i in self.idps}


def format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _field_names(model: type[BaseModel], out: set[str]) -> set[str]:
    for name, field in model.model_fields.items():
        out.add(name)
        for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                _field_names(arg, out)
    return out


def _file_fields() -> set[str]:
    """Settings keys that themselves end in ``_file`` (``JOG_..._PRIVATE_KEY_FILE`` sets them)."""
    return {n for n in _field_names(Settings, set()) if n.endswith("_file")}


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Write ``JOG_A__B__0__C`` overrides into ``data``; returns problems found."""
    problems: list[str] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        raw_path = name[len(ENV_PREFIX) :]
        value: Any = environ[name]
        last_key = raw_path.rsplit("__", 1)[-1].lower()
        if raw_path.endswith("_FILE") and last_key not in _FILE_FIELDS:
            raw_path = raw_path[: -len("_FILE")]
            try:
                value = Path(value).read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{name}: cannot read {value}: {exc.strerror}")
                continue
        elif value.lstrip().startswith(("[", "{")):
            try:  # lists and mappings in YAML flow style: JOG_IDPS__0__SCOPES="[openid, email]"
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                problems.append(f"{name}: not a valid YAML list or mapping")
                continue
        # Scalars stay verbatim strings (secrets keep every character); the models coerce
        # "true", "300" and the like to the field's type.
        keys = [k.lower() for k in raw_path.split("__") if k]
        if not keys:
            continue
        node: Any = data
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            if isinstance(node, list):
                if not re.fullmatch(r"\d+", key) or int(key) > len(node):
                    problems.append(f"{name}: no list item {key} under {'.'.join(keys[:i])}")
                    break
                idx = int(key)
                if idx == len(node):
                    node.append({})
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[key] = value
                else:
                    nxt = node.get(key)
                    if nxt is None:
                        nxt = [] if re.fullmatch(r"\d+", keys[i + 1]) else {}
                        node[key] = nxt
                    node = nxt
            else:
                problems.append(f"{name}: {'.'.join(keys[:i])} is not a mapping or list")
                break
    return problems


DEFAULT_SETTINGS = "settings.yaml"


def settings_file(given: str | None) -> str | None:
    """The settings file a command reads: ``-c FILE``, else ``./settings.yaml`` if present."""
    if given:
        return given
    return DEFAULT_SETTINGS if Path(DEFAULT_SETTINGS).exists() else None


def load_settings_file(path: str | None) -> Settings:
    """Settings from ``path`` (and ``JOG_`` variables); a missing file is a ConfigError."""
    if path is not None and not Path(path).exists():
        raise ConfigError([f"{path}: file not found"])
    return load_settings(path)


def load_settings(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read YAML (if given), apply environment overrides, validate. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: {_yaml_problem(exc)}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping"])
        data = loaded
    problems = _apply_env(data, environ)
    if problems:
        raise ConfigError(problems)
    return settings_from_dict(data)


_FILE_FIELDS = _file_fields()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``not valid YAML at line L, column C: problem`` (PyYAML's own text names no file)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    if mark is None:
        return f"not valid YAML: {problem}"
    return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


_FIELD_PREFIX = re.compile(r"([a-z][a-z0-9_]*): (.+)", re.S)


def _problem_line(err: Any) -> str:
    """``path: message``; a model check's ``key: message`` is reported at ``path.key``."""
    loc = tuple(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    match = _FIELD_PREFIX.fullmatch(msg)
    if err["type"] == "value_error" and match and match.group(1) in _FIELD_NAMES:
        loc, msg = (*loc, match.group(1)), match.group(2)
    return f"{format_path(loc)}: {msg}"


_FIELD_NAMES = _field_names(Settings, set())


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_problem_line(err) for err in exc.errors()]) from None
    problems = settings.policy.problems(
        (i.id for i in settings.idps), settings.jitsi.room_wildcard, settings.email_trust()
    )
    if problems:
        raise ConfigError(problems)
    return settings
