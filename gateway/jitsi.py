"""The Jitsi token, as Prosody's token plugin checks it (see DESIGN.md, "Jitsi token contract").

``typ`` is ``JWT``; ``alg`` is the deployment's (HS256 with ``app_secret`` or RS256 with a
private key whose ``kid`` Prosody resolves through ``asap_key_server``). ``nbf`` is set a few
seconds in the past because Prosody checks it with no leeway and clocks drift.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from adapters.base import Identity
from gateway.config import Jitsi


@dataclass(frozen=True)
class MintedToken:
    token: str
    jti: str
    expires_at: int
    room: str
    subject: str


def gravatar_url(email: str, default_url: str | None) -> str:
    digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
    url = f"https://www.gravatar.com/avatar/{digest}"
    return url + ("?" + urlencode({"d": default_url}) if default_url else "")


class JitsiTokens:
    def __init__(self, config: Jitsi, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        if config.algorithm == "RS256":
            assert config.private_key_file is not None
            self._key: Any = load_pem_private_key(config.private_key_file.read_bytes(), None)
        else:
            assert config.app_secret is not None
            self._key = config.app_secret.get_secret_value()

    def avatar(self, identity: Identity) -> str | None:
        avatar = self.config.avatar
        if avatar.gravatar and identity.email:
            return gravatar_url(identity.email, avatar.default_url)
        return avatar.default_url

    def user_context(self, identity: Identity) -> dict[str, Any]:
        user = {
            "id": identity.user_id,
            "name": identity.name,
            "email": identity.email,
            "avatar": self.avatar(identity),
        }
        return {k: v for k, v in user.items() if v}

    def mint(
        self,
        identity: Identity,
        room: str,
        tenant: str | None,
        *,
        user_extra: Mapping[str, Any] | None = None,
        features: Mapping[str, bool] | None = None,
        lifetime: int | None = None,
        wildcard_room: bool = False,
    ) -> MintedToken:
        cfg = self.config
        now = int(self.clock())
        jti = uuid.uuid4().hex
        exp = now + (lifetime or cfg.token_lifetime_seconds)
        subject = tenant.lower() if tenant else cfg.domain
        room_claim = "*" if wildcard_room and cfg.room_wildcard else room.lower()
        context: dict[str, Any] = {"user": {**self.user_context(identity), **(user_extra or {})}}
        if features:
            context["features"] = {k: bool(v) for k, v in features.items()}
        claims = {
            "iss": cfg.app_id,
            "aud": cfg.audience,
            "sub": subject,
            "room": room_claim,
            "iat": now,
            "nbf": now - cfg.not_before_skew_seconds,
            "exp": exp,
            "jti": jti,
            "context": context,
        }
        headers = {"typ": "JWT"}
        if cfg.algorithm == "RS256":
            headers["kid"] = cfg.key_id or ""
        token = jwt.encode(claims, self._key, algorithm=cfg.algorithm, headers=headers)
        return MintedToken(token, jti, exp, room_claim, subject)

    def room_page(self, room: str, tenant: str | None) -> str:
        """``<base>/<tenant>/<room>``; names are pre-validated, quoted anyway."""
        path = "/".join(quote(p, safe="") for p in ((tenant,) if tenant else ()) + (room,))
        return f"{self.config.base_url}/{path}"
