"""Everything a handler needs, built once at start-up and handed in through ``initialize``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.config import Settings
from gateway.http import HttpClient
from gateway.idps import ConfiguredIdP
from gateway.jitsi import JitsiTokens
from gateway.policy import Policy
from gateway.store import Store
from gateway.tokenservice.service import TokenService


@dataclass
class Gateway:
    settings: Settings
    store: Store
    idps: dict[str, ConfiguredIdP]
    tokens: JitsiTokens
    http: HttpClient
    policy: Policy
    clock: Callable[[], float] = field(default=time.time)
    token_service: TokenService | None = None

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)
