"""Prometheus metrics for one running gateway, and the ``/metrics`` endpoint.

Sign-in counters are derived from the audit events that pass through
``GatewayHandler.audit``, so a handler never needs metrics code of its own: every step that
is audited is also counted. Request latencies come from Tornado's ``log_function`` hook.
Gauges that live elsewhere (JWKS refreshes, audit spool depth, store errors) are read at
scrape time by a small collector. Each application has its own registry, so two gateways
in one process (tests) never mix their numbers.

Label values are bounded: IdP labels are configured ids only, events and reasons come from
the code, never from request input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.context import Gateway

SIGN_IN_EVENTS = {"login_succeeded": "success", "login_failed": "failure"}

#: Handler class name -> step label of the latency histogram.
STEPS = {
    "AuthHandler": "auth",
    "CallbackHandler": "redirect",
    "TokenizeHandler": "tokenize",
    "LogoutHandler": "logout",
    "LoggedOutHandler": "logout",
    "BackchannelLogoutHandler": "backchannel_logout",
    "HealthHandler": "health",
    "ReadyHandler": "health",
    "MetricsHandler": "metrics",
}

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayCollector(Collector):
    """Numbers owned by other objects, read when Prometheus scrapes."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        jwks = CounterMetricFamily(
            "jog_jwks_fetches", "JWKS fetches per IdP (start-up and refreshes)", labels=["idp"]
        )
        for idp in self.gateway.idps.values():
            cache = idp.rp.jwks
            jwks.add_metric([idp.id], float(cache.fetch_count if cache is not None else 0))
        yield jwks
        up = GaugeMetricFamily(
            "jog_idp_up",
            "1 while the IdP's metadata is loaded and its last calls reached it",
            labels=["idp"],
        )
        for idp in self.gateway.idps.values():
            up.add_metric([idp.id], 1.0 if idp.rp.up else 0.0)
        yield up
        store = self.gateway.store
        indexes = GaugeMetricFamily(
            "jog_store_ready", "1 while MongoDB answers and the gateway's indexes exist"
        )
        indexes.add_metric([], 1.0 if store.reachable and store.indexes_ready else 0.0)
        yield indexes
        audit = self.gateway.store.audit
        depth = GaugeMetricFamily(
            "jog_audit_spool_depth", "audit events waiting in the local spool for MongoDB"
        )
        depth.add_metric([], _number(audit, "spool_depth"))
        yield depth
        failures = CounterMetricFamily(
            "jog_audit_write_failures", "audit writes MongoDB did not accept in time"
        )
        failures.add_metric([], _number(audit, "write_failures", "failures"))
        yield failures
        refused = CounterMetricFamily(
            "jog_audit_events_refused",
            "audit events MongoDB refused for what they are (set aside in refused.ndjson)",
        )
        refused.add_metric([], _number(audit, "refused"))
        yield refused
        sessions = CounterMetricFamily(
            "jog_session_store_errors", "session reads and writes that failed in MongoDB"
        )
        sessions.add_metric([], _number(self.gateway.store.sessions, "errors"))
        yield sessions
        commands = CounterMetricFamily(
            "jog_store_commands",
            "MongoDB commands sent (round trips), by command and collection",
            labels=["command", "collection"],
        )
        counts: dict[tuple[str, str], int] = getattr(getattr(store, "commands", None), "counts", {})
        for (name, collection), count in sorted(counts.items()):
            commands.add_metric([name, collection], float(count))
        yield commands
        outbound = CounterMetricFamily(
            "jog_idp_requests",
            "outbound HTTP requests (IdP discovery, keys, token, userinfo, APIs) by method",
            labels=["method"],
        )
        for method, count in sorted(getattr(self.gateway.http, "requests", {}).items()):
            outbound.add_metric([method], float(count))
        yield outbound


def _number(obj: object, *names: str) -> float:
    """An attribute (or zero-argument method) as a number; 0 when the object lacks it."""
    for name in names:
        value = getattr(obj, name, None)
        if callable(value):
            value = value()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


class Metrics:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sign_ins = Counter(
            "jog_sign_ins", "completed sign-ins by IdP and outcome", ["idp", "outcome"], registry=r
        )
        self.sign_in_failures = Counter(
            "jog_sign_in_failures",
            "refused sign-ins by IdP and reason",
            ["idp", "reason"],
            registry=r,
        )
        self.tokens = Counter("jog_tokens_minted", "Jitsi tokens minted", ["idp"], registry=r)
        self.audit_events = Counter(
            "jog_audit_events",
            "audit events by event and outcome",
            ["event", "outcome"],
            registry=r,
        )
        self.store_errors = Counter(
            "jog_store_errors",
            "requests refused because MongoDB could not be reached",
            registry=r,
        )
        self.latency = Histogram(
            "jog_request_duration_seconds",
            "request latency by flow step",
            ["step", "status"],
            buckets=BUCKETS,
            registry=r,
        )
        r.register(GatewayCollector(gateway))

    def idp_label(self, value: Any) -> str:
        return value if isinstance(value, str) and value in self.gateway.idps else "none"

    def observe_audit(self, event: Mapping[str, Any]) -> None:
        name, outcome = str(event.get("event")), str(event.get("outcome"))
        self.audit_events.labels(name, outcome).inc()
        if event.get("reason") == "store_unavailable":
            self.store_errors.inc()
        idp = self.idp_label(event.get("idp"))
        if name in SIGN_IN_EVENTS:
            self.sign_ins.labels(idp, SIGN_IN_EVENTS[name]).inc()
            if name == "login_failed":
                self.sign_in_failures.labels(idp, str(event.get("reason") or "unknown")).inc()
        elif name == "token_minted":
            self.tokens.labels(idp).inc()

    def observe_request(self, handler: Any) -> None:
        step = STEPS.get(type(handler).__name__, "other")
        status = f"{handler.get_status() // 100}xx"
        self.latency.labels(step, status).observe(handler.request.request_time())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_of(handler: Any) -> Metrics | None:
    value = handler.application.settings.get("metrics")
    return value if isinstance(value, Metrics) else None


def observe_audit(handler: Any, event: Mapping[str, Any]) -> None:
    """Called by ``GatewayHandler.audit`` for every event it writes."""
    metrics = metrics_of(handler)
    if metrics is not None:
        metrics.observe_audit(event)
