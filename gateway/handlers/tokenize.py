"""``GET /oidc/tokenize``: a live session plus a room becomes a Jitsi token and a redirect."""

from __future__ import annotations

from urllib.parse import urlencode

from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler


class TokenizeHandler(GatewayHandler):
    async def get(self) -> None:
        room: str | None = None
        tenant: str | None = None
        try:
            room, tenant = self.room_and_tenant()
            sid = self.session_id()
            identity = (
                await self.gateway.store.sessions.get(sid, self.gateway.now()) if sid else None
            )
            if identity is None:
                if sid:
                    await self.audit("session_expired", "info", room=room, tenant=tenant)
                query = {"room": room, **({"tenant": tenant} if tenant else {})}
                self.redirect("/oidc/auth?" + urlencode(query))
                return
            minted = self.gateway.tokens.mint(identity, room, tenant)
            await self.audit(
                "token_minted",
                "success",
                identity=identity,
                room=minted.room,
                tenant=tenant,
                jti=minted.jti,
                token_expires_at=minted.expires_at,
                token_subject=minted.subject,
            )
            self.redirect(self.gateway.tokens.room_url(room, tenant, minted.token))
        except GatewayError as exc:
            await self.refuse(exc, event="room_refused", room=room, tenant=tenant)
