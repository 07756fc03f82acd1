"""``/admin/``: a read-only web page over the audit log, for operators who would rather look.

Server-rendered (Tornado templates), no script at all: forms, links and an inline SVG chart
drawn by :mod:`gateway.admin_chart`. Its CSP allows nothing from elsewhere and no inline
script (``default-src 'none'``; styles only with the response's nonce; forms only to
itself). The filters, pages, people view and statistics are those of the JSON API, through
the same :mod:`gateway.store.audit_query` functions; exports are links to the API's own
``/admin/audit?format=csv|ndjson``, which accepts this page's session cookie.

Sign-in: the same admin tokens as the API, typed into a form (never in a URL). The POST must
come from this page: ``Sec-Fetch-Site``/``Origin`` say same-origin (see
``GatewayHandler.cross_site``) and it carries a form token bound to a short-lived
``SameSite=Strict`` form cookie. A wrong token is a 401 and an ``admin_query`` failure
(``admin_unauthorized``), and sets no session. A right one sets the session cookie of
:mod:`gateway.handlers.admin_auth` (the token's name, never the token). Every page view is
audited as ``admin_query`` with ``admin`` = the token's name and ``via: "web"``.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import replace
from typing import Any

from tornado.httputil import url_concat

from gateway import admin_chart
from gateway.errors import REASONS, GatewayError
from gateway.handlers import admin_auth
from gateway.handlers.admin import query_params, safe_query
from gateway.handlers.base import GatewayHandler
from gateway.store import audit_query as aq
from gateway.store.audit import EVENTS, OUTCOMES

log = logging.getLogger("gateway.admin")

VIEWS = ("events", "people")
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_LIMIT = 50
WEB_PARAMS = ("view", "bucket", "linked")  # the page's own, besides the API's filters, paging
#: What the table leaves out unless the Event or Leave-out filter is given: the operators'
#: own page views (one per request) would otherwise fill the default page.
DEFAULT_EXCLUDED = "admin_query"
CHART_EVENTS = ("login_succeeded", "login_failed")
TEXT_FILTERS = (  # (parameter, label, hint) in the form's order
    ("since", "Since", "2025-03-01, 24h, 7d, today"),
    ("until", "Until", "exclusive; same forms as since"),
    ("event", "Event", "e.g. login_failed; several comma-separated"),
    ("idp", "IdP", "configured IdP id"),
    ("reason", "Reason", "failure reason code"),
    ("email", "E-mail", "exact, any case"),
    ("username", "Username", "exact"),
    ("subject", "Subject", "exact"),
    ("room", "Room", "exact, any case"),
    ("client_ip", "Client IP", "exact"),
    ("exclude_event", "Leave out events", "e.g. admin_query"),
    ("tz", "Time zone", "e.g. Europe/Berlin; UTC by default"),
)
COLUMNS = ("time", "event", "outcome", "reason", "idp", "person", "room", "client_ip", "detail")


class AdminPage(GatewayHandler):
    """HTML pages with a per-response style nonce; errors as this page's own short page."""

    nonce = ""
    error_template = "admin_message.html"

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.nonce = secrets.token_urlsafe(16)
        self.set_header(
            "Content-Security-Policy",
            f"default-src 'none'; style-src 'nonce-{self.nonce}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'",
        )

    def get_template_namespace(self) -> dict[str, Any]:
        return super().get_template_namespace() | {"nonce": self.nonce}

    async def audit_admin(self, outcome: str, admin: str | None, **fields: Any) -> None:
        via = "web" if admin else None
        path = self.request.path
        await self.audit("admin_query", outcome, admin=admin, path=path, via=via, **fields)

    def session(self) -> admin_auth.WebSession | None:
        return admin_auth.read_session(self, self.gateway.settings, self.gateway.clock())

    def render_login(self, error: str | None = None) -> None:
        nonce = admin_auth.form_nonce(self, self.gateway.settings)
        csrf = admin_auth.mac(self.gateway.settings, "admin-login", nonce)
        self.render("admin_login.html", csrf=csrf, error=error)

    async def refuse_form(self, reason: str, detail: str) -> None:
        """A POST that is not from this page: refused (the reason's status), audited."""
        await self.refuse(
            GatewayError(reason, detail),
            event="admin_query",
            path=self.request.path,
            retry_url="/admin/",
        )


