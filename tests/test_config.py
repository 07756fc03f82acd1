"""Unit tests for gateway.config: validation paths, environment overrides, secret hygiene."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import ConfigError, Settings, load_settings, settings_from_dict

COOKIE_SECRET = "cookie-secret-0123456789abcdefghijklmnop"
APP_SECRET = "jitsi-app-secret-0123456789abcdefghijkl"
CLIENT_SECRET = "idp-client-secret-xyz"

MINIMAL: dict[str, Any] = {
    "public_url": "https://gw.example.com",
    "cookies": {"secret": COOKIE_SECRET},
    "jitsi": {
        "base_url": "https://meet.example.com",
        "app_id": "my_jitsi_app",
        "domain": "meet.example.com",
        "app_secret": APP_SECRET,
    },
    "idps": [
        {
            "id": "corp",
            "adapter": "generic",
            "issuer": "https://idp.example.org/realms/staff",
            "client_id": "jitsi",
            "client_secret": CLIENT_SECRET,
        }
    ],
}


def minimal() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL)


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_minimal_settings_are_valid() -> None:
    settings = settings_from_dict(minimal())
    assert isinstance(settings, Settings)
    assert settings.redirect_uri("corp") == "https://gw.example.com/oidc/redirect/corp"
    assert settings.cookies.secure is True
    assert settings.jitsi.algorithm == "HS256"
    assert settings.jitsi.audience == "jitsi"
    idp = settings.idp("corp")
    assert idp is not None and idp.client_secret.get_secret_value() == CLIENT_SECRET
    assert idp.scopes == ("openid", "profile", "email")
    assert "HS256" not in idp.allowed_algorithms
    assert settings.idp("other") is None


def test_trailing_slashes_dropped_from_public_and_base_url() -> None:
    data = minimal()
    data["public_url"] += "/"
    data["jitsi"]["base_url"] += "/"
    settings = settings_from_dict(data)
    assert settings.public_url == "https://gw.example.com"
    assert settings.jitsi.base_url == "https://meet.example.com"


def test_settings_are_frozen() -> None:
    settings = settings_from_dict(minimal())
    with pytest.raises(ValueError, match="frozen"):
        settings.public_url = "https://evil.example.com"  # type: ignore[misc]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets a dotted path ("idps.0.scopes"); value DEL removes it."""

    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if value is DEL:
            del node[key]
        else:
            node[key] = value

    return apply


DEL = object()


def _duplicate_idp(data: dict[str, Any]) -> None:
    data["idps"].append(copy.deepcopy(data["idps"][0]))


