"""Client authentication at an IdP's token endpoint.

``client_secret_basic`` / ``client_secret_post`` send the shared secret; ``private_key_jwt``
(RFC 7523 2.2, OpenID Connect Core 9) sends a short-lived assertion signed with the
gateway's own key instead, so no secret is shared with the IdP: the IdP knows only the
public key (registered by hand, or fetched from the gateway's ``/.well-known/jwks.json``).

The assertion: header ``alg`` (from the key type), ``kid`` (configured, else the key's RFC
7638 thumbprint), ``x5t`` / ``x5t#S256`` when a certificate is configured (Entra ID asks for
them); claims ``iss`` = ``sub`` = client id, ``aud`` = the token endpoint or the issuer as
the IdP requires, a random single-use ``jti``, ``iat``, ``nbf`` and an ``exp`` a minute away.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

if TYPE_CHECKING:
    from gateway.config import IdP

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class KeyFileError(ValueError):
    """The key or certificate file cannot be used (the message says why)."""


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 2.3.1: form-urlencode id and secret, then base64 ``id:secret``."""
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """A private key loaded from a PEM file, with its public JWK and signing algorithm."""

    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    algorithm: str
    kid: str
    public_jwk: dict[str, Any]
    x5t: str | None = None
    x5t_s256: str | None = None

    @classmethod
    def load(
        cls,
        key_file: Path,
        *,
        key_id: str | None = None,
        algorithm: str | None = None,
        certificate_file: Path | None = None,
    ) -> SigningKey:
        try:
            pem = key_file.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read {key_file}: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(
                f"{key_file} is not an unencrypted PEM private key ({exc})"
            ) from None
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 2048:
                raise KeyFileError(f"{key_file}: RSA key of {key.key_size} bits; use 2048+")
            alg = algorithm or "RS256"
            if alg not in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
                raise KeyFileError(f"algorithm {alg} does not fit an RSA key")
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            members = {k: jwk[k] for k in ("e", "kty", "n")}
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            natural = _EC_ALGORITHMS.get(key.curve.name)
            if natural is None:
                raise KeyFileError(f"{key_file}: unsupported curve {key.curve.name}")
            alg = algorithm or natural
            if alg != natural:
                raise KeyFileError(f"algorithm {alg} does not fit a {key.curve.name} key")
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
        else:
            raise KeyFileError(f"{key_file}: only RSA and EC keys are supported")
        thumbprint = _b64(
            hashlib.sha256(
                json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
            ).digest()
        )
        kid = key_id or thumbprint
        x5t = x5t_s256 = None
        if certificate_file is not None:
            x5t, x5t_s256 = _certificate_thumbprints(certificate_file, key)
        public = {**members, "kid": kid, "use": "sig", "alg": alg}
        return cls(key, alg, kid, public, x5t, x5t_s256)

    def assertion(
        self, client_id: str, audience: str, lifetime: int, now: float | None = None
    ) -> str:
        """A fresh client assertion (new ``jti`` every call)."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": secrets.token_urlsafe(24),
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
        }
        headers: dict[str, Any] = {"kid": self.kid, "typ": "JWT"}
        if self.x5t:
            headers["x5t"] = self.x5t
            headers["x5t#S256"] = self.x5t_s256
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)


def _certificate_thumbprints(path: Path, key: Any) -> tuple[str, str]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM certificate ({exc})") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise KeyFileError(f"{path}: the certificate is not for this private key")
    der = cert.public_bytes(serialization.Encoding.DER)
    # x5t is SHA-1 by definition (RFC 7515 4.1.7): a certificate name, not a security check.
    sha1 = hashlib.sha1(der, usedforsecurity=False).digest()
    return _b64(sha1), _b64(hashlib.sha256(der).digest())


def load_key(config: IdP) -> SigningKey | None:
    """The IdP's assertion key, or None for the client-secret methods."""
    ca = config.client_assertion
    if config.token_endpoint_auth_method != "private_key_jwt" or ca is None:
        return None
    return SigningKey.load(
        ca.key_file,
        key_id=ca.key_id,
        algorithm=ca.algorithm,
        certificate_file=ca.certificate_file,
    )


class ClientAuthenticator:
    """Adds the configured client authentication to a token request."""

    def __init__(self, config: IdP, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.key = load_key(config)
        self._clock = clock

    def apply(
        self, form: dict[str, str], headers: dict[str, str], *, token_endpoint: str, issuer: str
    ) -> None:
        cfg = self.config
        method = cfg.token_endpoint_auth_method
        if method == "private_key_jwt":
            assert self.key is not None and cfg.client_assertion is not None
            ca = cfg.client_assertion
            audience = token_endpoint if ca.audience == "token_endpoint" else issuer
            form["client_id"] = cfg.client_id
            form["client_assertion_type"] = ASSERTION_TYPE
            form["client_assertion"] = self.key.assertion(
                cfg.client_id, audience, ca.lifetime_seconds, self._clock()
            )
            return
        assert cfg.client_secret is not None
        secret = cfg.client_secret.get_secret_value()
        if method == "client_secret_basic":
            headers["Authorization"] = basic_auth(cfg.client_id, secret)
        else:
            form["client_id"] = cfg.client_id
            form["client_secret"] = secret


def public_jwks(keys: list[SigningKey]) -> dict[str, Any]:
    """The gateway's public JWKS (each kid once) for IdPs that fetch client keys by URL."""
    seen: dict[str, dict[str, Any]] = {}
    for key in keys:
        seen.setdefault(key.kid, key.public_jwk)
    return {"keys": list(seen.values())}