class AdminPageHandler(AdminPage):
    def head(self) -> None:
        """The page is there: GET's status and headers, signed in or not, but no query, no
        cookie and no audit event (monitoring probes use HEAD; a row per probe is noise)."""
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish()

    async def get(self) -> None:
        session = self.session()
        if session is None:
            self.render_login()
            return
        settings = self.gateway.settings
        values: dict[str, Any] = {"filters": {}, "view": "events", "bucket": "day"}
        values |= {"limit": str(DEFAULT_LIMIT), "order": "desc"}
        try:
            params = {k: v for k, v in query_params(self.request).items() if v and v.strip()}
            if "event" not in params and "exclude_event" not in params:
                params["exclude_event"] = DEFAULT_EXCLUDED
            values |= self.form_values(params)
            await self.gateway.store.audit.settle()  # events of answered requests included
            with self.gateway.store.audit.reader.deadline(settings.admin.query_timeout_seconds):
                data = await self.read(params)
        except aq.FilterError as exc:
            await self.audit_admin(
                "failure", session.name, reason="bad_request", detail=str(exc), query=self.query()
            )
            self.set_status(400)
            self.render_page(session, values, error=exc)
            return
        except GatewayError as exc:
            log.error("admin page query failed: %s", exc.detail)
            await self.audit_admin("failure", session.name, reason=exc.reason, query=self.query())
            self.set_status(exc.info.status)
            if exc.reason == "query_timeout":
                self.render_error_page(exc.info.title, exc.info.text)
            else:
                self.render_error_page("The audit log is unavailable", "MongoDB did not answer.")
            return
        await self.audit_admin("success", session.name, query=self.query(), count=data["count"])
        self.render_page(session, values, **data)

    def query(self) -> dict[str, str]:
        return safe_query(self.request)

    def form_values(self, params: dict[str, str]) -> dict[str, Any]:
        """What the form shows again: the filters and the page's own choices, as sent."""
        return {
            "filters": {k: v for k, v in params.items() if k in aq.FILTER_PARAMS},
            "view": params.get("view", "events"),
            "bucket": params.get("bucket", "day"),
            "limit": params.get("limit", str(DEFAULT_LIMIT)),
            "order": params.get("order", "desc"),
            "linked": params.get("linked") == "true",
        }

    async def read(self, params: dict[str, str]) -> dict[str, Any]:
        """The view's rows and the chart, all through ``audit_query`` (as the API)."""
        params = dict(params)
        view = params.pop("view", "events")
        bucket = params.pop("bucket", "day")
        linked = aq.parse_flag("linked", params.pop("linked", None))
        if view not in VIEWS:
            raise aq.FilterError("view", f"must be one of {', '.join(VIEWS)}")
        if bucket not in aq.BUCKETS:
            raise aq.FilterError("bucket", f"must be one of {', '.join(aq.BUCKETS)}")
        reader = self.gateway.store.audit.reader
        configured = [i.id for i in self.gateway.settings.idps]
        idps = await reader.known_idps(configured, params.get("idp"))
        now = self.gateway.now()
        max_limit = self.gateway.settings.admin.max_page_size
        filters = {k: v for k, v in params.items() if k in aq.FILTER_PARAMS}
        whole = aq.parse_query(filters, now=now, idps=idps)  # no page: people and chart
        if view == "people":
            for name in aq.PAGE_PARAMS:
                if name in params:
                    raise aq.FilterError(name, "the people view takes filters only")
            if linked:
                raise aq.FilterError("linked", "the people view takes filters only")
            chart = await self.chart(whole, bucket)
            found = await reader.people(whole)
            return {"chart": chart, "people": found, "count": found["count"], "tz": whole.tz}
        # Every parameter is checked before any query runs: a bad limit or cursor is a 400
        # at once, not after the chart's statistics.
        q = aq.parse_query(
            params, now=now, default_limit=DEFAULT_LIMIT, max_limit=max_limit, idps=idps
        )
        q = await reader.link(q) if linked else q
        chart = await self.chart(whole, bucket)
        docs, cursor = await reader.page(q)
        rows = [row(aq.to_json(d, q.tz)) for d in docs]
        kept = {**params, "bucket": bucket, **({"linked": "true"} if linked else {})}
        next_url = self.link(kept, cursor=cursor) if cursor else None
        return {"chart": chart, "rows": rows, "next_url": next_url, "count": len(rows)}

    async def chart(self, q: aq.AuditQuery, bucket: str) -> admin_chart.Chart:
        """Sign-ins and failures per IdP and bucket: one ``grid`` read by (event, idp,
        bucket) over both event types (two full ``stats`` reads before: 15-21 s at 200,000
        events)."""
        events = [e for e in CHART_EVENTS if only_event(q, e) is not None]
        if not events:
            return admin_chart.build(bucket, [], [])
        # the events are named: an exclusion on top would only cost the index its use
        narrowed = replace(q, fields={**q.fields, "event": events}, exclude_events=())
        rows = await self.gateway.store.audit.reader.grid(narrowed, bucket, ("event", "idp"))
        ok = [r for r in rows if r["event"] == CHART_EVENTS[0]]
        failed = [r for r in rows if r["event"] == CHART_EVENTS[1]]
        return admin_chart.build(bucket, ok, failed)

    def link(self, params: dict[str, str], **changes: str | None) -> str:
        """This page with ``params`` changed (None removes one)."""
        merged = {k: v for k, v in {**params, **changes}.items() if v}
        return url_concat("/admin/", merged)

    def render_page(
        self, session: admin_auth.WebSession, values: dict[str, Any], **data: Any
    ) -> None:
        filters = values["filters"]
        keep = {k: v for k, v in values.items() if k in ("bucket", "limit", "order")}
        keep = {k: str(v) for k, v in keep.items()}
        if values.get("linked"):
            keep["linked"] = "true"
        chart: admin_chart.Chart | None = data.get("chart")
        self.render(
            "admin.html",
            admin=session.name,
            logout_csrf=session.logout_token(self.gateway.settings),
            values=values,
            text_filters=TEXT_FILTERS,
            events=EVENTS,
            outcomes=OUTCOMES,
            reasons=sorted(REASONS),
            idps=[i.id for i in self.gateway.settings.idps],
            page_sizes=PAGE_SIZES,
            buckets=tuple(aq.BUCKETS),
            columns=COLUMNS,
            error=data.get("error"),
            rows=data.get("rows"),
            people=data.get("people"),
            next_url=data.get("next_url"),
            first_url=self.link({**filters, **keep}),
            events_url=self.link({**filters, **keep}),
            people_url=self.link({**filters, "bucket": keep.get("bucket", "")}, view="people"),
            csv_url=url_concat("/admin/audit", {**filters, "format": "csv"}),
            ndjson_url=url_concat("/admin/audit", {**filters, "format": "ndjson"}),
            chart=chart,
            chart_svg=admin_chart.svg(chart) if chart and not chart.empty else "",
        )


