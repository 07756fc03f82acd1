"""Unit tests for gateway.plugins (discover) and gateway.idps (open_adapters).

Test-only adapters are registered through a REAL entry point: a temporary ``*.dist-info``
directory (METADATA + entry_points.txt) and a module file in tmp_path, put on ``sys.path``.
Module names carry a random suffix so rows never see each other's imports.
"""

from __future__ import annotations

import copy
import importlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter
from adapters.generic import GenericAdapter, GenericOptions
from gateway.config import ConfigError, settings_from_dict
from gateway.idps import open_adapters
from gateway.plugins import GROUP, AdapterInfo, Registry, discover

DIST = "jog-test-plugins"
VERSION = "1.2.3"

GOOD_ADAPTER = """
from adapters.base import Adapter, Identity

class GoodAdapter(Adapter):
    description = "test-only adapter"

    def identity(self, claims, userinfo):
        return Identity(idp=self.idp_id, issuer=claims["iss"], subject=claims["sub"],
                        username=claims["sub"], name=claims["sub"])
"""


@dataclass
class Plugins:
    """A temporary distribution on sys.path; ``mod(name)`` gives a unique module name."""

    root: Path
    suffix: str
    monkeypatch: pytest.MonkeyPatch

    def mod(self, name: str) -> str:
        return f"{name}_{self.suffix}"

    def install(
        self,
        entry_points: dict[str, str],
        modules: dict[str, str],
        dist: str = DIST,
        version: str = VERSION,
        where: str = "",
    ) -> None:
        """Write a distribution (dist-info + modules) under ``root/where`` onto sys.path."""
        folder = self.root / where
        folder.mkdir(exist_ok=True)
        if str(folder) not in sys.path:
            self.monkeypatch.syspath_prepend(str(folder))
        dist_info = folder / f"{dist.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", encoding="utf-8"
        )
        lines = [f"[{GROUP}]"] + [f"{n} = {v}" for n, v in entry_points.items()]
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for module, source in modules.items():
            (folder / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        importlib.invalidate_caches()


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Plugins]:
    suffix = uuid.uuid4().hex[:10]
    yield Plugins(tmp_path, suffix, monkeypatch)
    for name in [m for m in sys.modules if m.endswith(suffix)]:
        del sys.modules[name]
    importlib.invalidate_caches()


def test_builtin_generic_registered_by_entry_point() -> None:
    registry = discover()
    info = registry.get("generic")
    assert info is not None
    assert info.cls is GenericAdapter
    assert info.distribution == "jitsi-oidc-gateway"
    assert info.target == "adapters.generic:GenericAdapter"
    assert registry.problems == ()


def test_good_plugin_discovered_with_distribution(plugins: Plugins) -> None:
    good = plugins.mod("jogtest_good")
    plugins.install({"jogtest-good": f"{good}:GoodAdapter"}, {good: GOOD_ADAPTER})
    registry = discover()
    info = registry.get("jogtest-good")
    assert info is not None
    assert (info.name, info.distribution, info.version) == ("jogtest-good", DIST, VERSION)
    assert info.target == f"{good}:GoodAdapter"
    assert issubclass(info.cls, Adapter) and info.cls.__name__ == "GoodAdapter"
    assert registry.get("generic") is not None
    assert registry.problems == ()


def test_other_group_is_empty() -> None:
    registry = discover("jitsi_oidc_gateway.no_such_group")
    assert registry.adapters == {} and registry.problems == ()


