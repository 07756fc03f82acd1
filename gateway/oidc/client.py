"""One IdP as seen by the relying party: metadata, authorization URL, code redemption.

Raises :class:`gateway.errors.GatewayError` with the audit reason for every failure, so the
web layer needs no knowledge of OIDC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.config import IdP
from gateway.errors import GatewayError
from gateway.http import HttpClient, UpstreamError
from gateway.oidc.client_auth import ClientAuthenticator
from gateway.oidc.jwks import JwksCache
from gateway.oidc.logout_token import LogoutTokenVerifier
from gateway.oidc.metadata import MetadataError, ProviderMetadata, fetch_metadata
from gateway.oidc.pkce import s256_challenge
from gateway.oidc.verify import IdTokenError, IdTokenVerifier, VerifierConfig
from gateway.singleflight import SingleFlight

# After a failed discovery, every request is answered with that failure at once for this
# long before the IdP is asked again.
DISCOVERY_FAILURE_SECONDS = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenSet:
    id_token: str
    access_token: str | None
    claims: dict[str, Any]
    refresh_token: str | None = None


@dataclass(frozen=True)
class Refreshed:
    """The IdP's answer to a refresh: it still knows the person. ``refresh_token`` is the
    next one when the IdP rotates them (else None: keep the old one)."""

    refresh_token: str | None
    id_token: str | None


class RefreshRefused(Exception):
    """The IdP said no (``invalid_grant``: account disabled, session or grant revoked)."""


class RefreshUnavailable(Exception):
    """No usable answer (unreachable, timed out, 5xx, another error): the outage rule decides."""


def par_problem(par: str, meta: ProviderMetadata) -> str | None:
    """Why this IdP's pushed-authorization setting cannot work with its metadata, or None."""
    if par == "always" and not meta.par_endpoint:
        return "par is 'always' but the IdP advertises no pushed_authorization_request_endpoint"
    if meta.par_required and not meta.par_endpoint:
        return "the IdP requires pushed authorization requests but advertises no endpoint"
    if par == "never" and meta.par_required:
        return "par is 'never' but the IdP requires pushed authorization requests"
    return None


def with_params(endpoint: str, params: Mapping[str, str]) -> str:
    """``endpoint`` with ``params`` added to whatever query it already has."""
    parts = urlsplit(endpoint)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


