"""Provider metadata from the discovery document (OpenID Connect Discovery 1.0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.http import HttpClient, UpstreamError


class MetadataError(Exception):
    """The discovery document is unusable; the message names the field."""


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    iss_parameter_supported: bool = False
    par_endpoint: str | None = None  # RFC 9126 pushed_authorization_request_endpoint
    par_required: bool = False  # require_pushed_authorization_requests

    @classmethod
    def from_document(cls, doc: Any, expected_issuer: str) -> ProviderMetadata:
        if not isinstance(doc, dict):
            raise MetadataError("discovery document is not a JSON object")
        if doc.get("issuer") != expected_issuer:
            raise MetadataError(
                f"discovery issuer {doc.get('issuer')!r} is not the configured {expected_issuer!r}"
            )
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(key), str) or not doc[key].startswith(("https:", "http:")):
                raise MetadataError(f"discovery document lacks a usable {key}")
        return cls(
            issuer=doc["issuer"],
            authorization_endpoint=doc["authorization_endpoint"],
            token_endpoint=doc["token_endpoint"],
            jwks_uri=doc["jwks_uri"],
            userinfo_endpoint=_optional(doc, "userinfo_endpoint"),
            end_session_endpoint=_optional(doc, "end_session_endpoint"),
            iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported")
            is True,
            par_endpoint=_optional(doc, "pushed_authorization_request_endpoint"),
            par_required=doc.get("require_pushed_authorization_requests") is True,
        )


def _optional(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) and value else None


async def fetch_metadata(
    http: HttpClient, issuer: str, discovery_url: str | None, timeout: float
) -> ProviderMetadata:
    url = discovery_url or issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        doc = await http.get_json(url, timeout=timeout)
    except UpstreamError as exc:
        raise MetadataError(str(exc)) from None
    return ProviderMetadata.from_document(doc, issuer)
