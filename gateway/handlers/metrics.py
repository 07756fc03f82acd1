"""``GET /metrics`` in the Prometheus text format.

Not proxied by the shipped nginx configuration: Prometheus scrapes the gateway's own port on
the internal network. With ``metrics.bearer_token`` set, a scrape must also send it.
"""

from __future__ import annotations

import hmac

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.handlers.base import GatewayHandler
from gateway.metrics import metrics_of


class MetricsHandler(GatewayHandler):
    """``GET /metrics``; with ``metrics.bearer_token`` set, only for callers that send it."""

    def get(self) -> None:
        config = self.gateway.settings.metrics
        metrics = metrics_of(self)
        if not config.enabled or metrics is None:
            self.set_status(404)
            self.finish("not found\n")
            return
        if config.bearer_token is not None:
            expected = f"Bearer {config.bearer_token.get_secret_value()}".encode()
            sent = self.request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(sent, expected):
                self.set_status(401)
                self.set_header("WWW-Authenticate", 'Bearer realm="metrics"')
                self.finish("unauthorized\n")
                return
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(metrics.exposition())
