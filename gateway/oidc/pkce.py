"""PKCE (RFC 7636): the S256 challenge of a code verifier."""

from __future__ import annotations

import base64
import hashlib


def s256_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
