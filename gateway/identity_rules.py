"""The gateway's own rules for every adapter's Identity, and what a refusal may record.

Adapters are third-party code: the stable key ``(idp, issuer, subject)`` and the verified
flag are checked here after ``identity()`` and enrichment, whatever the adapter did
(``adapters.base.identity_problems``, the list the conformance kit reports too). A refusal
before an Identity exists still records who the ID token named, so an operator finds it by
subject or e-mail; only values that pass the same rules are recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import Identity, identity_problems, subject_problem
from gateway.errors import GatewayError

#: RFC 5321's longest path; longer "e-mail" claims are not recorded on a refusal.
MAX_EMAIL_LENGTH = 320


def enforce(identity: Any, idp_id: str, claims: Mapping[str, Any]) -> Identity:
    """The adapter's Identity when it keeps the contract and names the verified token's
    issuer; else ``claims_invalid`` naming every broken rule (never a token)."""
    problems = identity_problems(identity, idp_id)
    if not problems and identity.issuer != claims.get("iss"):
        problems.append(f"issuer {identity.issuer!r} is not the ID token's iss")
    if problems:
        raise GatewayError(
            "claims_invalid",
            f"{idp_id}: identity_invalid: {'; '.join(problems)}"[:1000],
            **claimed(claims),
        )
    assert isinstance(identity, Identity)
    return identity


def claimed(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Audit fields for a refusal from the validated ID token: issuer, ``sub`` and the
    e-mail as the token gave them (the e-mail's verified flag only when it is ``true``),
    each left out unless it passes the identity rules."""
    fields: dict[str, Any] = {}
    iss, sub, email = claims.get("iss"), claims.get("sub"), claims.get("email")
    if isinstance(iss, str) and subject_problem(sub) is None:
        fields |= {"issuer": iss, "subject": sub}
    if isinstance(email, str) and "@" in email and subject_problem(email[:255]) is None:
        if len(email) <= MAX_EMAIL_LENGTH:
            fields["email"] = email.strip()
            fields["email_verified"] = claims.get("email_verified") is True
    return fields
