"""Logging: one JSON object per line (or plain text), a request id on every line, no secrets.

The request id is the one a handler sends in ``X-Request-Id`` and writes into its audit
events, so a log line, a person's error page and the audit log meet on one value. It travels
in a context variable set when a request starts. Every record passes a redaction filter
that masks JWTs, bearer tokens and secret-bearing query parameters (``code``, ``state``,
``jwt``, ``id_token_hint``, ``logout_token``, ...), whatever module logged it. The access
log is written by ``log_request`` with the path only, never the query string.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jog_request_id", default=None
)

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# A token, not a plain word: "missing bearer token" stays readable (a real token is never a
# short run of lower-case letters alone).
_BEARER = re.compile(r"(?i)(bearer\s+)(?-i:(?![a-z]{1,12}\b)[A-Za-z0-9._~+/=-]+)")
_SECRET_PARAMS = re.compile(
    r"(?i)\b(code|state|jwt|id_token|id_token_hint|logout_token|access_token|refresh_token"
    r"|client_secret|password|nonce|code_verifier|csrf)=([^&\s\"']+)"
)

access_log = logging.getLogger("gateway.access")
QUIET_LOGGERS = ("pymongo.command",)


def redact(text: str) -> str:
    """Mask tokens and secret parameters in free text. Each pattern needs a literal
    (``eyJ``, ``bearer``, ``=``), looked for first: most lines, the access log's among them,
    have none and skip the regular expressions (a third of a log line's cost)."""
    if "eyJ" in text:
        text = _JWT.sub("[redacted-jwt]", text)
    if "bearer" in text.lower():
        text = _BEARER.sub(r"\1[redacted]", text)
    if "=" in text:
        text = _SECRET_PARAMS.sub(r"\1=[redacted]", text)
    return text


def bind_request_id(request_id: str) -> None:
    REQUEST_ID.set(request_id)


class RedactingFilter(logging.Filter):
    """Formats the message once, redacts it, and attaches the current request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    FIELDS = ("method", "path", "status", "duration_ms", "step")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            doc["request_id"] = request_id
        for name in self.FIELDS:
            if hasattr(record, name):
                doc[name] = getattr(record, name)
        if record.exc_info:
            doc["exception"] = record.exc_text or redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request {request_id}]" if request_id else line


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """Replace the root handlers with one redacting handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Tornado's own access log prints the query string (codes, states): ours replaces it.
    logging.getLogger("tornado.access").disabled = True
    # The driver's command log (all at DEBUG) carries whole documents: a flow insert holds
    # the PKCE verifier and the nonce, a session its identity. It is never written, whatever
    # the level; the store's own errors are logged by the gateway without documents.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


def log_request(handler: Any) -> None:
    """Tornado ``log_function``: access log line (path only) and latency metrics."""
    from gateway.metrics import metrics_of

    metrics = metrics_of(handler)
    if metrics is not None:
        metrics.observe_request(handler)
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return
    request = handler.request
    duration_ms = round(request.request_time() * 1000, 1)
    access_log.log(
        level,
        "%s %s %s %.1fms",
        request.method,
        request.path,
        status,
        duration_ms,
        extra={
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": duration_ms,
            "request_id": getattr(handler, "request_id", None),
        },
    )
