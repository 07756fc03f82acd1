"""Random values and digests used across layers (flows, sessions, audit hashes).

Kept apart from ``oidc/pkce.py`` so the store does not import the OIDC package for a hash.
"""

from __future__ import annotations

import hashlib
import secrets


def random_token(nbytes: int = 32) -> str:
    """An unguessable URL-safe value (state, nonce, session id, verifier)."""
    return secrets.token_urlsafe(nbytes)


def sha256_hex(value: str) -> str:
    """How ids that must not be readable from the database are stored (sessions, flows)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