# (mutation, the start of the expected problem line; "…" stands for any text), id
BROKEN = [
    pytest.param(
        _set("idps.0.client_secret", DEL),
        "idps[0].client_secret: required by client_secret_basic",
        id="missing_client_secret",
    ),
    pytest.param(
        _set("jitsi.app_id", DEL), "jitsi.app_id: Field required", id="missing_jitsi_app_id"
    ),
    pytest.param(_set("cookies", DEL), "cookies: Field required", id="missing_cookies"),
    pytest.param(
        _set("jitsi.app_secret", DEL),
        "jitsi.app_secret: required by algorithm HS256",
        id="hs256_without_app_secret",
    ),
    pytest.param(
        _set("jitsi.app_secret", "x" * 31),
        "jitsi.app_secret: must be at least 32 characters for HS256 (RFC 7518 3.2), got 31",
        id="hs256_short_app_secret",
    ),
    pytest.param(
        _set("jitsi.algorithm", "RS256"),
        "jitsi.private_key_file: required by algorithm RS256",
        id="rs256_without_key",
    ),
    pytest.param(
        _set("jitsi.algorithm", "none"),
        "jitsi.algorithm: Input should be 'HS256' or 'RS256'",
        id="jitsi_algorithm_none",
    ),
    pytest.param(
        _set("public_ulr", "https://x.example"),
        "public_ulr: Extra inputs are not permitted",
        id="typo_top_level",
    ),
    pytest.param(
        _set("jitsi.app_secert", APP_SECRET),
        "jitsi.app_secert: Extra inputs are not permitted",
        id="typo_in_jitsi",
    ),
    pytest.param(
        _set("idps.0.client_secert", "x"),
        "idps[0].client_secert: Extra inputs are not permitted",
        id="typo_in_idp",
    ),
    pytest.param(
        _set("jitsi.avatar", {"gravtar": False}),
        "jitsi.avatar.gravtar: Extra inputs are not permitted",
        id="typo_in_avatar",
    ),
    pytest.param(
        _set("cookies.secret", "CHANGE-ME-to-32-or-more-random-characters"),
        "cookies.secret: is still the example placeholder",
        id="cookie_secret_placeholder",
    ),
    pytest.param(
        _set("cookies.secret", "short-secret"),
        "cookies.secret: … at least 32",
        id="cookie_secret_too_short",
    ),
    pytest.param(
        _set("public_url", "https://gw.example.com/?x=1"),
        "public_url: public_url must not carry a query or fragment",
        id="public_url_with_query",
    ),
    pytest.param(
        _set("public_url", "https://gw.example.com/#top"),
        "public_url: public_url must not carry a query or fragment",
        id="public_url_with_fragment",
    ),
    pytest.param(
        _set("public_url", "/gateway"),
        "public_url: public_url must be an absolute http(s) URL",
        id="public_url_relative",
    ),
    pytest.param(
        _set("public_url", "javascript:alert(1)"),
        "public_url: public_url must be an absolute http(s) URL",
        id="public_url_javascript",
    ),
    pytest.param(
        _set("jitsi.base_url", "https://meet.example.com?a=b"),
        "jitsi.base_url: base_url must not carry a query or fragment",
        id="jitsi_base_url_with_query",
    ),
    pytest.param(
        _set("idps.0.issuer", "idp.example.org"),
        "idps[0].issuer: must be an absolute http(s) URL",
        id="idp_issuer_not_url",
    ),
    pytest.param(
        _set("idps.0.id", "Corp"), "idps[0].id: String should match pattern", id="idp_id_upper_case"
    ),
    pytest.param(_set("idps", []), "idps: ", id="no_idps"),
    pytest.param(
        _set("idps.0.scopes", ["profile", "email"]),
        "idps[0].scopes: must contain 'openid'",
        id="scopes_without_openid",
    ),
    pytest.param(
        _set("idps.0.allowed_algorithms", ["RS256", "HS256"]),
        "idps[0].allowed_algorithms: unsupported or unsafe algorithms ['HS256']",
        id="allowed_algorithms_hs256",
    ),
    pytest.param(
        _set("idps.0.allowed_algorithms", ["none"]),
        "idps[0].allowed_algorithms: unsupported or unsafe algorithms ['none']",
        id="allowed_algorithms_none",
    ),
    pytest.param(
        _set("idps.0.allowed_algorithms", []),
        "idps[0].allowed_algorithms: must list at least one algorithm",
        id="allowed_algorithms_empty",
    ),
    pytest.param(
        _set("idps.0.token_endpoint_auth_method", "none"),
        "idps[0].token_endpoint_auth_method: Input should be",
        id="auth_method_unknown",
    ),
    pytest.param(
        _set("idps.0.clock_leeway_seconds", 3600),
        "idps[0].clock_leeway_seconds: Input should be less than or equal to 300",
        id="leeway_too_large",
    ),
    pytest.param(
        _set("listen", {"port": 70000}),
        "listen.port: Input should be less than or equal to 65535",
        id="port_out_of_range",
    ),
    pytest.param(_set("log_level", "TRACE"), "log_level: Input should be", id="log_level_unknown"),
    pytest.param(_duplicate_idp, "idps…duplicate IdP id 'corp'", id="duplicate_idp_ids"),
]


def matches(problem: str, expected: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.split("…"))
    return re.match(pattern, problem) is not None


