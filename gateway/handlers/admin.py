"""``/admin/audit`` and ``/admin/audit/stats``: the audit log over HTTP, for operators.

Bearer tokens are configured only as SHA-256 hex digests; the presented token's digest is
compared with every configured one in constant time. Every request, refused or not, is
itself audited (``admin_query``) with the filters used, never the token. The audit
endpoints (``/admin/audit``, ``/stats``, ``/people``; GET only) also accept the web page's
session cookie (see :mod:`gateway.handlers.admin_auth`), so its export links work in a
browser without a token in the URL; such events carry ``via: "web"``. Answers are JSON;
``format=ndjson`` or ``format=csv`` streams the whole matching range chunk by chunk (each
chunk flushed to the socket before the next is read), so memory does not grow with the range.
"""

from __future__ import annotations

import logging
from typing import Any

from tornado.httputil import HTTPServerRequest, url_concat
from tornado.iostream import StreamClosedError

from gateway.errors import GatewayError
from gateway.handlers import admin_auth
from gateway.handlers.base import GatewayHandler
from gateway.store import audit_query as aq

log = logging.getLogger("gateway.admin")

FORMATS = ("json", "ndjson", "csv")
CONTENT_TYPES = {
    "ndjson": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}
EXPORT_CHUNK = 1000


def query_params(request: HTTPServerRequest) -> dict[str, str | None]:
    """Each query parameter once, as text; repeated or binary ones are a FilterError."""
    params: dict[str, str | None] = {}
    for name, values in request.query_arguments.items():
        if len(values) != 1:
            raise aq.FilterError(name, "given more than once")
        try:
            params[name] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise aq.FilterError(name, "not UTF-8") from None
    return params


def safe_query(request: HTTPServerRequest) -> dict[str, str]:
    """The request's parameters for the audit event, cut short; tokens never come here."""
    return {
        k[:64]: v[0].decode("utf-8", "replace")[:256]
        for k, v in list(request.query_arguments.items())[:32]
    }


