"""``GET /oidc/tokenize``: a live session plus a room becomes a Jitsi token and a redirect.

The policy decides per room, so one session can open several rooms with different outcomes
(or be refused one room and still open another). ``state`` (the kept part of Jitsi's login
button state, see ``jitsi_state``) may come along: its overrides go back into the room
URL's hash, and a sign-in started by Jitsi's app ends in the app.
"""

from __future__ import annotations

from urllib.parse import urlencode

from adapters.base import Identity
from gateway.delivery import app_url, deliver
from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler
from gateway.jitsi_state import MAX_STATE, JitsiState, parse_state, state_param
from gateway.room_token import room_token
from gateway.rooms import room_link
from gateway.routing import eligible_idps


class TokenizeHandler(GatewayHandler):
    async def get(self) -> None:
        room: str | None = None
        tenant: str | None = None
        identity: Identity | None = None
        try:
            room, tenant = self.room_and_tenant()
            raw_state = self.param("state", MAX_STATE)
            state = parse_state(raw_state, room, tenant) if raw_state else None
            identity = await self.current_identity()
            eligible = {i.id for i in eligible_idps(self.gateway.idps.values(), room, tenant)}
            if identity is None or identity.idp not in eligible:
                # No session, or the room is pinned to another IdP: sign in (there) first.
                self.redirect(room_link("/oidc/auth", room, tenant, **state_param(state)))
                return
            await self.mint_and_redirect(identity, room, tenant, state)
        except GatewayError as exc:
            guest_url = None
            if room is not None and exc.reason == "policy_denied":
                if self.gateway.policy.guest_allowed(room):
                    flag = self.gateway.settings.delivery.flag_parameter
                    page = self.gateway.tokens.room_page(room, tenant)
                    guest_url = f"{page}?{urlencode({flag: 'guest'})}"
            await self.refuse(
                exc,
                event="room_refused",
                identity=identity,
                room=room,
                tenant=tenant,
                guest_url=guest_url,
            )

    async def mint_and_redirect(
        self, identity: Identity, room: str, tenant: str | None, state: JitsiState | None
    ) -> None:
        minted, decision = room_token(
            self.gateway.policy, self.gateway.tokens, identity, room, tenant
        )
        await self.audit(
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
        if in_app is None:
            self.redirect(url)
            return
        # A custom scheme: a page with a button (and an immediate refresh) hands over to the
        # app; the system browser may ask the person first.
        self.render("open_app.html", app_url=in_app, web_url=url, room=room)
