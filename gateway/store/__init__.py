"""MongoDB persistence: pending flows, sessions and the audit log (one module each).

One ``AsyncMongoClient`` per event loop (PyMongo's native asyncio API, the successor of
Motor). Every store call turns driver errors into ``GatewayError("store_unavailable")``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from pymongo import AsyncMongoClient, WriteConcern, monitoring

from gateway.store.audit import AuditLog
from gateway.store.audit_query import PeopleTrust
from gateway.store.flows import FlowStore
from gateway.store.grants import GrantStore
from gateway.store.indexes import missing_indexes
from gateway.store.replays import ReplayGuard
from gateway.store.sessions import SessionStore
from gateway.store.tasks import stop, stop_requested

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_SECONDS = 5.0


# What a sign-in writes must survive a crash of the server right after it said "done":
# journaled (j) and, on a replica set, acknowledged by a majority (a failover keeps it).
DURABLE = WriteConcern(w="majority", j=True)


class CommandCounter(monitoring.CommandListener):
    """Commands this process sent to MongoDB, by (command, collection): the store round
    trips behind ``jog_store_commands_total`` (benchmarks count them per sign-in). One dict
    increment per command; the collection is the command's own target (``insert`` into
    ``audit``...), empty for commands without one (``ping``, ``getMore``), so the labels are
    the gateway's own names, never request input."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get(name)
        key = (name, target if isinstance(target, str) else "")
        self.counts[key] = self.counts.get(key, 0) + 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class Store:
    def __init__(
        self,
        client: AsyncMongoClient,
        database: str,
        durable: bool = True,
        commands: CommandCounter | None = None,
    ) -> None:
        self.client = client
        # Filled by the client's listener when ``connect`` built the client; else stays empty.
        self.commands = commands or CommandCounter()
        self.db = client.get_database(database, write_concern=DURABLE if durable else None)
        self.reachable = False
        self.indexes_ready = False
        self._maintenance: asyncio.Task[None] | None = None
        self.flows = FlowStore(self.db["flows"])
        self.sessions = SessionStore(self.db["sessions"])
        self.audit = AuditLog(self.db["audit"])
        self.replays = ReplayGuard(self.db["used_tokens"])
        self.grants = GrantStore(self.db["token_codes"], self.db["refresh_tokens"])
        self.trust: PeopleTrust | None = None  # see use_trust

    def use_trust(self, trust: PeopleTrust) -> None:
        """What the gateway believes of each IdP (``gateway.trust.IdpTrust``, from the
        settings): the admin tools' e-mail and username searches are narrowed by it and
        their person rows show it."""
        self.trust = trust
        self.audit.reader.trust = trust

    @classmethod
    def connect(
        cls, uri: str, database: str, timeout_seconds: float = 5.0, durable: bool = True
    ) -> Store:
        ms = int(timeout_seconds * 1000)
        commands = CommandCounter()
        client: AsyncMongoClient = AsyncMongoClient(
            uri,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=ms,
            tz_aware=True,
            appname="jitsi-oidc-gateway",
            event_listeners=[commands],
        )
        return cls(client, database, durable, commands)

    async def ensure_indexes(self) -> None:
        await self.flows.ensure_indexes()
        await self.sessions.ensure_indexes()
        await self.audit.ensure_indexes()
        await self.replays.ensure_indexes()
        await self.grants.ensure_indexes()

    async def ping(self) -> bool:
        try:
            await self.db.command("ping")
        except Exception:
            return False
        return True

    def expected_indexes(self) -> dict[str, tuple[str, ...]]:
        """Collection -> the names of the indexes the stores declare."""
        expected: dict[str, tuple[str, ...]] = {}
        for part in (self.flows, self.sessions, self.audit, self.replays, self.grants):
            expected.update(part.expected_indexes())
        return expected

    async def check_indexes(self) -> bool:
        """Ask the server whether every declared index exists (one ``listIndexes`` per
        collection); sets ``indexes_ready``. False too when the server cannot be asked."""
        try:
            missing = await missing_indexes(self.db, self.expected_indexes())
        except Exception as exc:
            log.warning("cannot list MongoDB indexes: %s", type(exc).__name__)
            missing = ["(unknown)"]
        self.indexes_ready = not missing
        return self.indexes_ready

    async def maintain(self) -> None:
        """One round: whenever MongoDB answers, check that the indexes exist and create
        the missing ones (a gateway started during an outage, a server restarted empty
        within one round, collections dropped). Presence is asked of the server every
        round, never remembered, so ``indexes_ready`` (what ``/readyz`` reports between its
        own checks) is at most one round old."""
        await self.audit.adopt_orphans()  # spool files of processes that are gone
        self.reachable = await self.ping()
        if not self.reachable:
            self.indexes_ready = False
            return
        if await self.check_indexes():
            return
        try:
            await self.ensure_indexes()
        except Exception as exc:
            self.indexes_ready = False
            log.error("cannot create MongoDB indexes: %s", type(exc).__name__)
            return
        if await self.check_indexes():
            log.info("MongoDB reachable; indexes ensured")

    def start_maintenance(self, interval: float = MAINTENANCE_INTERVAL_SECONDS) -> None:
        """Run ``maintain`` now and every ``interval`` seconds until ``close``."""

        async def loop() -> None:
            while True:
                try:
                    await self.maintain()
                except Exception:  # never let the loop die, unless it is being stopped
                    stop_requested()
                    log.exception("store maintenance failed")
                await asyncio.sleep(interval)

        if self._maintenance is None:
            self._maintenance = asyncio.get_running_loop().create_task(
                loop(), context=contextvars.Context()
            )

    async def close(self) -> None:
        """Flush the audit log (MongoDB or the spool) before the client goes away."""
        await stop(self._maintenance)
        self._maintenance = None
        await self.audit.close()
        await self.client.close()