# (entry-point name, target template, module sources, expected problem text), id.
# "{m}" in a target or module name becomes the row's own module name.
BROKEN = [
    pytest.param(
        "jogtest-broken",
        "{m}:GoodAdapter",
        {"{m}": "raise RuntimeError('plugin exploded at import')\n"},
        "cannot import {m}:GoodAdapter: RuntimeError('plugin exploded at import')",
        id="import_raises",
    ),
    pytest.param(
        "jogtest-broken",
        "{m}:GoodAdapter",
        {"{m}": "import jogtest_module_that_does_not_exist\n"},
        "cannot import {m}:GoodAdapter: ModuleNotFoundError",
        id="missing_dependency",
    ),
    pytest.param(
        "jogtest-broken",
        "{m}:GoodAdapter",
        {"{m}": "def broken(:\n"},
        "cannot import {m}:GoodAdapter: SyntaxError",
        id="syntax_error",
    ),
    pytest.param(
        "jogtest-broken",
        "{m}:Nope",
        {"{m}": "X = 1\n"},
        "cannot import {m}:Nope: AttributeError",
        id="missing_attribute",
    ),
    pytest.param(
        "jogtest-broken",
        "{m}:NotAnAdapter",
        {"{m}": "class NotAnAdapter:\n    pass\n"},
        "{m}:NotAnAdapter is not an adapters.base.Adapter",
        id="class_not_adapter",
    ),
    pytest.param(
        "jogtest-broken",
        "{m}:factory",
        {"{m}": "def factory():\n    pass\n"},
        "{m}:factory is not an adapters.base.Adapter",
        id="function_not_adapter",
    ),
]


@pytest.mark.parametrize(("name", "target", "modules", "expected"), BROKEN)
def test_broken_plugin_reported_by_name(
    plugins: Plugins,
    name: str,
    target: str,
    modules: dict[str, str],
    expected: str,
) -> None:
    """A broken plugin is one problem naming it and its package; the others still load."""
    m = plugins.mod("jogtest_broken")
    good = plugins.mod("jogtest_good")
    plugins.install(
        {"jogtest-good": f"{good}:GoodAdapter", name: target.format(m=m)},
        {good: GOOD_ADAPTER, **{k.format(m=m): v for k, v in modules.items()}},
    )
    registry = discover()
    assert registry.get("jogtest-good") is not None
    assert registry.get("generic") is not None
    assert registry.get(name) is None
    assert [p.name for p in registry.problems] == [name]
    problem = registry.problems[0]
    assert problem.distribution == DIST
    assert expected.format(m=m) in problem.problem, problem.problem
    assert str(problem).startswith(f"adapter plugin {name!r} from {DIST}: ")


@pytest.mark.parametrize(
    "module_prefix",
    [
        pytest.param("zz_jogtest_dup", id="plugin_module_sorts_after_builtin"),
        pytest.param("aa_jogtest_dup", id="plugin_module_sorts_before_builtin"),
    ],
)
def test_duplicate_name_keeps_the_builtin(plugins: Plugins, module_prefix: str) -> None:
    """A plugin that reuses ``generic`` is reported; the built-in keeps the name."""
    dup = plugins.mod(module_prefix)
    good = plugins.mod("jogtest_good")
    plugins.install(
        {"generic": f"{dup}:GoodAdapter", "jogtest-good": f"{good}:GoodAdapter"},
        {dup: GOOD_ADAPTER, good: GOOD_ADAPTER},
    )
    registry = discover()
    info = registry.get("generic")
    assert info is not None
    assert (info.cls, info.distribution) == (GenericAdapter, "jitsi-oidc-gateway")
    assert registry.get("jogtest-good") is not None
    assert [(p.name, p.distribution) for p in registry.problems] == [("generic", DIST)]
    assert "name already taken by jitsi-oidc-gateway" in registry.problems[0].problem


def test_duplicate_name_between_plugins(plugins: Plugins) -> None:
    """Two packages claim one name: one wins, the other is reported by name and package."""
    one, two = plugins.mod("jogtest_one"), plugins.mod("jogtest_two")
    plugins.install({"jogtest-same": f"{one}:GoodAdapter"}, {one: GOOD_ADAPTER})
    plugins.install(
        {"jogtest-same": f"{two}:GoodAdapter"},
        {two: GOOD_ADAPTER},
        dist="jog-test-other",
        version="0.1",
        where="second",
    )
    registry = discover()
    info = registry.get("jogtest-same")
    assert info is not None
    assert [p.name for p in registry.problems] == ["jogtest-same"]
    loser = registry.problems[0]
    assert {info.distribution, loser.distribution} == {DIST, "jog-test-other"}
    assert f"name already taken by {info.distribution}" in loser.problem


# ---- open_adapters ---------------------------------------------------------------------


