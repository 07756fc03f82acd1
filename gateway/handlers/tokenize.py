"""``GET /oidc/tokenize``: a live session plus a room becomes a Jitsi token and a redirect.

The policy decides per room, so one session can open several rooms with different outcomes
(or be refused one room and still open another). ``state`` (the kept part of Jitsi's login
button state, see ``jitsi_state``) may come along: its overrides go back into the room
URL's hash, and a sign-in started by Jitsi's app ends in the app.

The sign-in itself no longer passes here (the callback and single sign-on at ``/oidc/auth``
mint at once); this stays for links made before, and for anyone who links to it.
"""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler
from gateway.jitsi_state import MAX_STATE, parse_state
from gateway.signin import RoomRequest


class TokenizeHandler(GatewayHandler):
    async def get(self) -> None:
        signin = self.gateway.signin
        room: str | None = None
        tenant: str | None = None
        try:
            room, tenant = self.room_and_tenant()
            raw_state = self.param("state", MAX_STATE)
            state = parse_state(raw_state, room, tenant) if raw_state else None
        except GatewayError as exc:
            raise await signin.refused(
                self.caller(), exc, event="room_refused", room=room, tenant=tenant
            ) from None
        self.to_room(await signin.room(self.caller(), RoomRequest(room, tenant, state)))
