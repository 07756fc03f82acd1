"""The sign-in flow as one service: start a sign-in, finish it, issue a room token, end it.

No Tornado here. Handlers parse a request into a :class:`~gateway.auditing.Caller` and the
step's input, call one method, and turn the result (a URL to go to, a choice to show) or a
:class:`Refusal` into a redirect or a page. Every step writes its audit events here, so the
refusals are audited the same way whichever entry point they came through; a ``Refusal``
has been audited already and only needs showing.

Data flows one way: this module -> ``oidc`` (the relying party owns its metadata, redirect
URI and ``iss`` checks) / adapters / ``policy`` / ``jitsi`` -> ``store``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from adapters.base import (
    AccessDenied,
    AdapterError,
    Identity,
)
from gateway.auditing import Auditor, Caller
from gateway.delivery import app_url, deliver
from gateway.errors import GatewayError
from gateway.hashing import random_token, sha256_hex
from gateway.http import UpstreamError
from gateway.identity_rules import claimed, enforce
from gateway.idps import ConfiguredIdP
from gateway.jitsi_state import JitsiState, parse_state, state_param
from gateway.revalidation import first_revalidation
from gateway.room_token import room_token
from gateway.rooms import room_link
from gateway.routing import eligible_idps, hint_for, idp_for_email
from gateway.store.flows import Flow
from gateway.store.sessions import IdpLogin, SessionRecord

if TYPE_CHECKING:
    from gateway.context import Gateway

log = logging.getLogger("gateway.signin")

ENTRY = "/oidc/auth"
ERROR_CODE = re.compile(r"[a-z_]{1,64}")


class Refusal(Exception):
    """A refused step, already audited. ``room``/``tenant`` let the page offer a retry
    (or ``retry_url`` names it); ``guest_url`` a way in as a guest where the policy has one."""

    def __init__(
        self,
        error: GatewayError,
        *,
        room: str | None = None,
        tenant: str | None = None,
        guest_url: str | None = None,
        retry_url: str | None = None,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.room = room
        self.tenant = tenant
        self.guest_url = guest_url
        self.retry_url = retry_url or (RoomRequest(room, tenant).link(ENTRY) if room else None)


@dataclass(frozen=True)
class RoomRequest:
    """A room someone wants to enter, with what Jitsi's login button kept (``state``)."""

    room: str
    tenant: str | None = None
    state: JitsiState | None = None

    def link(self, path: str, **more: str) -> str:
        return room_link(path, self.room, self.tenant, **state_param(self.state), **more)


# ---- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoTo:
    """Send the browser here (the IdP, the next step, the room)."""

    url: str


@dataclass(frozen=True)
class ChooseIdP:
    """Several IdPs serve this room: the person picks (``confirm``: a link from another
    site named one, which the person confirms with a click)."""

    eligible: list[ConfiguredIdP]
    confirm: bool = False


@dataclass(frozen=True)
class LiveSession:
    """This browser is signed in through an IdP that serves the room (single sign-on)."""

    identity: Identity


@dataclass(frozen=True)
class RoomToken:
    """The room URL with the token, and the same in Jitsi's app when the app started."""

    url: str
    app_url: str | None
    room: str


@dataclass(frozen=True)
class SignedOut:
    identity: Identity | None
    idp_logout_url: str | None  # the IdP's end-session page, when it is to be asked
    idp_kept: str | None  # why not: "off" | "unavailable" (None: nothing to end)