class RelyingParty:
    def __init__(
        self,
        config: IdP,
        http: HttpClient,
        *,
        redirect_uri: str,
        clock: Callable[[], float] = time.time,
        issuer_check: Callable[[str, dict[str, Any]], bool] | None = None,
        accepts_issuer: Callable[[str], bool] | None = None,
    ) -> None:
        """``redirect_uri``: this IdP's own callback. ``issuer_check(iss, claims)``: an
        adapter's rule for ID-token issuers other than the configured one; ``accepts_issuer``:
        the same for the RFC 9207 ``iss`` response parameter (default: the discovery
        document's issuer exactly)."""
        self.config = config
        self.redirect_uri = redirect_uri
        self._accepts_issuer = accepts_issuer
        self._http = http
        self._clock = clock
        self._issuer_check = issuer_check
        self.client_auth = ClientAuthenticator(config, clock)
        self._metadata: ProviderMetadata | None = None
        self._unreachable = False
        # One discovery fetch in flight for everyone; its failure is answered to every
        # request for DISCOVERY_FAILURE_SECONDS without asking the IdP again.
        self._discovery: SingleFlight[ProviderMetadata] = SingleFlight(DISCOVERY_FAILURE_SECONDS)
        self.jwks: JwksCache | None = None
        self._verifier: IdTokenVerifier | None = None
        self._logout_verifier: LogoutTokenVerifier | None = None

    @property
    def ready(self) -> bool:
        return self._metadata is not None

    @property
    def up(self) -> bool:
        """Metadata loaded, and neither the last key fetch nor the last token-endpoint call
        failed to reach the IdP (an answer such as invalid_grant counts as reached)."""
        jwks_failing = self.jwks is not None and self.jwks.failing
        return self.ready and not self._unreachable and not jwks_failing

    async def metadata(self) -> ProviderMetadata:
        """Discovery, fetched once. Concurrent callers share one fetch and its outcome; after
        a failure every caller gets the same answer at once for a few seconds, then the next
        call tries again (so a hung IdP costs each person one timeout at most)."""
        if self._metadata is not None:
            return self._metadata
        return await self._discovery.run(self._discover)

    async def _discover(self) -> ProviderMetadata:
        cfg = self.config
        try:
            meta = await fetch_metadata(
                self._http, cfg.issuer, cfg.discovery_url, cfg.http_timeout_seconds
            )
        except MetadataError as exc:
            raise GatewayError("idp_unreachable", f"{cfg.id}: {exc}") from None
        self.jwks = JwksCache(
            meta.jwks_uri,
            self._http,
            min_refresh_seconds=cfg.jwks_min_refresh_seconds,
            max_age_seconds=cfg.jwks_max_age_seconds,
            timeout=cfg.http_timeout_seconds,
        )
        checks = VerifierConfig(
            cfg.issuer, cfg.client_id, cfg.allowed_algorithms, cfg.clock_leeway_seconds
        )
        self._verifier = IdTokenVerifier(
            checks, self.jwks, clock=self._clock, issuer_check=self._issuer_check
        )
        self._logout_verifier = LogoutTokenVerifier(
            checks, self.jwks, clock=self._clock, issuer_check=self._issuer_check
        )
        self._metadata = meta
        return meta

    async def authorization_url(
        self,
        *,
        state: str,
        nonce: str,
        code_verifier: str,
        extra: Mapping[str, str] | None = None,
    ) -> str:
        """Where the browser signs in: code flow, PKCE S256, this IdP's redirect URI. With
        pushed authorization requests (RFC 9126) the parameters go to the IdP over the back
        channel, authenticated as at the token endpoint, and the browser's URL carries only
        ``client_id`` and ``request_uri``."""
        meta = await self.metadata()
        params = {
            **dict(extra or {}),
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(self.config.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": s256_challenge(code_verifier),
            "code_challenge_method": "S256",
        }
        if not self.uses_par(meta):
            return with_params(meta.authorization_endpoint, params)
        request_uri = await self._push(meta, params)
        return with_params(
            meta.authorization_endpoint,
            {"client_id": self.config.client_id, "request_uri": request_uri},
        )

    def uses_par(self, meta: ProviderMetadata) -> bool:
        """``always``, or ``auto`` where the IdP requires it (so no extra round trip per
        sign-in for IdPs that merely offer it); a conflict is refused at start-up."""
        problem = par_problem(self.config.par, meta)
        if problem is not None:
            raise GatewayError("idp_unreachable", f"{self.config.id}: {problem}")
        return self.config.par == "always" or (self.config.par == "auto" and meta.par_required)

    async def _post_authenticated(
        self, meta: ProviderMetadata, endpoint: str, form: dict[str, str]
    ) -> Any:
        """POST ``form`` to one of the IdP's endpoints with this client's authentication
        (the token endpoint's, also for PAR, as RFC 9126 asks)."""
        headers: dict[str, str] = {}
        self.client_auth.apply(
            form, headers, token_endpoint=meta.token_endpoint, issuer=meta.issuer
        )
        return await self._http.post_form(endpoint, form, headers, self.config.http_timeout_seconds)

    async def _push(self, meta: ProviderMetadata, params: dict[str, str]) -> str:
        """POST the authorization request to the PAR endpoint; its ``request_uri``."""
        assert meta.par_endpoint is not None
        try:
            body = await self._post_authenticated(meta, meta.par_endpoint, dict(params))
        except UpstreamError as exc:
            error = exc.body.get("error") if isinstance(exc.body, dict) else None
            shown = error if isinstance(error, str) and error.isidentifier() else None
            raise GatewayError(
                "par_failed", f"{self.config.id}: {exc}" + (f" error={shown}" if shown else "")
            ) from None
        uri = body.get("request_uri") if isinstance(body, dict) else None
        if not isinstance(uri, str) or not uri or len(uri) > 2048:
            raise GatewayError("par_failed", f"{self.config.id}: PAR answer has no request_uri")
        return uri

    async def refresh(self, refresh_token: str, subject: str) -> Refreshed:
        """Ask the IdP whether the person may still sign in: a ``refresh_token`` grant.
        ``invalid_grant`` -> RefreshRefused; no usable answer -> RefreshUnavailable. An ID
        token in the answer must be valid (no nonce) and name the same ``sub``."""
        try:
            meta = await self.metadata()
        except GatewayError as exc:
            raise RefreshUnavailable(exc.detail) from None
        cfg = self.config
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        try:
            body = await self._post_authenticated(meta, meta.token_endpoint, form)
        except UpstreamError as exc:
            self._unreachable = exc.status is None
            error = exc.body.get("error") if isinstance(exc.body, dict) else None
            if exc.status in (400, 401) and error == "invalid_grant":
                raise RefreshRefused(f"{cfg.id}: error=invalid_grant") from None
            raise RefreshUnavailable(f"{cfg.id}: {exc}") from None
        self._unreachable = False
        if not isinstance(body, dict):
            raise RefreshUnavailable(f"{cfg.id}: refresh answer is not a JSON object")
        new = body.get("refresh_token")
        id_token = body.get("id_token")
        if isinstance(id_token, str):
            assert self._verifier is not None
            try:
                claims = await self._verifier.verify(id_token, nonce=None)
            except IdTokenError as exc:
                raise RefreshUnavailable(f"{cfg.id}: refreshed ID token: {exc.check}") from None
            if claims.get("sub") != subject:
                raise RefreshRefused(f"{cfg.id}: refreshed ID token names another sub")
        return Refreshed(
            new if isinstance(new, str) and new else None,
            id_token if isinstance(id_token, str) else None,
        )

    async def check_response_issuer(self, iss: str | None) -> None:
        """RFC 9207: the authorization response's ``iss`` names this IdP, and is there when
        the IdP advertises it. Checked before the response is read, errors included."""
        meta = await self.metadata()
        if iss is not None and not self.accepts_issuer(meta.issuer, iss):
            raise GatewayError(
                "issuer_mismatch", f"{self.config.id}: iss parameter names another issuer"
            )
        if iss is None and meta.iss_parameter_supported:
            raise GatewayError(
                "issuer_mismatch", f"{self.config.id}: advertised iss parameter missing"
            )

    def accepts_issuer(self, expected: str, value: str) -> bool:
        if self._accepts_issuer is not None:
            return self._accepts_issuer(value)
        return value == expected

    async def end_session_url(
        self, *, id_token: str, post_logout_redirect_uri: str, state: str | None = None
    ) -> str | None:
        """RP-initiated logout at the IdP (OpenID Connect RP-Initiated Logout 1.0); None
        when the IdP offers none. Raises GatewayError when its metadata cannot be loaded."""
        meta = await self.metadata()
        if not meta.end_session_endpoint:
            return None
        params = {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": post_logout_redirect_uri,
            "client_id": self.config.client_id,
        }
        if state is not None:
            params["state"] = state
        return with_params(meta.end_session_endpoint, params)

    async def redeem(
        self, code: str, *, code_verifier: str, nonce: str, iss: str | None = None
    ) -> TokenSet:
        """Exchange the code (with PKCE verifier and client auth), then verify the ID token;
        ``iss``: the response parameter, which the ID token's issuer must then equal."""
        meta = await self.metadata()
        cfg = self.config
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": code_verifier,
        }
        try:
            body = await self._post_authenticated(meta, meta.token_endpoint, form)
        except UpstreamError as exc:
            self._unreachable = exc.status is None  # no HTTP answer at all
            error = exc.body.get("error") if isinstance(exc.body, dict) else None
            raise GatewayError(
                "code_exchange_failed", f"{cfg.id}: {exc}" + (f" error={error}" if error else "")
            ) from None
        self._unreachable = False
        id_token = body.get("id_token") if isinstance(body, dict) else None
        if not isinstance(id_token, str):
            raise GatewayError("code_exchange_failed", f"{cfg.id}: token response has no id_token")
        access_token = body.get("access_token")
        access_token = access_token if isinstance(access_token, str) else None
        refresh_token = body.get("refresh_token")
        refresh_token = refresh_token if isinstance(refresh_token, str) and refresh_token else None
        assert self._verifier is not None
        try:
            claims = await self._verifier.verify(id_token, nonce=nonce, access_token=access_token)
        except IdTokenError as exc:
            if exc.check == "nonce":
                raise GatewayError("nonce_mismatch", f"{cfg.id}: {exc.detail}") from None
            raise GatewayError("id_token_invalid", f"{cfg.id}: {exc.check}: {exc.detail}") from None
        if iss is not None and claims.get("iss") != iss:
            raise GatewayError(
                "issuer_mismatch", f"{cfg.id}: ID token issuer is not the iss parameter"
            )
        return TokenSet(id_token, access_token, claims, refresh_token)

    async def verify_logout_token(self, token: str, max_age: int) -> dict[str, Any]:
        """Back-channel logout token checks with this IdP's keys, issuer and client id.
        Raises LogoutTokenError (a failed check) or GatewayError (metadata unavailable)."""
        await self.metadata()
        assert self._logout_verifier is not None
        return await self._logout_verifier.verify_logout(token, max_age)

    async def userinfo(self, access_token: str | None, subject: str) -> dict[str, Any]:
        """Userinfo claims; the ``sub`` must be the ID token's (OIDC Core 5.3.2)."""
        meta = await self.metadata()
        if not meta.userinfo_endpoint or not access_token:
            raise GatewayError("userinfo_failed", f"{self.config.id}: no userinfo endpoint/token")
        try:
            body = await self._http.get_json(
                meta.userinfo_endpoint,
                headers={"Authorization": f"Bearer {access_token}"},
                timeout=self.config.http_timeout_seconds,
            )
        except UpstreamError as exc:
            raise GatewayError("userinfo_failed", f"{self.config.id}: {exc}") from None
        if not isinstance(body, dict) or body.get("sub") != subject:
            raise GatewayError("userinfo_failed", f"{self.config.id}: userinfo sub mismatch")
        return body