class AdminLoginHandler(AdminPage):
    """``POST /admin/login``: the token from the form, checked like a bearer token."""

    def get(self) -> None:
        self.redirect("/admin/", status=303)

    async def post(self) -> None:
        settings = self.gateway.settings
        why = self.cross_site(own_host=True)
        if why:
            await self.refuse_form("cross_site_request", why)
            return
        if not admin_auth.login_form_valid(self, settings, self.get_body_argument("csrf", "")):
            await self.refuse_form("csrf_token_invalid", "sign-in form token missing or wrong")
            return
        token = self.get_body_argument("token", "")
        throttle, address = self.gateway.admin_throttle, self.client_ip()
        wait = throttle.retry_after(address) if token else None
        if wait is not None:  # before the token is checked (gateway/admin_throttle.py)
            log.warning("admin sign-in refused: too many wrong tokens from this address")
            detail = f"too many wrong tokens; retry in {wait} s"
            await self.audit_admin("failure", None, reason="admin_rate_limited", detail=detail)
            self.set_status(429)
            self.set_header("Retry-After", str(wait))
            minutes = math.ceil(wait / 60)
            self.render_login(
                error=f"Too many wrong tokens were tried. Try again in {minutes} min."
            )
            return
        found = None
        if 0 < len(token) <= admin_auth.MAX_TOKEN:
            found = admin_auth.match_token(settings.admin.tokens, token)
        if found is None:
            detail = "invalid token" if token else "missing token"
            if token:
                throttle.failed(address)
            log.warning("admin sign-in refused: %s", detail)
            await self.audit_admin("failure", None, reason="admin_unauthorized", detail=detail)
            self.set_status(401)
            self.render_login(error="That token is not valid.")
            return
        throttle.succeeded(address)
        admin_auth.start_session(self, settings, found, self.gateway.clock())
        admin_auth.end_session(self, settings, admin_auth.FORM_COOKIE)
        await self.audit_admin("success", found.name)
        self.redirect("/admin/", status=303)


class AdminLogoutHandler(AdminPage):
    """``POST /admin/logout``: ends this browser's web session (the form's token required)."""

    async def post(self) -> None:
        why = self.cross_site(own_host=True)
        if why:
            await self.refuse_form("cross_site_request", why)
            return
        session = self.session()
        if session is not None:
            sent = self.get_body_argument("csrf", "")
            if not secrets.compare_digest(sent, session.logout_token(self.gateway.settings)):
                await self.refuse_form("csrf_token_invalid", "sign-out form token missing or wrong")
                return
            await self.audit_admin("success", session.name)
        admin_auth.end_session(self, self.gateway.settings)
        self.redirect("/admin/", status=303)


def only_event(q: aq.AuditQuery, event: str) -> aq.AuditQuery | None:
    """``q`` narrowed to one event type, or None when its filters leave that type out."""
    wanted = q.fields.get("event")
    if (wanted and event not in wanted) or event in q.exclude_events:
        return None
    return replace(q, fields={**q.fields, "event": [event]})


def row(event: dict[str, Any]) -> dict[str, Any]:
    """One table row: the columns shown, the person as the best name the event has."""
    person = event.get("name") or event.get("email") or event.get("username")
    return {
        "_id": event.get("_id"),
        "time": event.get("time"),
        "event": event.get("event"),
        "outcome": event.get("outcome"),
        "reason": event.get("reason"),
        "idp": event.get("idp"),
        "person": person or event.get("subject") or event.get("admin"),
        "email": event.get("email"),
        "room": event.get("room"),
        "client_ip": event.get("client_ip"),
        "detail": (event.get("detail") or "")[:160],
    }
