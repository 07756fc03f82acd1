"""``GET /oidc/frontchannel-logout/<idp id>``: the IdP's logout page frames this (OpenID
Connect Front-Channel Logout 1.0); the checks and what ends are in ``gateway.frontchannel``."""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.frontchannel import frontchannel_logout, idp_origins
from gateway.handlers.base import GatewayHandler

MAX_PARAM_ISS = 2048


class FrontchannelLogoutHandler(GatewayHandler):
    async def get(self, idp_id: str) -> None:
        idp = self.gateway.idps.get(idp_id)
        if idp is None or not idp.config.frontchannel_logout:
            self.send_error(404)
            return
        # Framable by this IdP's pages only (the default headers forbid any framing).
        self.clear_header("X-Frame-Options")
        ancestors = " ".join(await idp_origins(idp))
        self.set_header(
            "Content-Security-Policy",
            f"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors {ancestors}",
        )
        try:
            done = await frontchannel_logout(
                self.gateway,
                self.caller(),
                idp,
                iss=self.param("iss", MAX_PARAM_ISS),
                sid=self.param("sid", 256),
                referer=self.request.headers.get("Referer"),
                fetch_dest=self.request.headers.get("Sec-Fetch-Dest"),
            )
        except GatewayError as exc:
            await self.refuse(exc, event="frontchannel_logout", idp=idp.id)
            return
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"signed out ({done.ended})\n")
