"""The token service's steps without Tornado: check an authorization request, issue a code,
answer the token endpoint (``authorization_code`` with PKCE, ``refresh_token``).

Every refusal is a ``TokenServiceError`` carrying the RFC 6749 error code for the client,
a description, and the audit reason; the web layer turns it into JSON or a redirect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from adapters.base import Identity
from gateway.errors import GatewayError
from gateway.hashing import random_token
from gateway.jitsi import JitsiTokens
from gateway.jitsi_state import JitsiState, parse_state
from gateway.oidc.pkce import s256_challenge
from gateway.policy import Policy
from gateway.room_token import room_token
from gateway.store import Store
from gateway.store.sessions import SessionRecord
from gateway.tokenservice.keys import SigningKey
from gateway.tokenservice.settings import TokenClient, TokenServiceSettings

CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, no padding
VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 4.1
NONCE = re.compile(r"[A-Za-z0-9._~-]{8,256}")


class TokenServiceError(Exception):
    def __init__(
        self, error: str, description: str, reason: str, status: int = 400, **audit: Any
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.reason = reason
        self.status = status
        self.audit = audit


def _invalid_request(description: str) -> TokenServiceError:
    return TokenServiceError("invalid_request", description, "token_request_invalid")


def _invalid_grant(description: str, **audit: Any) -> TokenServiceError:
    return TokenServiceError("invalid_grant", description, "token_grant_invalid", **audit)


@dataclass(frozen=True)
class AuthorizeRequest:
    client: TokenClient
    code_challenge: str
    state: str  # Jitsi's state exactly as received (handed back unchanged)
    jitsi: JitsiState
    nonce: str | None

    def redirect(self, params: Mapping[str, str]) -> str:
        """The registered sso.html with ``params`` and the state, byte for byte as Jitsi
        sent it: Jitsi encodes it with ``encodeURIComponent``, which this repeats (a space is
        ``%20``, never ``+``), so the same characters come back whatever the browser's
        path through the IdP and the chooser did to the query on the way."""
        query = urlencode(params)
        return f"{self.client.redirect_uri}?{query}&state={encode_uri_component(self.state)}"

    @property
    def refresh_token(self) -> str | None:
        """The ``refreshToken`` Jitsi carries in the state when it asks for a refresh."""
        token = json.loads(self.state).get("refreshToken")  # parse_state checked the JSON
        return token if isinstance(token, str) and token else None

    def without_refresh(self) -> AuthorizeRequest:
        """The same request with ``refreshToken`` taken out of the state (JSON as Jitsi's
        ``JSON.stringify`` writes it, the other keys in their order)."""
        doc = json.loads(self.state)
        doc.pop("refreshToken", None)
        state = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        return replace(self, state=state)


def encode_uri_component(value: str) -> str:
    """JavaScript's ``encodeURIComponent``: UTF-8, everything but ``A-Za-z0-9-_.!~*'()``
    percent-encoded."""
    return quote(value, safe="!~*'()")


@dataclass
class TokenAnswer:
    body: dict[str, Any]
    identity: Identity
    room: str
    tenant: str | None
    audit: dict[str, Any] = field(default_factory=dict)


class TokenService:
    def __init__(
        self,
        settings: TokenServiceSettings,
        key: SigningKey,
        issuer: str,
        store: Store,
        policy: Policy,
        tokens: JitsiTokens,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.key = key
        self.issuer = issuer
        self.store = store
        self.policy = policy
        self.tokens = tokens
        self.clock = clock
        # Set by the gateway: (caller, session record) -> False when the IdP ended the
        # sign-in (gateway.revalidation; the caller is the request's, for the audit event).
        self.revalidate: Callable[[Any, SessionRecord], Awaitable[bool]] | None = None

    async def _still_valid(self, session: SessionRecord, caller: Any) -> bool:
        if self.revalidate is None or caller is None or session.revalidate_at is None:
            return True
        return await self.revalidate(caller, session)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # ---- the authorization step --------------------------------------------------------

    def authorize_request(self, params: Mapping[str, str | None]) -> AuthorizeRequest:
        """Check what Jitsi's login button sent. Before the client and redirect URI are
        known to be registered, errors are pages (``GatewayError``), never redirects."""
        client = self.settings.client(params.get("client_id"))
        if client is None:
            raise GatewayError("token_request_invalid", "unknown or missing client_id")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is not None and redirect_uri != client.redirect_uri:
            raise GatewayError("token_request_invalid", "redirect_uri is not the registered one")
        state = params.get("state")
        if not state:
            raise GatewayError("token_request_invalid", "state missing")
        jitsi = parse_state(state, params.get("room"))
        method = params.get("code_challenge_method") or "S256"  # Jitsi sends S256, unnamed
        challenge = params.get("code_challenge") or ""
        if method != "S256" or not CHALLENGE.fullmatch(challenge):
            raise GatewayError("token_request_invalid", "code_challenge must be S256")
        nonce = params.get("nonce")
        if nonce is not None and not NONCE.fullmatch(nonce):
            raise GatewayError("token_request_invalid", "nonce malformed")
        response_type = params.get("response_type")
        if response_type not in (None, "code"):
            raise GatewayError("token_request_invalid", "response_type must be code")
        return AuthorizeRequest(client, challenge, state, jitsi, nonce)

    async def dead_refresh(self, request: AuthorizeRequest) -> bool:
        """True when the state carries a refresh token that can no longer be used (ended
        session, logout, used, revoked, expired or unknown). Jitsi's ``sso.html`` takes its
        refresh branch whenever the state has one and ignores the code, so after a fresh
        sign-in such a token would turn it into a failure Jitsi never recovers from."""
        token = request.refresh_token
        if token is None:
            return False
        now = self.now()
        doc = await self.store.grants.live_refresh(token, now)
        if doc is None or doc["client_id"] != request.client.client_id:
            return True
        if await self.store.grants.family_revoked(doc["family"]):  # revoked mid-refresh
            return True
        return await self.store.sessions.record_by_hash(doc["session"], now) is None

    async def issue_code(self, request: AuthorizeRequest, session_hash: str) -> str:
        """A single-use code bound to the client, challenge, room, nonce and session."""
        code = random_token()
        now = self.now()
        await self.store.grants.create_code(
            code,
            {
                "client_id": request.client.client_id,
                "redirect_uri": request.client.redirect_uri,
                "code_challenge": request.code_challenge,
                "nonce": request.nonce,
                "room": request.jitsi.room,
                "tenant": request.jitsi.tenant,
                "session": session_hash,
                "family": random_token(16),
                "created_at": now,
                "expires_at": now + timedelta(seconds=self.settings.code_lifetime_seconds),
            },
        )
        return request.redirect({"code": code})

    # ---- the token endpoint --------------------------------------------------------------

    async def token(self, form: Mapping[str, list[str]], caller: Any = None) -> TokenAnswer:
        """``caller``: the request's (audit events of a revalidation it causes)."""
        values = {}
        for name, items in form.items():
            if len(items) != 1:
                raise _invalid_request(f"{name} given {len(items)} times")
            values[name] = items[0]
        grant = values.get("grant_type")
        client = self.settings.client(values.get("client_id") or "")
        if grant not in ("authorization_code", "refresh_token"):
            raise TokenServiceError(
                "unsupported_grant_type",
                "grant_type must be authorization_code or refresh_token",
                "token_request_invalid",
            )
        if client is None:
            raise TokenServiceError(
                "invalid_client", "unknown client_id", "token_request_invalid", status=401
            )
        if grant == "authorization_code":
            return await self._redeem(client, values, caller)
        return await self._refresh(client, values, caller)

    async def _redeem(
        self, client: TokenClient, values: dict[str, str], caller: Any = None
    ) -> TokenAnswer:
        code, verifier = values.get("code"), values.get("code_verifier")
        if not code or not verifier or not values.get("redirect_uri"):
            raise _invalid_request("code, redirect_uri and code_verifier are required")
        now = self.now()
        mine, seen = await self.store.grants.consume_code(code, now)
        if mine is None:
            if seen is not None and seen.get("used_at") is not None:
                # A code redeemed twice: whoever redeemed it first may be an attacker.
                await self.store.grants.revoke_family(seen["family"], self._family_limit(now))
                raise _invalid_grant("code already used; what it issued is revoked")
            raise _invalid_grant("code unknown or expired")
        if mine["client_id"] != client.client_id:
            raise _invalid_grant("code issued to another client")
        if values["redirect_uri"] != mine["redirect_uri"]:
            raise _invalid_grant("redirect_uri differs from the authorization request")
        if not VERIFIER.fullmatch(verifier) or s256_challenge(verifier) != mine["code_challenge"]:
            raise _invalid_grant("code_verifier does not match the code_challenge")
        session = await self.store.sessions.record_by_hash(mine["session"], now)
        if session is None:
            raise _invalid_grant("the sign-in session has ended")
        if not await self._still_valid(session, caller):
            await self.store.grants.revoke_family(mine["family"], self._family_limit(now))
            raise _invalid_grant("the IdP ended the sign-in")
        limit = now + timedelta(seconds=self.settings.refresh_token_lifetime_seconds)
        family_expires = min(limit, session.expires_at or limit)
        return await self._answer(
            client, session.identity, mine, family_expires, event="token_issued"
        )

    async def _refresh(
        self, client: TokenClient, values: dict[str, str], caller: Any = None
    ) -> TokenAnswer:
        token = values.get("refresh_token")
        if not token:
            raise _invalid_request("refresh_token is required")
        now = self.now()
        mine, seen = await self.store.grants.use_refresh(token, now)
        if mine is None:
            if seen is not None and seen.get("used_at") is not None and not seen.get("revoked"):
                revoked = await self.store.grants.revoke_family(
                    seen["family"], self._family_limit(now)
                )
                raise TokenServiceError(
                    "invalid_grant",
                    "refresh token already used; its family is revoked",
                    "refresh_token_reused",
                    revoked=revoked,
                )
            raise _invalid_grant("refresh token unknown, revoked or expired")
        if mine["client_id"] != client.client_id:
            raise _invalid_grant("refresh token issued to another client")
        session = await self.store.sessions.record_by_hash(mine["session"], now)
        if session is None:
            await self.store.grants.revoke_family(mine["family"], self._family_limit(now))
            raise _invalid_grant("the sign-in session has ended")
        if not await self._still_valid(session, caller):
            await self.store.grants.revoke_family(mine["family"], self._family_limit(now))
            raise _invalid_grant("the IdP ended the sign-in")
        return await self._answer(
            client, session.identity, mine, mine["family_expires_at"], event="token_refreshed"
        )

    async def _answer(
        self,
        client: TokenClient,
        identity: Identity,
        grant: dict[str, Any],
        family_expires: datetime,
        *,
        event: str,
    ) -> TokenAnswer:
        room, tenant = grant["room"], grant["tenant"]
        try:
            minted, decision = room_token(self.policy, self.tokens, identity, room, tenant)
        except GatewayError as exc:  # the policy, re-checked: a removed group counts now
            await self.store.grants.revoke_family(grant["family"], self._family_limit(self.now()))
            rule = exc.audit.get("rule")
            raise _invalid_grant("the policy refuses this room now", rule=rule) from None
        now = self.now()
        refresh = random_token()
        await self.store.grants.create_refresh(
            refresh,
            {
                "client_id": client.client_id,
                "family": grant["family"],
                "session": grant["session"],
                "room": room,
                "tenant": tenant,
                "nonce": grant.get("nonce"),
                "created_at": now,
                "family_expires_at": family_expires,
                "expires_at": family_expires,
            },
        )
        # After the insert: a revocation that raced this step (a reused code or refresh
        # token, a session end) has either marked the family by now or will revoke the
        # record just inserted (see gateway/store/grants.py).
        if await self.store.grants.family_revoked(grant["family"]):
            await self.store.grants.revoke_family(grant["family"], self._family_limit(now))
            raise _invalid_grant("the token family was revoked meanwhile")
        issued = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": identity.user_id,
            "aud": client.client_id,
            "azp": client.client_id,
            "iat": issued,
            "exp": issued + self.settings.id_token_lifetime_seconds,
        }
        if grant.get("nonce"):
            claims["nonce"] = grant["nonce"]
        if identity.name:
            claims["name"] = identity.name
        body = {
            "access_token": minted.token,
            "token_type": "Bearer",
            "expires_in": max(0, minted.expires_at - issued),
            "id_token": self.key.sign(claims),
            "refresh_token": refresh,
        }
        audit = {
            "event": event,
            "client_id": client.client_id,
            "jti": minted.jti,
            "token_expires_at": minted.expires_at,
            "affiliation": decision.affiliation,
            "moderator": decision.moderator,
            "features": decision.features,
            "rule": decision.rule,
            "refresh_family": grant["family"][:16],
        }
        return TokenAnswer(body, identity, room, tenant, audit)

    def _family_limit(self, now: datetime) -> datetime:
        """The latest a family started by now could expire: how long its marker is kept."""
        return now + timedelta(seconds=self.settings.refresh_token_lifetime_seconds)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid"],
        }
