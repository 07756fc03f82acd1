"""The gateway's own signing key for the ID tokens it issues, and its public JWKS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey


class SigningKey:
    def __init__(self, key: RSAPrivateKey, key_id: str) -> None:
        self.key = key
        self.key_id = key_id
        public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.jwks: dict[str, Any] = {
            "keys": [{**public, "kid": key_id, "use": "sig", "alg": "RS256"}]
        }

    @classmethod
    def load(cls, path: str, key_id: str) -> SigningKey:
        """Raises ValueError with a short reason (the caller names the settings key)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ValueError(f"{path} is not an unencrypted PEM private key") from None
        if not isinstance(key, RSAPrivateKey) or key.key_size < 2048:
            raise ValueError(f"{path} must hold an RSA key of 2048 bits or more")
        return cls(key, key_id)

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.key_id})
