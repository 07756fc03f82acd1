"""Helpers for the token-service tests: the gateway's signing key, a gateway with the
service on, and a Jitsi client's PKCE pair."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.oidc.pkce import s256_challenge
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP

CLIENT_ID = "jitsi-web"


def signing_key_file(directory: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = directory / "token-service.pem"
    path.write_bytes(pem)
    return str(path)


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge) as Jitsi's getTokenAuthUrl makes them (64 chars)."""
    verifier = secrets.token_urlsafe(48)[:64]
    return verifier, s256_challenge(verifier)


@asynccontextmanager
async def token_service_gateway(
    op: TestOP, mongo_uri: str, sso_url: str, **overrides: Any
) -> AsyncIterator[GatewayUnderTest]:
    with tempfile.TemporaryDirectory(prefix="jog-ts-") as directory:
        service = {
            "enabled": True,
            "clients": [{"client_id": CLIENT_ID, "redirect_uri": sso_url}],
            "signing_key_file": signing_key_file(Path(directory)),
            **overrides.pop("token_service", {}),
        }
        async with start_gateway(op, mongo_uri, token_service=service, **overrides) as gw:
            yield gw
