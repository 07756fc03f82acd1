"""The IdPs' refresh tokens at rest: AES-256-GCM, bound to their session.

A refresh token lets whoever holds it ask the IdP for new tokens, so the sessions collection
never holds one in clear text: a database dump or backup is not a key to anyone's account.
The key comes from the settings (``session.refresh_token_key``, else derived from
``cookies.secret`` with HKDF under its own label); the session's stored key (the SHA-256 of
its id) is the associated data, so a sealed token copied into another session does not open.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config import Settings

VERSION = b"\x01"
NONCE_BYTES = 12


def sealing_key(settings: Settings) -> bytes:
    """32 bytes from ``session.refresh_token_key`` (SHA-256 of it), or HKDF of the cookie
    secret with a label of its own (so the two uses never share a key)."""
    configured = settings.session.refresh_token_key
    if configured is not None:
        return hashlib.sha256(configured.get_secret_value().encode()).digest()
    secret = settings.cookies.secret.get_secret_value().encode()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"jog refresh-token key v1")
    return hkdf.derive(secret)


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, token: str, session_hash: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, token.encode(), session_hash.encode())

    def open(self, blob: bytes, session_hash: str) -> str | None:
        """The token, or None when the blob is not ours (another key, session or tampering)."""
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != VERSION:
            return None
        nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, session_hash.encode()).decode()
        except (InvalidTag, UnicodeDecodeError):
            return None
