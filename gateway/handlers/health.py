"""``/healthz`` (the process answers) and ``/readyz`` (MongoDB and every IdP's metadata)."""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler


class HealthHandler(GatewayHandler):
    def get(self) -> None:
        self.write({"status": "ok"})


class ReadyHandler(GatewayHandler):
    async def get(self) -> None:
        checks: dict[str, str] = {}
        checks["mongodb"] = "ok" if await self.gateway.store.ping() else "unreachable"
        for idp in self.gateway.idps.values():
            try:
                await idp.rp.metadata()
                checks[f"idp:{idp.id}"] = "ok"
            except GatewayError:
                checks[f"idp:{idp.id}"] = "unreachable"
        ready = all(v == "ok" for v in checks.values())
        self.set_status(200 if ready else 503)
        self.write({"status": "ready" if ready else "not ready", "checks": checks})
