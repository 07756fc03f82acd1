"""``/healthz`` (the process answers) and ``/readyz`` (this gateway can serve people).

Readiness is for a load balancer: *ready* means MongoDB answers and the gateway's indexes
exist (asked of the server at each request, one ``listIndexes`` per collection: a store
restarted empty answers but has none), because without the store nobody can be served (and
without the indexes flows and sessions never expire). The IdPs are reported but do not make
a gateway unready: an IdP outage hits every instance alike, and a gateway that still serves
signed-in people (single sign-on needs no IdP) is worth more in the pool than out of it.
Each IdP's state is in the body and in the metric ``jog_idp_up``.
"""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler


class HealthHandler(GatewayHandler):
    def get(self) -> None:
        self.write({"status": "ok"})


class ReadyHandler(GatewayHandler):
    async def get(self) -> None:
        store = self.gateway.store
        reachable = await store.ping()
        # asked of the server now: a store restarted empty has no indexes though it answers
        indexes = reachable and await store.check_indexes()
        checks = {
            "mongodb": "ok" if reachable else "unreachable",
            "indexes": "ok" if indexes else "missing",
        }
        idps: dict[str, str] = {}
        for idp in self.gateway.idps.values():
            try:
                await idp.rp.metadata()  # cached; a failed discovery is retried at most every 5 s
                idps[idp.id] = "ok" if idp.rp.up else "failing"
            except GatewayError:
                idps[idp.id] = "unreachable"
        ready = all(v == "ok" for v in checks.values())
        self.set_status(200 if ready else 503)
        self.write({"status": "ready" if ready else "not ready", "checks": checks, "idps": idps})