class AdminHandler(GatewayHandler):
    """Authentication, JSON errors and the ``admin_query`` audit event."""

    admin: str | None = None
    answers_json = True
    via: str | None = None  # "web": authenticated by the /admin/ page's session cookie
    accepts_web_session = False  # the read-only audit endpoints set this

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Type", "application/json; charset=utf-8")

    def authenticate(self) -> str:
        """The configured name of the presented token; raises admin_unauthorized.

        Without an ``Authorization`` header, a read-only request to an endpoint that allows
        it may come with the web page's session cookie instead.
        """
        header = self.request.headers.get("Authorization", "")
        if not header and self.accepts_web_session and self.request.method in ("GET", "HEAD"):
            settings = self.gateway.settings
            session = admin_auth.read_session(self, settings, self.gateway.clock())
            if session is not None:
                self.via = "web"
                return session.name
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GatewayError("admin_unauthorized", "missing bearer token")
        throttle, address = self.gateway.admin_throttle, self.client_ip()
        wait = throttle.retry_after(address)
        if wait is not None:  # checked before the token: a guess while refused tells nothing
            self.set_header("Retry-After", str(wait))
            raise GatewayError("admin_rate_limited", f"too many wrong tokens; retry in {wait} s")
        found = admin_auth.match_token(self.gateway.settings.admin.tokens, token)
        if found is None:
            throttle.failed(address)
            raise GatewayError("admin_unauthorized", "invalid token")
        throttle.succeeded(address)
        return found.name

    def query_params(self) -> dict[str, str | None]:
        return query_params(self.request)

    async def audit_admin(self, outcome: str, **fields: Any) -> None:
        path = self.request.path
        await self.audit(
            "admin_query", outcome, admin=self.admin, path=path, via=self.via, **fields
        )

    async def get(self) -> None:
        try:
            self.admin = self.authenticate()
        except GatewayError as exc:
            log.warning("admin request refused: %s", exc.detail)
            if exc.reason == "admin_unauthorized":
                error = ', error="invalid_token"' if exc.detail == "invalid token" else ""
                self.set_header("WWW-Authenticate", f'Bearer realm="jitsi-oidc-gateway"{error}')
            await self.refuse(exc, event="admin_query", admin=None, path=self.request.path)
            return
        try:
            params = self.query_params()
            wants_export = params.get("format") in ("ndjson", "csv")
            admin = self.gateway.settings.admin
            # one deadline per request instead of mongodb.timeout_seconds per socket read
            bound = admin.export_timeout_seconds if wants_export else admin.query_timeout_seconds
            # every event of a request already answered is in the answer
            await self.gateway.store.audit.settle()
            with self.reader.deadline(bound):
                await self.answer(params)
        except GatewayError as exc:
            log.error("admin query failed: %s", exc.detail)
            fields = {"admin": self.admin, "path": self.request.path, "query": self.safe_query()}
            if not self._headers_written:
                await self.refuse(exc, event="admin_query", **fields)
            else:  # mid-export: cut the connection so the client sees a truncated body
                await self.audit("admin_query", "failure", reason=exc.reason, **fields)
                self.request.connection.detach().close()  # type: ignore[union-attr]
                self._finished = True
        except aq.FilterError as exc:
            await self.audit_admin(
                "failure", reason="bad_request", detail=str(exc), query=self.safe_query()
            )
            self.send_json(
                400,
                {"error": "invalid_parameter", "parameter": exc.parameter, "message": exc.message},
            )

    def safe_query(self) -> dict[str, str]:
        return safe_query(self.request)

    def json_error_body(self, error: GatewayError) -> dict[str, Any]:
        """Operators may see why (``missing bearer token``, ``invalid token``)."""
        return super().json_error_body(error) | {"detail": error.detail}

    @property
    def reader(self) -> aq.AuditReader:
        return self.gateway.store.audit.reader

    def send_json(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.finish(body)

    async def answer(self, params: dict[str, str | None]) -> None:
        raise NotImplementedError

    async def idp_ids(self, params: dict[str, str | None]) -> set[str]:
        """IdPs an ``idp`` filter may name (configured or in the log); others get a 400."""
        configured = [i.id for i in self.gateway.settings.idps]
        return await self.reader.known_idps(configured, params.get("idp"))


class AuditQueryHandler(AdminHandler):
    accepts_web_session = True

    async def answer(self, params: dict[str, str | None]) -> None:
        fmt = params.pop("format", None) or "json"
        linked = aq.parse_flag("linked", params.pop("linked", None))
        if fmt not in FORMATS:
            raise aq.FilterError("format", f"must be one of {', '.join(FORMATS)}")
        now = self.gateway.now()
        if fmt == "json":
            max_limit = self.gateway.settings.admin.max_page_size
            q = aq.parse_query(
                params, now=now, max_limit=max_limit, idps=await self.idp_ids(params)
            )
            q = await self.reader.link(q) if linked else q
            docs, cursor = await self.reader.page(q)
            await self.audit_admin("success", query=self.safe_query(), count=len(docs))
            events = [aq.to_json(d, q.tz) for d in docs]
            if cursor:  # the next page, for clients that follow links (RFC 8288)
                following = {**params, "cursor": cursor}
                self.set_header("Link", f'<{url_concat(self.request.path, following)}>; rel="next"')
            self.send_json(200, {"events": events, "next_cursor": cursor})
            return
        if "limit" in params or "cursor" in params:
            raise aq.FilterError("limit" if "limit" in params else "cursor", "not for exports")
        q = aq.parse_query(params, now=now, default_order="asc", idps=await self.idp_ids(params))
        q = await self.reader.link(q) if linked else q
        await self.export(q, fmt)

    async def export(self, q: aq.AuditQuery, fmt: str) -> None:
        self.set_header("Content-Type", CONTENT_TYPES[fmt])
        self.set_header("Content-Disposition", f'attachment; filename="audit.{fmt}"')
        count = 0
        complete = False
        try:
            if fmt == "csv":
                self.write(aq.csv_header())
            async for chunk in self.reader.stream(q, EXPORT_CHUNK):
                rows = aq.ndjson_lines(chunk, q.tz) if fmt == "ndjson" else aq.csv_rows(chunk, q.tz)
                self.write(rows)
                count += len(chunk)
                await self.flush()  # waits for the socket: memory stays one chunk
            complete = True
        except StreamClosedError:
            log.info("admin export closed by the client after %d events", count)
        await self.audit_admin(
            "success" if complete else "failure",
            query=self.safe_query(),
            count=count,
            format=fmt,
        )
        if complete:
            self.finish()


class AuditStatsHandler(AdminHandler):
    accepts_web_session = True

    async def answer(self, params: dict[str, str | None]) -> None:
        bucket = params.pop("bucket", None) or "day"
        if bucket not in aq.BUCKETS:
            raise aq.FilterError("bucket", f"must be one of {', '.join(aq.BUCKETS)}")
        by = aq.parse_by(params.pop("by", None))
        top_raw = params.pop("top", None) or "10"
        if not top_raw.isdigit() or not 1 <= int(top_raw) <= 100:
            raise aq.FilterError("top", "must be a number between 1 and 100")
        q = aq.parse_query(params, now=self.gateway.now(), idps=await self.idp_ids(params))
        for name in aq.PAGE_PARAMS:
            if name in params:
                raise aq.FilterError(name, "stats take filters only")
        result = await self.reader.stats(q, bucket, int(top_raw), by)
        await self.audit_admin("success", query=self.safe_query())
        self.send_json(200, result)


class AuditPeopleHandler(AdminHandler):
    """``/admin/audit/people``: distinct persons for the filters, first and last seen."""

    accepts_web_session = True

    async def answer(self, params: dict[str, str | None]) -> None:
        q = aq.parse_query(params, now=self.gateway.now(), idps=await self.idp_ids(params))
        for name in aq.PAGE_PARAMS:
            if name in params:
                raise aq.FilterError(name, "people take filters only")
        result = await self.reader.people(q)
        await self.audit_admin("success", query=self.safe_query(), count=result["count"])
        self.send_json(200, result)
