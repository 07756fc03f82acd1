"""``GET /oidc/redirect/<idp>``: the IdP's answer, handed to the sign-in service."""

from __future__ import annotations

from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler


class CallbackHandler(GatewayHandler):
    async def get(self, path_idp: str) -> None:
        signin = self.gateway.signin
        try:
            params = {
                "state": self.param("state", 512),
                "iss": self.param("iss", 1024),
                "error": self.param("error", 256),
                "code": self.param("code", 2048),
            }
        except GatewayError as exc:
            idp = path_idp if path_idp in self.gateway.idps else None
            raise await signin.refused(self.caller(), exc, idp=idp) from None
        self.to_room(await signin.finish(self.caller(), path_idp, **params))
