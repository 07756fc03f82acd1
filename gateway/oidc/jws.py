"""Compact JWS (RFC 7515 7.1), parsed once and checked strictly, as go-oidc does.

The ID token and the logout token are parsed here once; the verifier then runs its claim
checks and exactly one signature check with PyJWT's algorithm object (``verify_signature``).
PyJWT's own ``decode`` parsed the token three times per sign-in (header, claims, signature)
and checks the base64url alphabet one character at a time in Python: a quarter of a full
sign-in's Python calls. Here each segment is checked by one regular expression.

Stricter than PyJWT, never looser (tests/test_jws.py compares the two on tokens Hypothesis
mutates or builds): segments are unpadded base64url (RFC 7515 2, as go-oidc requires; PyJWT
also takes ``=`` padding), canonical (no stray bits in the last character), the header and
payload are UTF-8 JSON objects, and ``crit`` (RFC 7515 4.1.11) and ``b64: false`` (RFC 7797)
headers are refused because no extension is understood here.
"""

from __future__ import annotations

import base64
import binascii
import re
import reprlib
import warnings
from dataclasses import dataclass
from typing import Any

from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError
from jwt.warnings import InsecureKeyLengthWarning

from gateway import jsonlimits

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_ALGORITHMS = get_default_algorithms()


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80


def shown(value: Any) -> str:
    """A token's own value, as an error detail may quote it: repr, at most about 80
    characters (the logout endpoint takes tokens from anyone)."""
    return _SHORT.repr(value)


class JwsFormatError(ValueError):
    """The token is not a well-formed compact JWS; the message names the part."""


class JwsSignatureError(ValueError):
    """The signature does not verify with the key, or the key is for another algorithm."""


@dataclass(frozen=True, slots=True)
class CompactJws:
    """Made by :func:`parse` only: ``signing_input`` is the exact text the header and claims
    were decoded from, which is what :func:`verify_signature` checks."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse(token: Any) -> CompactJws:
    """Header, claims and signature of ``token``; none of it is verified yet."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise JwsFormatError("not a compact JWS")
    head, body, sig = token.split(".")
    header = _json_object(_decode(head, "header"), "header")
    claims = _json_object(_decode(body, "payload"), "payload")
    if "kid" in header and not isinstance(header["kid"], str):
        raise JwsFormatError("kid is not a string")
    if "crit" in header:
        raise JwsFormatError("unsupported critical header parameters")
    if header.get("b64", True) is not True:  # RFC 7797 unencoded payloads: not for tokens
        raise JwsFormatError("unencoded payload (b64) is not supported")
    return CompactJws(header, claims, f"{head}.{body}".encode("ascii"), _decode(sig, "signature"))


def verify_signature(jws: CompactJws, algorithm_name: str, key: Any) -> None:
    """Check the signature with ``key`` under ``algorithm_name``, which the caller has already
    matched against its allow-list and the header's ``alg``; as PyJWS.decode does."""
    if jws.header.get("alg") != algorithm_name:
        raise JwsSignatureError("the header names another algorithm")
    algorithm = _ALGORITHMS.get(algorithm_name)
    if algorithm is None:
        raise JwsSignatureError(f"algorithm {algorithm_name!r} is not supported")
    try:
        prepared = algorithm.prepare_key(key)
    except (InvalidKeyError, TypeError, ValueError):
        raise JwsSignatureError("the key cannot verify this algorithm") from None
    short = algorithm.check_key_length(prepared)
    if short:  # PyJWT's own default: warn, do not refuse
        warnings.warn(short, InsecureKeyLengthWarning, stacklevel=2)
    if not algorithm.verify(jws.signing_input, prepared, jws.signature):
        raise JwsSignatureError("signature verification failed")


def _decode(segment: str, name: str) -> bytes:
    if len(segment) % 4 == 1 or _SEGMENT.fullmatch(segment) is None:
        raise JwsFormatError(f"{name} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        raise JwsFormatError(f"{name} is not base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii"):
        raise JwsFormatError(f"{name} is not canonical base64url")
    return raw


def _json_object(raw: bytes, name: str) -> dict[str, Any]:
    try:  # UTF-8 only (RFC 8259 8.1): json.loads(bytes) would also take UTF-16/32 and a BOM
        value = jsonlimits.loads(raw.decode("utf-8"))
    except ValueError:  # also nesting past jsonlimits.MAX_DEPTH
        raise JwsFormatError(f"{name} is not JSON") from None
    if not isinstance(value, dict):
        raise JwsFormatError(f"{name} is not a JSON object")
    return value
