"""The Jitsi token, as Prosody's token plugin checks it.

``typ`` is ``JWT``; ``alg`` is the deployment's (HS256 with ``app_secret`` or RS256 with a
private key whose ``kid`` Prosody resolves through ``asap_key_server``). ``nbf`` is set a few
seconds in the past because Prosody checks it with no leeway and clocks drift.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import get_default_algorithms

from adapters.base import Identity
from gateway.config import IdP, Jitsi
from gateway.trust import IdpTrust


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


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class CompactSigner:
    """JWS compact serialisation (RFC 7515 7.1) with the key prepared once.

    PyJWT's ``jwt.encode`` prepares the key on every call (for HMAC it sniffs the secret for
    PEM, SSH, DER and JWK shapes, a ``json.loads`` included): a tenth of a single sign-on's
    CPU. PyJWT's algorithm object still does the signing; this only joins the three parts.
    The tokens decode with ``jwt.decode`` exactly as before (tests/test_jitsi.py)."""

    def __init__(self, algorithm: str, key: Any) -> None:
        self.algorithm = algorithm
        self._alg = get_default_algorithms()[algorithm]
        self._key = self._alg.prepare_key(key)

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any]) -> str:
        header = {"alg": self.algorithm, **headers}
        segments = (
            _b64url(json.dumps(header, separators=(",", ":")).encode()),
            _b64url(json.dumps(claims, separators=(",", ":")).encode()),
        )
        signing_input = b".".join(segments)
        signature = _b64url(self._alg.sign(signing_input, self._key))
        return b".".join((signing_input, signature)).decode("ascii")


class JitsiTokens:
    """Mints room tokens. ``idps`` (the configured IdPs) decide what of an identity is shown
    to the other participants: see :meth:`shown_email`, :meth:`avatar`, :meth:`shown_name`."""

    def __init__(
        self, config: Jitsi, clock: Callable[[], float] = time.time, idps: Iterable[IdP] = ()
    ) -> None:
        self.config = config
        self.clock = clock
        self.idps = {i.id: i for i in idps}
        self.trust = IdpTrust.of(self.idps.values())
        if config.algorithm == "RS256":
            assert config.private_key_file is not None
            key: Any = load_pem_private_key(config.private_key_file.read_bytes(), None)
        else:
            assert config.app_secret is not None
            key = config.app_secret.get_secret_value()
        self._signer = CompactSigner(config.algorithm, key)

    def shown_email(self, identity: Identity) -> str | None:
        """The e-mail other participants may see (and the Gravatar is derived from): only
        one the gateway believes (``gateway/trust.py``): of a domain the IdP owns, or
        verified and of a plain-ASCII domain no IdP owns (``example.org.`` is
        ``example.org``). So an unverified address, one of another IdP's domains or a
        look-alike domain never puts a colleague's address and picture on a stranger.
        """
        email = identity.email
        return email if self.trust.believed(identity.idp, email, identity.email_verified) else None

    def shown_name(self, identity: Identity) -> str:
        """The display name; an IdP that is not the organisation's own (``external: true``,
        or unset and owning no e-mail domain while another does) adds its label, so a guest
        or an attacker's IdP cannot pass for a colleague of the same name
        (``Alice (Partner sign-in)``)."""
        return self.trust.shown_name(identity.idp, identity.name)

    def avatar(self, identity: Identity) -> str | None:
        """The IdP's ``picture`` where the IdP is allowed to set avatars (``picture_avatar``,
        https only), else the Gravatar of a shown e-mail, else ``avatar.default_url``."""
        avatar = self.config.avatar
        own = self.idps.get(identity.idp)
        picture = identity.picture
        if own is not None and own.picture_avatar and picture and picture.startswith("https://"):
            return picture
        email = self.shown_email(identity)
        if avatar.gravatar and email:
            return gravatar_url(email, avatar.default_url)
        return avatar.default_url

    def user_context(self, identity: Identity) -> dict[str, Any]:
        user = {
            "id": identity.user_id,
            "name": self.shown_name(identity),
            "email": self.shown_email(identity),
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
        token = self._signer.sign(claims, headers)
        return MintedToken(token, jti, exp, room_claim, subject)

    def room_page(self, room: str, tenant: str | None) -> str:
        """``<base>/<tenant>/<room>``; names are pre-validated, quoted anyway."""
        path = "/".join(quote(p, safe="") for p in ((tenant,) if tenant else ()) + (room,))
        return f"{self.config.base_url}/{path}"