class SignIn:
    def __init__(self, gateway: Gateway, audit: Auditor) -> None:
        self.gateway = gateway
        self.audit = audit

    # ---- sessions ----------------------------------------------------------------------

    async def live_identity(self, caller: Caller) -> Identity | None:
        """The identity of the caller's session. A cookie whose session has ended is
        audited once (``session_expired``) and marked to be cleared."""
        if not caller.session_id:
            return None
        record = await self.gateway.store.sessions.record(caller.session_id, self.gateway.now())
        if record is None:
            await self.audit(caller, "session_expired", "info")
            caller.end_session()
            return None
        # Nothing due: no further round trip. Due: one refresh at the IdP; a refusal ends
        # the session (audited there) and the person goes on to the IdP.
        if record.revalidate_at is not None and not await self.gateway.revalidator.still_valid(
            caller, record
        ):
            return None
        return record.identity

    # ---- start ---------------------------------------------------------------------------

    async def start(
        self,
        caller: Caller,
        request: RoomRequest,
        *,
        idp_id: str | None,
        login_hint: str | None,
        return_to: str | None = None,
    ) -> GoTo | ChooseIdP | LiveSession:
        """A room request: the live session, a choice of IdP, or the IdP's sign-in page.
        ``return_to``: where the callback continues (default: the room, minted at once)."""
        idp: ConfiguredIdP | None = None
        try:
            eligible = eligible_idps(self.gateway.idps.values(), request.room, request.tenant)
            identity = await self.live_identity(caller)
            if identity is not None and identity.idp in {i.id for i in eligible}:
                return LiveSession(identity)
            if idp_id is not None:
                idp = next((i for i in eligible if i.id == idp_id), None)
                if idp is None:
                    raise GatewayError("idp_unknown", f"idp {idp_id!r} does not serve this room")
            elif login_hint and (found := idp_for_email(eligible, login_hint)):
                idp = found
            if idp is not None and len(eligible) > 1 and caller.cross_site:
                # Login CSRF: a link on another site must not pick the IdP (and so, where
                # that IdP signs in silently, the account). The person confirms with a click.
                await self.audit(
                    caller,
                    "idp_choice_confirm",
                    "info",
                    idp=idp.id,
                    room=request.room,
                    tenant=request.tenant,
                )
                return ChooseIdP(eligible, confirm=True)
            if idp is None and len(eligible) == 1:
                idp = eligible[0]
            elif idp is None and not eligible:
                raise GatewayError("idp_unknown", "no configured IdP serves this room")
            elif idp is None:
                return ChooseIdP(eligible)
            return await self._to_idp(caller, idp, request, login_hint, return_to)
        except GatewayError as exc:
            # Attributed to the IdP the request named when it is configured (an attack on
            # ``corp`` is found by ``--idp corp``); any other name is kept as requested_idp.
            named = idp.id if idp else idp_id if idp_id in self.gateway.idps else None
            raise await self.refused(
                caller,
                exc,
                idp=named,
                room=request.room,
                tenant=request.tenant,
                requested_idp=idp_id if idp_id and named is None else None,
            ) from None

    async def _to_idp(
        self,
        caller: Caller,
        idp: ConfiguredIdP,
        request: RoomRequest,
        login_hint: str | None,
        return_to: str | None,
    ) -> GoTo:
        settings = self.gateway.settings
        state, nonce, verifier = random_token(), random_token(), random_token(48)
        binding = caller.flow_binding or random_token()
        now = self.gateway.now()
        lifetime = settings.session.flow_lifetime_seconds
        flow = Flow(
            idp=idp.id,
            room=request.room,
            tenant=request.tenant,
            nonce=nonce,
            code_verifier=verifier,
            jitsi_state=request.state.compact() if request.state else None,
            return_to=return_to,
            created_at=now,
            expires_at=now + timedelta(seconds=lifetime),
        )
        extra: dict[str, str] = {}
        login_hint = hint_for(idp, self.gateway.idps.values(), login_hint)
        if idp.authorization_params is not None:
            extra |= idp.authorization_params.authorization_params(login_hint)
        if login_hint:
            extra["login_hint"] = login_hint
        url = await idp.rp.authorization_url(
            state=state, nonce=nonce, code_verifier=verifier, extra=extra
        )
        await self.gateway.store.flows.create(state, binding, flow)
        caller.bind_flow(binding, lifetime)
        await self.audit(
            caller, "flow_started", "success", idp=idp.id, room=request.room, tenant=request.tenant
        )
        return GoTo(url)

    # ---- finish --------------------------------------------------------------------------

    async def finish(
        self,
        caller: Caller,
        path_idp: str,
        *,
        state: str | None,
        iss: str | None,
        error: str | None,
        code: str | None,
    ) -> GoTo | RoomToken:
        """The IdP's answer at ``/oidc/redirect/<path_idp>``: state first (consumed before
        anything else, so a refused state never reaches the token endpoint), then the
        response's issuer, then the code, the identity, the policy and a new session."""
        flow: Flow | None = None
        identity: Identity | None = None
        try:
            if not state:
                raise GatewayError("state_invalid", "callback without state")
            flow = await self.gateway.store.flows.consume(
                state, caller.flow_binding, self.gateway.now()
            )
            if path_idp != flow.idp:  # an answer meant for another IdP's callback: mix-up
                raise GatewayError(
                    "issuer_mismatch", f"flow for {flow.idp} answered at {path_idp}'s redirect URI"
                )
            idp = self.gateway.idps.get(flow.idp)
            if idp is None:
                raise GatewayError(
                    "idp_unknown", f"flow names idp {flow.idp!r}, no longer configured"
                )
            await idp.rp.check_response_issuer(iss)  # RFC 9207, on error responses too
            if error is not None:
                shown = error if ERROR_CODE.fullmatch(error) else "malformed"
                raise GatewayError("idp_error", f"{idp.id}: error={shown}")
            if not code:
                raise GatewayError("bad_request", "callback without code")
            login = await self._login(idp, flow, code, iss)
            identity = login.identity
            await self._signed_in(caller, flow, login)
        except GatewayError as exc:
            # Attribution: the flow's IdP (also for refused states whose record names it),
            # else the callback path's IdP when configured; the path's IdP in its own field
            # whenever it is another one (an answer delivered at a foreign callback).
            flow_idp = exc.audit.pop("flow_idp", None)
            idp_id = flow.idp if flow else flow_idp
            if idp_id is None and path_idp in self.gateway.idps:
                idp_id = path_idp
            raise await self.refused(
                caller,
                exc,
                identity=identity,
                idp=idp_id,
                room=flow.room if flow else None,
                tenant=flow.tenant if flow else None,
                callback_idp=path_idp if path_idp != idp_id else None,
            ) from None
        assert flow is not None and identity is not None  # set, or the step was refused
        if flow.return_to and flow.return_to.startswith("/oidc/authorize?"):
            return GoTo(flow.return_to)  # the token service's request, now with a session
        # The room token at once, from the identity just verified: no hop through
        # /oidc/tokenize and no second session lookup (the state was checked at the start).
        state = parse_state(flow.jitsi_state, flow.room, flow.tenant) if flow.jitsi_state else None
        return await self.enter(caller, identity, RoomRequest(flow.room, flow.tenant, state))

    async def _login(self, idp: ConfiguredIdP, flow: Flow, code: str, iss: str | None) -> IdpLogin:
        """Code -> verified ID token -> the adapter's identity (with the verified ``sub``)."""
        tokens = await idp.rp.redeem(
            code, code_verifier=flow.code_verifier, nonce=flow.nonce, iss=iss
        )
        userinfo = None
        if idp.config.userinfo:
            userinfo = await idp.rp.userinfo(tokens.access_token, tokens.claims["sub"])
        try:
            identity = enforce(idp.adapter.identity(tokens.claims, userinfo), idp.id, tokens.claims)
            if idp.enricher is not None:
                identity = enforce(
                    await idp.enricher.enrich(identity, tokens.access_token, self.gateway.http),
                    idp.id,
                    tokens.claims,
                )
        except AdapterError as exc:
            reason = "policy_denied" if isinstance(exc, AccessDenied) else "claims_invalid"
            raise GatewayError(
                reason, f"{idp.id}: {exc.reason}: {exc}", **claimed(tokens.claims)
            ) from None
        except UpstreamError as exc:
            raise GatewayError(
                "claims_invalid", f"{idp.id}: enrichment failed: {exc}", **claimed(tokens.claims)
            ) from None
        sid = tokens.claims.get("sid")
        return IdpLogin(
            identity,
            subject=tokens.claims["sub"],
            session_id=sid if isinstance(sid, str) else None,
            id_token=tokens.id_token,
            refresh_token=tokens.refresh_token,
        )

    async def _signed_in(self, caller: Caller, flow: Flow, login: IdpLogin) -> None:
        identity = login.identity
        decision = self.gateway.policy.sign_in(identity)
        log.debug(
            "sign-in %s for %s: %s",
            "allowed" if decision.allowed else "refused",
            identity.user_id,
            " | ".join(decision.trail),
        )
        if not decision.allowed:
            raise GatewayError("policy_denied", decision.reason, rule=decision.rule)
        sessions = self.gateway.store.sessions
        if caller.session_id:  # a new sign-in ends whatever session this browser had before
            await sessions.delete(caller.session_id)
        session_id = random_token()  # always fresh: never reuse an id from before login
        now = self.gateway.now()
        lifetime = self.gateway.settings.session.lifetime_seconds
        idp_config = self.gateway.idps[flow.idp].config
        revalidate_at = first_revalidation(idp_config, now, login.refresh_token is not None)
        sealed = None
        if revalidate_at is not None and login.refresh_token is not None:
            sealed = self.gateway.sealer.seal(login.refresh_token, sha256_hex(session_id))
        await sessions.create(
            session_id,
            login,
            created_at=now,
            expires_at=now + timedelta(seconds=lifetime),
            revalidate_at=revalidate_at,
            idp_refresh=sealed,
        )
        caller.start_session(session_id, lifetime)
        event = {
            "identity": identity,
            "room": flow.room,
            "tenant": flow.tenant,
            "rule": decision.rule,
            "decision": decision.reason,
        }
        if flow.return_to:  # the token service continues in another request
            await self.audit(caller, "login_succeeded", "success", **event)
        else:  # stored with the token_minted (or room_refused) event that follows at once
            self.audit.defer(caller, "login_succeeded", "success", **event)

    # ---- room tokens -----------------------------------------------------------------------

    async def room(self, caller: Caller, request: RoomRequest) -> RoomToken | GoTo:
        """A Jitsi token for the caller's session and this room, or the way to sign in
        (no session, or the room is pinned to another IdP)."""
        try:
            identity = await self.live_identity(caller)
        except GatewayError as exc:
            raise await self.room_refused(caller, exc, None, request) from None
        eligible = eligible_idps(self.gateway.idps.values(), request.room, request.tenant)
        if identity is None or identity.idp not in {i.id for i in eligible}:
            return GoTo(request.link(ENTRY))
        return await self.enter(caller, identity, request)

    async def enter(self, caller: Caller, identity: Identity, request: RoomRequest) -> RoomToken:
        """The room token for a person already known (a live session at the entry point,
        or the sign-in that just finished): no further hop through ``/oidc/tokenize``."""
        try:
            return await self.room_token(caller, identity, request)
        except GatewayError as exc:
            raise await self.room_refused(caller, exc, identity, request) from None

    async def room_refused(
        self, caller: Caller, exc: GatewayError, identity: Identity | None, request: RoomRequest
    ) -> Refusal:
        guest_url = None
        if exc.reason == "policy_denied" and self.gateway.policy.guest_allowed(request.room):
            flag = self.gateway.settings.delivery.flag_parameter
            page = self.gateway.tokens.room_page(request.room, request.tenant)
            guest_url = f"{page}?{urlencode({flag: 'guest'})}"
        return await self.refused(
            caller,
            exc,
            event="room_refused",
            identity=identity,
            room=request.room,
            tenant=request.tenant,
            guest_url=guest_url,
        )

    async def room_token(
        self, caller: Caller, identity: Identity, request: RoomRequest
    ) -> RoomToken:
        """Mint what the policy allows for this room; raises GatewayError when it refuses."""
        room, tenant, state = request.room, request.tenant, request.state
        minted, decision = room_token(
            self.gateway.policy, self.gateway.tokens, identity, room, tenant
        )
        await self.audit(
            caller,
            "token_minted",
            "success",
            identity=identity,
            room=minted.room,
            tenant=tenant,
            jti=minted.jti,
            token_expires_at=minted.expires_at,
            token_subject=minted.subject,
            affiliation=decision.affiliation,
            moderator=decision.moderator,
            features=decision.features,
            rule=decision.rule,
            decision=decision.reason,
        )
        delivery = self.gateway.settings.delivery
        page = self.gateway.tokens.room_page(room, tenant)
        url = deliver(delivery, page, minted.token, state.overrides if state else None)
        in_app = app_url(delivery.apps, state.app, url) if state and state.app else None
        return RoomToken(url, in_app, room)

    # ---- end -------------------------------------------------------------------------------

    async def end_session(
        self,
        caller: Caller,
        *,
        idp_logout: bool,
        logged_out_state: Callable[[str], str] | None = None,
        **fields: Any,
    ) -> SignedOut:
        """End the caller's session here; with ``idp_logout``, also the way to end it at the
        IdP (its end-session page with ``id_token_hint`` and ``logged_out_state(idp)``, the
        state the IdP hands back to prove it signed the person out)."""
        sid = caller.session_id
        record: SessionRecord | None = None
        try:
            if sid:
                sessions = self.gateway.store.sessions
                record = await sessions.record(sid, self.gateway.now())
                await sessions.delete(sid)
        except GatewayError as exc:
            raise await self.refused(caller, exc, event="logout") from None
        caller.end_session()
        if sid is None:
            return SignedOut(None, None, None)
        identity = record.identity if record else None
        url, kept = await self._idp_logout(record, idp_logout, logged_out_state)
        await self.audit(
            caller,
            "logout",
            "success",
            identity=identity,
            idp_logout=url is not None,
            **fields,
        )
        return SignedOut(identity, url, kept)

    async def _idp_logout(
        self,
        record: SessionRecord | None,
        wanted: bool,
        state: Callable[[str], str] | None,
    ) -> tuple[str | None, str | None]:
        if record is None:
            return None, None
        if not wanted:
            return None, "off"
        idp = self.gateway.idps.get(record.identity.idp)
        if idp is None or not record.id_token:
            return None, "unavailable"
        try:
            url = await idp.rp.end_session_url(
                id_token=record.id_token,
                post_logout_redirect_uri=f"{self.gateway.settings.public_url}/oidc/logged-out",
                state=state(idp.id) if state else None,
            )
        except GatewayError as exc:
            log.warning("no IdP logout for %s: %s", idp.id, exc.detail)
            return None, "unavailable"
        return url, None if url else "unavailable"

    # ---- refusals --------------------------------------------------------------------------

    async def refused(
        self,
        caller: Caller,
        error: GatewayError,
        *,
        event: str = "login_failed",
        idp: str | None = None,
        identity: Identity | None = None,
        room: str | None = None,
        tenant: str | None = None,
        guest_url: str | None = None,
        retry_url: str | None = None,
        **fields: Any,
    ) -> Refusal:
        """Audit a refused step (store_unavailable too: the audit log spools while MongoDB
        is down) and return the :class:`Refusal` to raise."""
        log.info("refused %s: %s", error.reason, error.detail)
        await self.audit(
            caller,
            event,
            error.info.outcome,
            idp=idp,
            identity=identity,
            reason=error.reason,
            detail=error.detail,
            room=room,
            tenant=tenant,
            **fields,
            **error.audit,
        )
        return Refusal(error, room=room, tenant=tenant, guest_url=guest_url, retry_url=retry_url)