def settings_with(*idps: dict[str, Any]) -> Any:
    base = {
        "id": "corp",
        "adapter": "generic",
        "issuer": "https://idp.example.org",
        "client_id": "jitsi",
        "client_secret": "secret",
    }
    return settings_from_dict(
        {
            "public_url": "https://gw.example.com",
            "cookies": {"secret": "c" * 40},
            "jitsi": {
                "base_url": "https://meet.example.com",
                "app_id": "app",
                "domain": "meet.example.com",
                "app_secret": "a" * 40,
            },
            "idps": [{**copy.deepcopy(base), **idp} for idp in idps],
        }
    )


REGISTRY = Registry(
    {
        "generic": AdapterInfo(
            "generic", GenericAdapter, "jitsi-oidc-gateway", "0", "adapters.generic:GenericAdapter"
        )
    },
    (),
)


def test_open_adapters_one_instance_per_idp() -> None:
    settings = settings_with(
        {"id": "corp"},
        {"id": "partner", "options": {"groups": "realm_access.roles", "name": ["display"]}},
    )
    adapters = open_adapters(settings, REGISTRY)
    assert set(adapters) == {"corp", "partner"}
    assert all(isinstance(a, GenericAdapter) for a in adapters.values())
    assert adapters["corp"].idp_id == "corp"
    partner = adapters["partner"].options
    assert isinstance(partner, GenericOptions)
    assert (partner.groups, partner.name) == ("realm_access.roles", ("display",))
    assert adapters["corp"] is not adapters["partner"]


def test_open_adapters_with_discovered_registry() -> None:
    adapters = open_adapters(settings_with({"id": "corp"}), discover())
    assert isinstance(adapters["corp"], GenericAdapter)


def test_open_adapters_uses_plugin(plugins: Plugins) -> None:
    good = plugins.mod("jogtest_good")
    plugins.install({"jogtest-good": f"{good}:GoodAdapter"}, {good: GOOD_ADAPTER})
    adapters = open_adapters(settings_with({"adapter": "jogtest-good"}), discover())
    assert type(adapters["corp"]).__name__ == "GoodAdapter"


@pytest.mark.parametrize(
    ("idps", "expected"),
    [
        pytest.param(
            [{"adapter": "nope"}],
            ["idps[0].adapter: unknown adapter 'nope' (known: generic)"],
            id="unknown_adapter",
        ),
        pytest.param(
            [{"options": {"subjekt": "oid"}}],
            ["idps[0].options.subjekt: Extra inputs are not permitted"],
            id="option_typo",
        ),
        pytest.param(
            [{"options": {"username": 5}}],
            ["idps[0].options.username: "],
            id="option_wrong_type",
        ),
        pytest.param(
            [{"options": {"username": ["preferred_username", 5]}}],
            ["idps[0].options.username[1]: Input should be a valid string"],
            id="option_list_item_wrong_type",
        ),
        pytest.param(
            [{"id": "corp"}, {"id": "other", "options": {"emial": "mail"}}],
            ["idps[1].options.emial: Extra inputs are not permitted"],
            id="second_idp_named_by_index",
        ),
        pytest.param(
            [{"adapter": "nope"}, {"id": "other", "options": {"emial": "mail"}}],
            [
                "idps[0].adapter: unknown adapter 'nope'",
                "idps[1].options.emial: Extra inputs are not permitted",
            ],
            id="every_bad_idp_reported",
        ),
    ],
)
def test_open_adapters_errors_name_the_path(
    idps: list[dict[str, Any]], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        open_adapters(settings_with(*idps), REGISTRY)
    problems = info.value.problems
    assert len(problems) == len(expected), problems
    for line, start in zip(problems, expected, strict=True):
        assert line.startswith(start), problems


def test_abstract_plugin_never_crashes_start_up(plugins: Plugins) -> None:
    """An Adapter subclass that forgot ``identity`` is refused as a problem, not a TypeError."""
    half = plugins.mod("jogtest_half")
    plugins.install(
        {"jogtest-half": f"{half}:HalfAdapter"},
        {half: "from adapters.base import Adapter\n\nclass HalfAdapter(Adapter):\n    pass\n"},
    )
    registry = discover()
    if registry.get("jogtest-half") is None:
        assert [p.name for p in registry.problems] == ["jogtest-half"]
        return
    with pytest.raises(ConfigError) as info:
        open_adapters(settings_with({"adapter": "jogtest-half"}), registry)
    assert info.value.problems[0].startswith("idps[0].adapter: "), info.value.problems
