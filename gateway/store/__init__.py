"""MongoDB persistence: pending flows, sessions and the audit log (one module each).

One ``AsyncMongoClient`` per event loop (PyMongo's native asyncio API, the successor of
Motor). Every store call turns driver errors into ``GatewayError("store_unavailable")``.
"""

from __future__ import annotations

from pymongo import AsyncMongoClient

from gateway.store.audit import AuditLog
from gateway.store.flows import FlowStore
from gateway.store.grants import GrantStore
from gateway.store.replays import ReplayGuard
from gateway.store.sessions import SessionStore


class Store:
    def __init__(self, client: AsyncMongoClient, database: str) -> None:
        self.client = client
        self.db = client[database]
        self.flows = FlowStore(self.db["flows"])
        self.sessions = SessionStore(self.db["sessions"])
        self.audit = AuditLog(self.db["audit"])
        self.replays = ReplayGuard(self.db["used_tokens"])
        self.grants = GrantStore(self.db["token_codes"], self.db["refresh_tokens"])

    @classmethod
    def connect(cls, uri: str, database: str, timeout_seconds: float = 5.0) -> Store:
        ms = int(timeout_seconds * 1000)
        client: AsyncMongoClient = AsyncMongoClient(
            uri,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=ms,
            tz_aware=True,
            appname="jitsi-oidc-gateway",
        )
        return cls(client, database)

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

    async def close(self) -> None:
        """Flush the audit log (MongoDB or the spool) before the client goes away."""
        await self.audit.close()
        await self.client.close()
