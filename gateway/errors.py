"""Domain errors. Code below the web layer raises these; only handlers map them to HTTP.

``reason`` is the machine-readable code written to the audit log (a fixed list, see
``REASONS``); ``detail`` is for operators (logs, audit) and never contains a token, code or
secret. What a person sees is chosen by the web layer from ``reason`` alone.
"""

from __future__ import annotations

from typing import Any

REASONS = {
    "bad_request": "a parameter was missing, too long or malformed",
    "idp_unknown": "the requested IdP is not configured",
    "idp_error": "the IdP answered the authorization request with an error",
    "idp_unreachable": "the IdP's metadata or keys could not be fetched",
    "state_invalid": "the callback's state is unknown",
    "state_expired": "the sign-in took longer than the flow lifetime",
    "state_reused": "the callback's state was already used",
    "state_browser_mismatch": "the callback came from another browser than the one that started",
    "issuer_mismatch": "the RFC 9207 iss parameter names another issuer",
    "code_exchange_failed": "the token endpoint refused the code or failed",
    "id_token_invalid": "the ID token failed a check (detail names the check)",
    "nonce_mismatch": "the ID token's nonce does not match the flow",
    "userinfo_failed": "the userinfo endpoint failed or returned another subject",
    "claims_invalid": "the adapter could not build an identity from the claims",
    "policy_denied": "the policy refused this person or room",
    "store_unavailable": "MongoDB could not be reached",
    "admin_unauthorized": "an admin API request without a valid admin bearer token",
    "cross_site_request": (
        "a logout or admin sign-in POST from another site (Origin / Sec-Fetch-Site)"
    ),
    "csrf_token_invalid": "a logout or admin sign-in POST without its form token",
    "logout_token_invalid": "a back-channel logout token failed a check (detail names it)",
    "token_request_invalid": "a token-service request was malformed or named a wrong client",
    "token_grant_invalid": "a token-service code or refresh token was unknown, used or expired",
    "refresh_token_reused": "a used refresh token came again: its whole family was revoked",
}


class GatewayError(Exception):
    """A refused or failed step of the flow."""

    def __init__(self, reason: str, detail: str = "", **audit: Any) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail or REASONS[reason]
        #: extra audit fields (e.g. the policy rule that decided)
        self.audit = audit
