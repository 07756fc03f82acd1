"""``GET /.well-known/jwks.json``: the public keys of the gateway's client assertions.

IdPs that fetch a client's keys by URL (oidc-provider's ``jwks_uri``, Keycloak's "Use JWKS
URL") read them here, so rotating the key needs no change at the IdP. Only public members
are served; 404 when no IdP uses ``private_key_jwt``.
"""

from __future__ import annotations

import json

from gateway.handlers.base import GatewayHandler
from gateway.oidc.client_auth import public_jwks


class ClientJwksHandler(GatewayHandler):
    def get(self) -> None:
        keys = [k for i in self.gateway.idps.values() if (k := i.rp.client_auth.key)]
        if not keys:
            self.set_status(404)
            self.finish({"error": "not_found", "detail": "no IdP uses private_key_jwt"})
            return
        # Public keys may be cached briefly; a rotation publishes the new key first.
        self.set_header("Cache-Control", "public, max-age=300")
        self.set_header("Content-Type", "application/jwk-set+json")
        self.finish(json.dumps(public_jwks(keys)))
