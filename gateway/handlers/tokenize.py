"""``GET /oidc/tokenize``: a live session plus a room becomes a Jitsi token and a redirect.

The policy decides per room, so one session can open several rooms with different outcomes
(or be refused one room and still open another).
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from adapters.base import Identity
from gateway.delivery import deliver
from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler
from gateway.rooms import room_link
from gateway.routing import eligible_idps

log = logging.getLogger(__name__)


class TokenizeHandler(GatewayHandler):
    async def get(self) -> None:
        room: str | None = None
        tenant: str | None = None
        identity: Identity | None = None
        try:
            room, tenant = self.room_and_tenant()
            identity = await self.current_identity()
            eligible = {i.id for i in eligible_idps(self.gateway.idps.values(), room, tenant)}
            if identity is None or identity.idp not in eligible:
                # No session, or the room is pinned to another IdP: sign in (there) first.
                self.redirect(room_link("/oidc/auth", room, tenant))
                return
            await self.mint_and_redirect(identity, room, tenant)
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

    async def mint_and_redirect(self, identity: Identity, room: str, tenant: str | None) -> None:
        decision = self.gateway.policy.room(identity, room, tenant)
        log.debug(
            "room %s for %s: %s (%s)",
            room,
            identity.user_id,
            "allowed" if decision.allowed else "refused",
            " | ".join(decision.trail),
        )
        if not decision.allowed:
            raise GatewayError("policy_denied", decision.reason, rule=decision.rule)
        minted = self.gateway.tokens.mint(
            identity,
            room,
            tenant,
            user_extra=decision.user_claims(),
            features=decision.features,
            lifetime=decision.token_lifetime_seconds,
            wildcard_room=decision.wildcard_room,
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
        page = self.gateway.tokens.room_page(room, tenant)
        self.redirect(deliver(self.gateway.settings.delivery, page, minted.token))
