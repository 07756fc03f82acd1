"""Adapter discovery through the ``jitsi_oidc_gateway.adapters`` entry-point group.

Built-in and third-party adapters are found the same way. A plugin that fails to import,
is not an ``Adapter`` subclass, or reuses a name already taken is reported by name and
skipped; the others still load.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from adapters.base import Adapter, ConfigProblem

GROUP = "jitsi_oidc_gateway.adapters"
OWN = "jitsi-oidc-gateway"


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    cls: type[Adapter]
    distribution: str
    version: str
    target: str


@dataclass(frozen=True)
class PluginProblem:
    name: str
    distribution: str
    problem: str

    def __str__(self) -> str:
        return f"adapter plugin {self.name!r} from {self.distribution}: {self.problem}"


@dataclass(frozen=True)
class Registry:
    adapters: dict[str, AdapterInfo]
    problems: tuple[PluginProblem, ...]

    def get(self, name: str) -> AdapterInfo | None:
        return self.adapters.get(name)


def _origin(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "(unknown package)", "?"
    return dist.metadata["Name"] or "(unknown package)", dist.version or "?"


def discover(group: str = GROUP) -> Registry:
    """Load every adapter entry point; never raises for a broken plugin."""
    found: dict[str, AdapterInfo] = {}
    problems: list[PluginProblem] = []
    seen: set[tuple[str, str]] = set()
    # The gateway's own adapters first: a plugin can never take a built-in name.
    ordered = sorted(
        entry_points(group=group), key=lambda e: (_origin(e)[0] != OWN, e.name, e.value)
    )
    for ep in ordered:
        dist_name, version = _origin(ep)
        if (ep.name, ep.value) in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        try:
            obj = ep.load()
        except Exception as exc:  # a plugin's import error must not stop the others
            problems.append(PluginProblem(ep.name, dist_name, f"cannot import {ep.value}: {exc!r}"))
            continue
        if not (isinstance(obj, type) and issubclass(obj, Adapter)):
            problems.append(
                PluginProblem(ep.name, dist_name, f"{ep.value} is not an adapters.base.Adapter")
            )
            continue
        if inspect.isabstract(obj):
            problems.append(
                PluginProblem(ep.name, dist_name, f"{ep.value} is abstract (identity() missing?)")
            )
            continue
        if ep.name in found:
            other = found[ep.name]
            problems.append(
                PluginProblem(
                    ep.name,
                    dist_name,
                    f"name already taken by {other.distribution} ({other.target}); skipped",
                )
            )
            continue
        found[ep.name] = AdapterInfo(ep.name, obj, dist_name, version, ep.value)
    return Registry(found, tuple(problems))


def unknown_options(model: type[BaseModel], raw: Mapping[str, Any]) -> list[str]:
    """Option keys ``model`` does not declare, unless it asked for ``extra="allow"``.

    Pydantic's default is to *ignore* unknown keys; for options that would let a typo switch
    a check off (``allowed_org:`` for ``allowed_orgs:``), so the contract is strict whatever
    the plugin's model says, except for an explicit opt-out.
    """
    if model.model_config.get("extra") == "allow":
        return []
    names = set(model.model_fields)
    names |= {f.alias for f in model.model_fields.values() if f.alias}
    return sorted(str(k) for k in raw if k not in names)


def validate_options(
    model: type[BaseModel], raw: Mapping[str, Any]
) -> tuple[BaseModel | None, list[tuple[tuple[Any, ...], str]]]:
    """Options from ``raw``, or the problems as (path under ``options``, message) pairs."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    if model.model_config.get("extra") != "forbid":  # pydantic reports it itself otherwise
        known = ", ".join(sorted(model.model_fields)) or "none"
        for key in unknown_options(model, raw):
            problems.append(((key,), f"unknown option (known: {known})"))
    try:
        options = model.model_validate(raw)
    except ValidationError as exc:
        problems += [(tuple(err["loc"]), err["msg"]) for err in exc.errors()]
        return None, problems
    return (None if problems else options), problems


def problem_paths(index: int, found: list[str | ConfigProblem]) -> list[str]:
    """``check_config`` results as ``idps[N].<path>: <message>`` lines."""
    out: list[str] = []
    for item in found:
        if isinstance(item, ConfigProblem):
            out.append(f"idps[{index}].{item.field}: {item.message}")
        else:
            out.append(f"idps[{index}].options.{item}")
    return out
