"""Settings of the token service (``token_service:`` in settings.yaml)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenClient(_Strict):
    """One Jitsi deployment's sign-in page: ``config.sso.clientId`` and its ``sso.html``."""

    client_id: str
    redirect_uri: str = Field(description="Jitsi's static/sso.html URL, matched exactly")

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        if not CLIENT_ID.fullmatch(v):
            raise ValueError("use 1-128 letters, digits and . _ ~ -")
        return v

    @field_validator("redirect_uri")
    @classmethod
    def _redirect_uri(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL (Jitsi's static/sso.html)")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment (sso.html sends none)")
        return v

    @property
    def origin(self) -> str:
        parts = urlsplit(self.redirect_uri)
        return f"{parts.scheme}://{parts.netloc}".lower()


class TokenServiceSettings(_Strict):
    """Off by default. ``signing_key_file``: an RSA private key (PEM) for the ID tokens the
    gateway signs; its public half is published at ``/oidc/jwks``."""

    enabled: bool = False
    clients: tuple[TokenClient, ...] = ()
    signing_key_file: str | None = None
    key_id: str = Field("gateway-token-service-1", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    code_lifetime_seconds: int = Field(60, ge=10, le=600)
    id_token_lifetime_seconds: int = Field(300, ge=60, le=3600)
    refresh_token_lifetime_seconds: int = Field(
        8 * 3600, ge=300, le=30 * 86400, description="a family's maximum; never past the session"
    )

    @model_validator(mode="after")
    def _complete(self) -> TokenServiceSettings:
        if self.enabled and not self.clients:
            raise ValueError("clients: list at least one client when enabled")
        if self.enabled and not self.signing_key_file:
            raise ValueError("signing_key_file: required when enabled (an RSA key, PEM)")
        ids = [c.client_id for c in self.clients]
        if len(ids) != len(set(ids)):
            raise ValueError("clients: client_id used twice")
        return self

    def client(self, client_id: str | None) -> TokenClient | None:
        if client_id is None:
            return self.clients[0] if len(self.clients) == 1 else None
        return next((c for c in self.clients if c.client_id == client_id), None)
