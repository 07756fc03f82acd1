"""The import arrows point one way: handler -> signin -> oidc / adapters / policy / jitsi ->
store. Read from the source (every ``import`` and ``from ... import``, module-level or not),
so a new import pointing back up fails here with the file and the module it named."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def modules(package: str) -> list[Path]:
    base = ROOT / package.replace(".", "/")
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def named(found: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {m for m in found if any(m == p or m.startswith(p + ".") for p in prefixes)}


# (modules, what they must not import)
RULES = [
    # the runtime never imports the tests, the demo tooling or the command line
    (
        (
            "gateway.app",
            "gateway.handlers",
            "gateway.signin",
            "gateway.oidc",
            "gateway.store",
            "gateway.policy",
            "gateway.jitsi",
            "gateway.context",
            "gateway.auditing",
            "gateway.tokenservice",
            "gateway.idps",
            "gateway.config",
            "adapters",
        ),
        (
            "tests",
            "gateway.devtools",
            "gateway.cli",
            "gateway.audit_cli",
            "gateway.policy_cli",
            "gateway.sessions_cli",
        ),
    ),
    # nothing below the handlers knows Tornado's web layer or the handlers
    (
        (
            "gateway.signin",
            "gateway.oidc",
            "gateway.store",
            "gateway.policy",
            "gateway.jitsi",
            "gateway.auditing",
            "gateway.routing",
            "gateway.delivery",
            "gateway.room_token",
        ),
        ("tornado.web", "gateway.handlers", "gateway.app"),
    ),
    # the store is the bottom: no OIDC, no flow, no policy, no adapters' logic
    (
        ("gateway.store",),
        (
            "gateway.oidc",
            "gateway.signin",
            "gateway.policy",
            "gateway.jitsi",
            "gateway.idps",
            "adapters.generic",
            "adapters.keycloak",
            "adapters.google",
            "adapters.azure",
        ),
    ),
    # OIDC knows nothing of the flow, the store or the policy
    (("gateway.oidc",), ("gateway.signin", "gateway.store", "gateway.policy", "adapters")),
    # configuration is data: no policy decisions, no adapters
    (("gateway.config", "gateway.policy_settings"), ("gateway.policy.", "adapters")),
    # the handlers reach MongoDB only through the store's methods
    (("gateway.handlers",), ("pymongo",)),
    # adapters depend only on their contract, never on the gateway's internals (the
    # conformance kit is test tooling: it resolves entry points with the gateway's loader)
    (
        tuple(
            f"adapters.{p.stem}"
            for p in (ROOT / "adapters").glob("*.py")
            if p.stem not in ("__init__", "conformance")
        ),
        ("gateway",),
    ),
    # the command-line modules share public helpers only (checked below for private names)
]


@pytest.mark.parametrize(("sources", "forbidden"), RULES, ids=[str(i) for i in range(len(RULES))])
def test_no_import_points_back_up(sources: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    offenders = []
    for source in sources:
        for path in modules(source):
            bad = named(imports_of(path), tuple(f.rstrip(".") for f in forbidden))
            if "gateway.policy." in forbidden:  # the module itself, not gateway.policy_settings
                bad = {m for m in bad if m != "gateway.policy_settings"}
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {sorted(bad)}")
    assert offenders == []


def test_no_module_uses_another_modules_private_names() -> None:
    offenders = []
    for path in (ROOT / "gateway").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("gateway")
            ):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    offenders.append(f"{path.relative_to(ROOT)}: {node.module} {private}")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id.endswith("_cli")
                and node.attr.startswith("_")
            ):
                offenders.append(f"{path.relative_to(ROOT)}: {node.value.id}.{node.attr}")
    assert offenders == []


def test_the_rules_would_catch_an_offender(tmp_path: Path) -> None:
    """The checker itself: an import of the tests from the runtime is found."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from tests.support.op import TestOP\n")
    assert named(imports_of(module), ("tests",)) == {"tests.support.op", "tests.support.op.TestOP"}