@pytest.mark.parametrize(("mutate", "expected"), BROKEN)
def test_broken_settings_name_the_path(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    """Every problem is one ``path: what is wrong`` line, found by its exact path."""
    data = minimal()
    mutate(data)
    problems = problems_of(data)
    assert any(matches(p, expected) for p in problems), problems


def test_duplicate_idp_ids_names_the_id() -> None:
    data = minimal()
    _duplicate_idp(data)
    problems = problems_of(data)
    assert any("duplicate IdP id 'corp'" in p for p in problems), problems


def test_all_problems_reported_at_once() -> None:
    data = minimal()
    del data["idps"][0]["client_secret"]
    del data["jitsi"]["app_id"]
    data["cookies"]["secret"] = "short"
    problems = problems_of(data)
    for expected in ("idps[0].client_secret:", "jitsi.app_id:", "cookies.secret:"):
        assert any(p.startswith(expected) for p in problems), problems


def test_rs256_with_key_file(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "jitsi.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    data = minimal()
    data["jitsi"].update(algorithm="RS256", private_key_file=str(pem), key_id="gw-1")
    del data["jitsi"]["app_secret"]
    assert settings_from_dict(data).jitsi.private_key_file == pem
    data["jitsi"]["private_key_file"] = str(tmp_path / "missing.pem")
    problems = problems_of(data)
    assert any(p.startswith("jitsi.private_key_file: ") for p in problems), problems


def write_yaml(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_load_settings_without_environment(tmp_path: Path) -> None:
    settings = load_settings(write_yaml(tmp_path, minimal()), environ={})
    assert settings.idps[0].client_secret.get_secret_value() == CLIENT_SECRET


@pytest.mark.parametrize(
    ("environ", "read"),
    [
        pytest.param(
            {"JOG_IDPS__0__CLIENT_SECRET": "from-env"},
            lambda s: s.idps[0].client_secret.get_secret_value() == "from-env",
            id="idp_client_secret_by_index",
        ),
        pytest.param(
            {"JOG_COOKIES__SECURE": "false"},
            lambda s: s.cookies.secure is False,
            id="yaml_typed_boolean",
        ),
        pytest.param(
            {"JOG_LISTEN__PORT": "9000"}, lambda s: s.listen.port == 9000, id="yaml_typed_integer"
        ),
        pytest.param(
            {"JOG_IDPS__0__SCOPES": "[openid, email]"},
            lambda s: s.idps[0].scopes == ("openid", "email"),
            id="yaml_typed_list",
        ),
        pytest.param(
            {"JOG_JITSI__AVATAR__DEFAULT_URL": "https://meet.example.com/a.png"},
            lambda s: s.jitsi.avatar.default_url == "https://meet.example.com/a.png",
            id="nested_mapping_created",
        ),
        pytest.param(
            {"JOG_LOG_LEVEL": "DEBUG", "JOGGING": "x", "HOME": "/root"},
            lambda s: s.log_level == "DEBUG",
            id="other_variables_ignored",
        ),
    ],
)
def test_environment_overrides(
    tmp_path: Path, environ: dict[str, str], read: Callable[[Settings], bool]
) -> None:
    settings = load_settings(write_yaml(tmp_path, minimal()), environ=environ)
    assert read(settings)


def test_environment_only_configuration() -> None:
    """No file at all: every key from the environment."""
    environ = {
        "JOG_PUBLIC_URL": "https://gw.example.com",
        "JOG_COOKIES__SECRET": COOKIE_SECRET,
        "JOG_JITSI__BASE_URL": "https://meet.example.com",
        "JOG_JITSI__APP_ID": "app",
        "JOG_JITSI__DOMAIN": "meet.example.com",
        "JOG_JITSI__APP_SECRET": APP_SECRET,
        "JOG_IDPS__0__ID": "corp",
        "JOG_IDPS__0__ADAPTER": "generic",
        "JOG_IDPS__0__ISSUER": "https://idp.example.org",
        "JOG_IDPS__0__CLIENT_ID": "jitsi",
        "JOG_IDPS__0__CLIENT_SECRET": CLIENT_SECRET,
    }
    settings = load_settings(None, environ=environ)
    assert settings.idps[0].id == "corp"
    assert settings.jitsi.app_id == "app"


def test_file_variable_reads_the_secret(tmp_path: Path) -> None:
    """``_FILE`` reads the value (stripped of its newline), the Docker secrets convention."""
    secret_file = tmp_path / "client_secret"
    secret_file.write_text("from-a-file\n", encoding="utf-8")
    cookie_file = tmp_path / "cookie"
    cookie_file.write_text("true-but-a-string-0123456789abcdefghij\n", encoding="utf-8")
    settings = load_settings(
        write_yaml(tmp_path, minimal()),
        environ={
            "JOG_IDPS__0__CLIENT_SECRET_FILE": str(secret_file),
            "JOG_COOKIES__SECRET_FILE": str(cookie_file),
        },
    )
    assert settings.idps[0].client_secret.get_secret_value() == "from-a-file"
    assert settings.cookies.secret.get_secret_value() == "true-but-a-string-0123456789abcdefghij"


def test_unreadable_file_variable_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        load_settings(
            write_yaml(tmp_path, minimal()),
            environ={"JOG_IDPS__0__CLIENT_SECRET_FILE": str(missing)},
        )
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(
        f"JOG_IDPS__0__CLIENT_SECRET_FILE: cannot read {missing}"
    )


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param(
            {"JOG_IDPS__5__CLIENT_SECRET": "x"},
            "JOG_IDPS__5__CLIENT_SECRET: no list item 5 under idps",
            id="list_index_past_the_end",
        ),
        pytest.param(
            {"JOG_PUBLIC_URL__HOST": "x"},
            "JOG_PUBLIC_URL__HOST: public_url is not a mapping or list",
            id="path_through_a_scalar",
        ),
    ],
)
def test_bad_environment_paths(tmp_path: Path, environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write_yaml(tmp_path, minimal()), environ=environ)
    assert info.value.problems == [expected]


def test_environment_key_that_itself_ends_in_file(tmp_path: Path) -> None:
    """``jitsi.private_key_file`` is a key of its own, not a ``_FILE`` indirection."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "jitsi.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    data = minimal()
    data["jitsi"].update(algorithm="RS256", key_id="gw-1")
    del data["jitsi"]["app_secret"]
    settings = load_settings(
        write_yaml(tmp_path, data), environ={"JOG_JITSI__PRIVATE_KEY_FILE": str(pem)}
    )
    assert settings.jitsi.private_key_file == pem


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("@Zk3-random-secret", id="starts_with_at"),
        pytest.param("*Zk3-random-secret", id="starts_with_asterisk"),
        pytest.param("%Zk3-random-secret", id="starts_with_percent"),
        pytest.param("`Zk3-random-secret", id="starts_with_backtick"),
    ],
)
def test_secret_that_is_not_yaml(tmp_path: Path, secret: str) -> None:
    """A random secret that YAML cannot parse is kept verbatim, or named in a ConfigError."""
    name = "JOG_IDPS__0__CLIENT_SECRET"
    try:
        settings = load_settings(write_yaml(tmp_path, minimal()), environ={name: secret})
    except ConfigError as exc:
        assert any(p.startswith(f"{name}:") for p in exc.problems), exc.problems
    else:
        assert settings.idps[0].client_secret.get_secret_value() == secret


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("idps: [unclosed", "not valid YAML", id="invalid_yaml"),
        pytest.param("- a\n- b\n", "the top level must be a mapping", id="top_level_list"),
    ],
)
def test_unloadable_file(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.problems[0].startswith(f"{path}: {expected}")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.problems == [f"{path}: cannot read: No such file or directory"]


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    secret_file = tmp_path / "s"
    secret_file.write_text("file-secret-value-0123456789", encoding="utf-8")
    settings = load_settings(
        write_yaml(tmp_path, minimal()),
        environ={"JOG_IDPS__0__CLIENT_SECRET_FILE": str(secret_file)},
    )
    text = repr(settings) + str(settings) + repr(settings.idps) + settings.model_dump_json()
    for secret in (COOKIE_SECRET, APP_SECRET, "file-secret-value-0123456789"):
        assert secret not in text
    assert "**********" in repr(settings)


def test_error_messages_never_echo_secrets() -> None:
    """A rejected secret shows up by path, not by value."""
    data = minimal()
    data["cookies"]["secret"] = "CHANGE-ME-but-this-is-a-long-one-0123456789"
    data["jitsi"]["app_secret"] = "tiny-app-secret"
    problems = problems_of(data)
    joined = "\n".join(problems)
    assert "CHANGE-ME-but-this-is-a-long-one-0123456789" not in joined
    assert "tiny-app-secret" not in joined


def test_host_prefixed_cookie_needs_secure() -> None:
    data = minimal()
    data["cookies"] = {**data["cookies"], "secure": False, "session_name": "__Host-s"}
    assert any("'__Host-s' needs secure: true" in p for p in problems_of(data))
    data["cookies"]["secure"] = True
    assert settings_from_dict(data).cookies.session_name == "__Host-s"
