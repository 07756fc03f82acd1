"""Configured IdPs opened once at start-up: relying party + adapter per ``idps[]`` entry.

Like Dex's ``Config.Open``: the adapter's options are validated here, so a typo in
``idps[1].options`` stops the process with that exact path instead of failing a login.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from adapters.base import Adapter, AuthorizationParams, IdentityEnricher, IssuerResolver
from gateway.config import ConfigError, IdP, Settings, format_path
from gateway.http import HttpClient
from gateway.oidc.client import RelyingParty
from gateway.plugins import Registry, problem_paths, validate_options


@dataclass(frozen=True)
class ConfiguredIdP:
    config: IdP
    adapter: Adapter
    rp: RelyingParty

    @property
    def id(self) -> str:
        return self.config.id

    @cached_property
    def authorization_params(self) -> AuthorizationParams | None:
        """The adapter's optional capability, looked up once: ``isinstance`` against a
        runtime-checkable protocol costs 9-19 microseconds each time (Python 3.11)."""
        return self.adapter if isinstance(self.adapter, AuthorizationParams) else None

    @cached_property
    def enricher(self) -> IdentityEnricher | None:
        return self.adapter if isinstance(self.adapter, IdentityEnricher) else None


def open_adapters(settings: Settings, registry: Registry) -> dict[str, Adapter]:
    """Instantiate each IdP's adapter; ConfigError lists every bad entry by path."""
    problems: list[str] = []
    adapters: dict[str, Adapter] = {}
    for i, idp in enumerate(settings.idps):
        info = registry.get(idp.adapter)
        if info is None:
            known = ", ".join(sorted(registry.adapters)) or "none"
            problems.append(f"idps[{i}].adapter: unknown adapter {idp.adapter!r} (known: {known})")
            continue
        options, found = validate_options(info.cls.Options, idp.options)
        for loc, message in found:
            problems.append(f"{format_path((f'idps[{i}].options', *loc))}: {message}")
        if options is None:
            continue
        adapter = info.cls(idp.id, options)
        problems += problem_paths(i, adapter.check_config(idp.issuer))
        adapters[idp.id] = adapter
    if problems:
        raise ConfigError(problems)
    return adapters


def _issuer_rules(adapter: Adapter, idp: IdP) -> dict[str, Any]:
    """The adapter's issuer rules for the relying party (templated issuers), if it has any."""
    if not isinstance(adapter, IssuerResolver):
        return {}
    configured = idp.issuer

    def issuer_check(iss: str, claims: dict) -> bool:
        return iss == adapter.resolve_issuer(configured, claims)

    def accepts_issuer(value: str) -> bool:
        return adapter.accepts_issuer(configured, value)

    return {"issuer_check": issuer_check, "accepts_issuer": accepts_issuer}


def open_idps(
    settings: Settings,
    registry: Registry,
    http: HttpClient,
    clock: Callable[[], float] = time.time,
) -> dict[str, ConfiguredIdP]:
    adapters = open_adapters(settings, registry)
    out: dict[str, ConfiguredIdP] = {}
    for idp in settings.idps:
        adapter = adapters[idp.id]
        rp = RelyingParty(
            idp,
            http,
            redirect_uri=settings.redirect_uri(idp.id),
            clock=clock,
            **_issuer_rules(adapter, idp),
        )
        out[idp.id] = ConfiguredIdP(idp, adapter, rp)
    return out
