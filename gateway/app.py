"""The route table and the start-up wiring (settings -> store, adapters, IdPs -> app)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import tornado.web

from gateway.config import ConfigError, Settings
from gateway.context import Gateway
from gateway.handlers.admin import AuditPeopleHandler, AuditQueryHandler, AuditStatsHandler
from gateway.handlers.admin_sessions import SessionsHandler
from gateway.handlers.admin_web import AdminLoginHandler, AdminLogoutHandler, AdminPageHandler
from gateway.handlers.auth import AuthHandler
from gateway.handlers.base import GatewayHandler
from gateway.handlers.callback import CallbackHandler
from gateway.handlers.frontchannel import FrontchannelLogoutHandler
from gateway.handlers.health import HealthHandler, ReadyHandler
from gateway.handlers.jwks import ClientJwksHandler
from gateway.handlers.logout import (
    BackchannelLogoutHandler,
    LoggedOutHandler,
    LogoutHandler,
    SilentLogoutHandler,
)
from gateway.handlers.metrics import MetricsHandler
from gateway.handlers.token_service import (
    AuthorizeHandler,
    DiscoveryHandler,
    JwksHandler,
    TokenHandler,
)
from gateway.handlers.tokenize import TokenizeHandler
from gateway.http import HttpClient
from gateway.idps import open_idps
from gateway.jitsi import JitsiTokens
from gateway.logging_setup import log_request
from gateway.metrics import Metrics
from gateway.oidc.client import par_problem
from gateway.plugins import Registry, discover
from gateway.policy import Policy
from gateway.store import Store
from gateway.tokenservice.keys import SigningKey
from gateway.tokenservice.service import TokenService

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


class NotFoundHandler(GatewayHandler):
    def prepare(self) -> None:
        super().prepare()
        raise tornado.web.HTTPError(404, reason="Not found")


def make_app(gateway: Gateway) -> tornado.web.Application:
    deps = {"gateway": gateway}
    metrics = Metrics(gateway)
    gateway.audit.observers[:] = [metrics.observe_audit]  # metrics come from audit events
    routes = [
        (r"/oidc/auth", AuthHandler, deps),
        (r"/oidc/redirect/([a-z0-9][a-z0-9_-]{0,31})", CallbackHandler, deps),
        (r"/oidc/tokenize", TokenizeHandler, deps),
        (r"/oidc/authorize", AuthorizeHandler, deps),
        (r"/oidc/token", TokenHandler, deps),
        (r"/oidc/jwks", JwksHandler, deps),
        (r"/oidc/\.well-known/openid-configuration", DiscoveryHandler, deps),
        (r"/healthz", HealthHandler, deps),
        (r"/readyz", ReadyHandler, deps),
        (r"/oidc/logout", LogoutHandler, deps),
        (r"/oidc/logout/silent", SilentLogoutHandler, deps),
        (r"/oidc/logged-out", LoggedOutHandler, deps),
        (r"/oidc/backchannel-logout", BackchannelLogoutHandler, deps),
        (r"/oidc/frontchannel-logout/([a-z0-9][a-z0-9_-]{0,31})", FrontchannelLogoutHandler, deps),
        (r"/metrics", MetricsHandler, deps),
        (r"/\.well-known/jwks\.json", ClientJwksHandler, deps),
        (r"/admin/audit/?", AuditQueryHandler, deps),
        (r"/admin/audit/stats/?", AuditStatsHandler, deps),
        (r"/admin/audit/people/?", AuditPeopleHandler, deps),
        (r"/admin/sessions/?", SessionsHandler, deps),
        (r"/admin", tornado.web.RedirectHandler, {"url": "/admin/"}),  # the cookie's path
        (r"/admin/", AdminPageHandler, deps),
        (r"/admin/login", AdminLoginHandler, deps),
        (r"/admin/logout", AdminLogoutHandler, deps),
    ]
    return tornado.web.Application(
        routes,  # type: ignore[arg-type]
        cookie_secret=gateway.settings.cookies.secret.get_secret_value(),
        template_path=str(TEMPLATES),
        default_handler_class=NotFoundHandler,
        default_handler_args=deps,
        xsrf_cookies=False,
        compress_response=False,
        metrics=metrics,
        log_function=log_request,
    )


def build_gateway(
    settings: Settings,
    store: Store,
    *,
    registry: Registry | None = None,
    clock: Callable[[], float] = time.time,
) -> Gateway:
    """Open adapters and relying parties (raises ConfigError); no network I/O here."""
    registry = registry or discover()
    for problem in registry.problems:
        log.error("%s", problem)
    for warning in settings.policy.warnings():
        log.warning("%s", warning)
    http = HttpClient(max_response_bytes=settings.http.max_response_bytes)
    idps = open_idps(settings, registry, http, clock)
    store.audit.configure(settings.audit)
    tokens = JitsiTokens(settings.jitsi, clock, settings.idps)
    policy = Policy(settings.policy, settings.email_trust())
    service = open_token_service(settings, store, policy, tokens, clock)
    return Gateway(settings, store, idps, tokens, http, policy, clock, service)


def open_token_service(
    settings: Settings,
    store: Store,
    policy: Policy,
    tokens: JitsiTokens,
    clock: Callable[[], float],
) -> TokenService | None:
    """The token service when enabled; its key is read here, so a bad key stops start-up."""
    cfg = settings.token_service
    if not cfg.enabled or cfg.signing_key_file is None:
        return None
    try:
        key = SigningKey.load(cfg.signing_key_file, cfg.key_id)
    except ValueError as exc:
        raise ConfigError([f"token_service.signing_key_file: {exc}"]) from None
    issuer = f"{settings.public_url}/oidc"
    return TokenService(cfg, key, issuer, store, policy, tokens, clock)


async def warm_up(gateway: Gateway) -> None:
    """Create indexes and load each IdP's metadata; failures are logged, /readyz reports them,
    and the store's maintenance loop keeps trying the indexes."""
    await gateway.store.audit.start()  # opens the spool, replays what a crash left there
    await gateway.store.maintain()  # indexes now if MongoDB answers...
    gateway.store.start_maintenance()  # ...and whenever it becomes reachable again
    problems: list[str] = []
    for i, idp in enumerate(gateway.idps.values()):
        try:
            meta = await idp.rp.metadata()
            if idp.rp.jwks is not None:
                await idp.rp.jwks.refresh()
            log.info("idp %s ready (issuer %s)", idp.id, meta.issuer)
        except Exception as exc:
            log.error("idp %s not ready: %s", idp.id, exc)
            continue
        # A setting the IdP's own metadata contradicts stops the start (named by key); an
        # IdP unreachable now is checked when its metadata arrives (refused sign-ins then).
        if (problem := par_problem(idp.config.par, meta)) is not None:
            problems.append(f"idps[{i}].par: {problem}")
    if problems:
        raise ConfigError(problems)
