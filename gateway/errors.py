"""Domain errors and the one table that says what each reason means.

Code below the web layer raises :class:`GatewayError` with a ``reason`` from :data:`REASONS`;
``detail`` is for operators (logs, audit) and never contains a token, code or secret. The
table gives each reason its meaning (docs, ``audit reasons``), its HTTP status, what a person
is shown (title and text, from the reason alone) and the outcome of its audit event. The web
layer turns a reason into a page or a JSON error from this table and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Reason:
    meaning: str  # for operators: docs and the audit CLI
    status: int
    title: str  # what a person is shown
    text: str
    outcome: Literal["failure", "info"] = "failure"


_START_AGAIN = "Please start again from the room link."
_NOT_VERIFIED = ("Sign-in could not be verified", "The identity could not be verified.")
_NOT_CONFIRMED = ("Request not confirmed", "Please use the button or form on this site.")

REASONS: dict[str, Reason] = {
    "bad_request": Reason(
        "a parameter was missing, too long or malformed",
        400,
        "That link is not valid",
        "The address is missing something or malformed.",
    ),
    "idp_unknown": Reason(
        "the requested IdP is not configured",
        400,
        "Unknown sign-in provider",
        "The sign-in provider in the link is unknown.",
    ),
    "idp_error": Reason(
        "the IdP answered the authorization request with an error",
        401,
        "Sign-in was not completed",
        "The identity provider did not sign you in.",
    ),
    "idp_unreachable": Reason(
        "the IdP's metadata or keys could not be fetched",
        502,
        "Sign-in is unavailable",
        "The identity provider cannot be reached.",
    ),
    "par_failed": Reason(
        "the IdP refused or failed the pushed authorization request (RFC 9126)",
        502,
        "Sign-in is unavailable",
        "The identity provider did not accept the sign-in request.",
    ),
    "idp_revoked": Reason(
        "revalidation: the IdP refused the refresh (invalid_grant: account disabled, "
        "session or grant revoked); the session ended",
        401,
        "Please sign in again",
        "Your sign-in is no longer valid at the identity provider.",
        "info",
    ),
    "idp_revalidation_unavailable": Reason(
        "revalidation: the IdP could not be asked (revalidate_outage decides; detail says "
        "whether access was kept)",
        502,
        "Sign-in is unavailable",
        "The identity provider cannot be reached.",
        "info",
    ),
    "session_max_age": Reason(
        "no refresh token from the IdP and the session reached max_session_age_seconds",
        401,
        "Please sign in again",
        "Your sign-in has to be renewed at the identity provider.",
        "info",
    ),
    "frontchannel_logout_invalid": Reason(
        "a front-channel logout request without the IdP's iss or a sid",
        400,
        "Logout request rejected",
        "The logout request is malformed.",
    ),
    "state_invalid": Reason(
        "the callback's state is unknown", 400, "This sign-in link has expired", _START_AGAIN
    ),
    "state_expired": Reason(
        "the sign-in took longer than the flow lifetime",
        400,
        "This sign-in took too long",
        _START_AGAIN,
    ),
    "state_reused": Reason(
        "the callback's state was already used",
        400,
        "This sign-in was already used",
        _START_AGAIN,
    ),
    "state_browser_mismatch": Reason(
        "the callback came from another browser than the one that started",
        400,
        "Sign-in started in another browser",
        "Please open the room link in this browser and sign in again.",
    ),
    "issuer_mismatch": Reason(
        "the RFC 9207 iss parameter names another issuer",
        400,
        "Sign-in could not be verified",
        "The answer came from the wrong place.",
    ),
    "code_exchange_failed": Reason(
        "the token endpoint refused the code or failed",
        502,
        "Sign-in could not be completed",
        "The identity provider failed.",
    ),
    "id_token_invalid": Reason(
        "the ID token failed a check (detail names the check)", 401, *_NOT_VERIFIED
    ),
    "nonce_mismatch": Reason("the ID token's nonce does not match the flow", 401, *_NOT_VERIFIED),
    "userinfo_failed": Reason(
        "the userinfo endpoint failed or returned another subject",
        502,
        "Sign-in could not be completed",
        "Your profile could not be read.",
    ),
    "claims_invalid": Reason(
        "the adapter could not build an identity from the claims",
        403,
        "Your account cannot be used here",
        "Your profile is missing details.",
    ),
    "policy_denied": Reason(
        "the policy refused this person or room",
        403,
        "Access refused",
        "Your account may not join this meeting.",
    ),
    "store_unavailable": Reason(
        "MongoDB could not be reached",
        503,
        "Sign-in is unavailable",
        "Please try again in a moment.",
    ),
    "query_timeout": Reason(
        "an admin audit query ran past its budget (admin.query_timeout_seconds); MongoDB is up",
        503,
        "The query took too long",
        "Narrow the filters (a shorter time range, one person) and try again.",
    ),
    "admin_unauthorized": Reason(
        "an admin API request without a valid admin bearer token",
        401,
        "Not authorised",
        "A valid admin token is required.",
    ),
    "admin_rate_limited": Reason(
        "too many wrong admin tokens from this address (admin.max_failures)",
        429,
        "Too many attempts",
        "Too many wrong tokens were tried from your address. Please wait and try again.",
    ),
    "cross_site_request": Reason(
        "a logout or admin sign-in from another site (Origin / Sec-Fetch-Site)",
        403,
        *_NOT_CONFIRMED,
    ),
    "csrf_token_invalid": Reason(
        "a logout or admin sign-in POST without its form token", 403, *_NOT_CONFIRMED
    ),
    "logout_token_invalid": Reason(
        "a back-channel logout token failed a check (detail names it)",
        400,
        "Logout token rejected",
        "The logout token failed a check.",
    ),
    "token_request_invalid": Reason(
        "a token-service request was malformed or named a wrong client",
        400,
        "That link is not valid",
        "The sign-in request is malformed.",
    ),
    "token_grant_invalid": Reason(
        "a token-service code or refresh token was unknown, used or expired",
        400,
        "Sign-in has expired",
        "Please start again from the meeting.",
    ),
    "refresh_token_reused": Reason(
        "a used refresh token came again: its whole family was revoked",
        400,
        "Sign-in has expired",
        "Please start again from the meeting.",
    ),
}


class GatewayError(Exception):
    """A refused or failed step of the flow."""

    def __init__(self, reason: str, detail: str = "", **audit: Any) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail or REASONS[reason].meaning
        #: extra audit fields (e.g. the policy rule that decided)
        self.audit = audit

    @property
    def info(self) -> Reason:
        return REASONS[self.reason]
