"""Everything a handler needs, built once at start-up and handed in through ``initialize``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.admin_throttle import AdminThrottle
from gateway.auditing import Auditor
from gateway.config import Settings
from gateway.http import HttpClient
from gateway.idps import ConfiguredIdP
from gateway.jitsi import JitsiTokens
from gateway.policy import Policy
from gateway.revalidation import Revalidator
from gateway.sealing import Sealer, sealing_key
from gateway.signin import SignIn
from gateway.store import Store
from gateway.tokenservice.service import TokenService


class InFlight:
    """Requests being served, so a stop can let them finish (graceful shutdown)."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count <= 0:
            self.count = 0
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True when nothing is in flight any more, False when ``timeout`` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


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
    inflight: InFlight = field(default_factory=InFlight)
    audit: Auditor = field(init=False)
    signin: SignIn = field(init=False)
    sealer: Sealer = field(init=False)
    revalidator: Revalidator = field(init=False)
    admin_throttle: AdminThrottle = field(init=False)

    def __post_init__(self) -> None:
        self.audit = Auditor(self.store.audit, self.now, trust=self.tokens.trust)
        self.store.use_trust(self.tokens.trust)  # admin searches and person rows
        self.sealer = Sealer(sealing_key(self.settings))
        self.revalidator = Revalidator(self.idps, self.store, self.sealer, self.audit, self.now)
        if self.token_service is not None:
            self.token_service.revalidate = self.revalidator.still_valid
        self.signin = SignIn(self, self.audit)
        admin = self.settings.admin
        self.admin_throttle = AdminThrottle(
            admin.max_failures, admin.failure_window_seconds, self.clock
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)
