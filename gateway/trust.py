"""What each IdP may speak for: e-mail domains, the organisation's people, display.

One reading of the ``idps:`` settings that the Jitsi token, the audit events and the admin
tools (CLI, API, web view) share, so that what the gateway believes, shows and finds is the
same everywhere:

* **E-mail.** An IdP speaks for the e-mail domains it owns (its ``email_domains``), verified
  or not. A verified address of a domain *no* IdP owns is believed too. An address of a
  domain another IdP owns is ``foreign``; an unverified one of nobody's domain
  ``unverified``. Domains are compared lower-cased without the trailing dot of a fully
  qualified name (``example.org.`` *is* ``example.org``). A domain that is not plain ASCII
  letters, digits and hyphens, or that has a punycode (``xn--``) label, can look like another
  (example.org with a Cyrillic letter for its first a): it is believed only from the IdP that
  owns exactly that domain, and is otherwise ``lookalike``. Only ``owner`` and ``verified``
  addresses are shown to Jitsi (``email``, Gravatar) and matched by the admin tools' e-mail
  searches.
* **The organisation's people.** An IdP with ``external: true`` is outside; with ``external:
  false`` it is the organisation's own. Left unset, an IdP is the organisation's own when it
  owns an e-mail domain, or when no configured IdP owns one (a single-IdP deployment). Only
  the organisation's IdPs speak for usernames in the admin tools' searches (a username is
  only unique within its IdP) and show their people's names as asserted; any other IdP's
  names carry its label (``Alice (Partner sign-in)``), so an attacker's IdP cannot display
  "Alice Corp" as if it were a colleague.

The admin tools narrow an e-mail or username search to the IdPs that may speak for it unless
the operator names an IdP or asks for all (``all_idps``); every person row shows its IdP and
``email_trust``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from gateway.config import IdP
    from gateway.store.audit_query import AuditQuery

EmailTrust = Literal["owner", "verified", "unverified", "foreign", "lookalike", "none"]
BELIEVED: frozenset[str] = frozenset({"owner", "verified"})
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
PLAIN_DOMAIN = re.compile(rf"{LABEL}(?:\.{LABEL})+")


def email_domain(email: str | None) -> str | None:
    """The domain as it is compared: lower-cased, without a trailing dot; None without one."""
    if not email:
        return None
    _, at, domain = email.strip().rpartition("@")
    domain = domain.lower().removesuffix(".")
    return domain if at and domain else None


def plain_domain(domain: str) -> bool:
    """ASCII letters, digits and hyphens only, no punycode label: cannot mimic another."""
    return bool(PLAIN_DOMAIN.fullmatch(domain)) and not any(
        label.startswith("xn--") for label in domain.split(".")
    )


@dataclass(frozen=True)
class IdpTrust:
    owners: dict[str, frozenset[str]]  # e-mail domain -> the ids of the IdPs that own it
    organisation: frozenset[str]  # ids of the IdPs that speak for the organisation's people
    labels: dict[str, str]  # id -> display name

    @classmethod
    def of(cls, idps: Iterable[IdP]) -> IdpTrust:
        idps = tuple(idps)
        owners: dict[str, frozenset[str]] = {}
        for i in idps:  # several IdPs may own one domain (a Keycloak and a Workspace)
            for d in i.email_domains:
                key = email_domain(f"@{d}") or d
                owners[key] = owners.get(key, frozenset()) | {i.id}
        anyone_owns = bool(owners)

        def own(idp: IdP) -> bool:
            if idp.external is not None:
                return not idp.external
            return bool(idp.email_domains) or not anyone_owns

        return cls(owners, frozenset(i.id for i in idps if own(i)), {i.id: i.label for i in idps})

    # ---- e-mail ------------------------------------------------------------------------

    def email_state(self, idp: str | None, email: str | None, verified: Any) -> EmailTrust:
        """Whether the gateway believes ``idp``'s assertion of ``email`` (see the module)."""
        domain = email_domain(email)
        if domain is None:
            return "none"
        owners = self.owners.get(domain)
        if owners is not None:
            return "owner" if idp in owners else "foreign"
        if not plain_domain(domain):
            return "lookalike"
        return "verified" if verified is True else "unverified"

    def believed(self, idp: str | None, email: str | None, verified: Any) -> bool:
        return self.email_state(idp, email, verified) in BELIEVED

    def email_speakers(self, email: str) -> tuple[list[str] | None, bool]:
        """(the IdPs whose assertion of ``email`` is believed, None for any; whether the
        assertion must also be verified)."""
        domain = email_domain(email)
        if domain is None:
            return [], False
        owners = self.owners.get(domain)
        if owners is not None:
            return sorted(owners), False
        if not plain_domain(domain):
            return [], False
        return None, True

    # ---- people ------------------------------------------------------------------------

    def is_organisation(self, idp: str | None) -> bool:
        return idp in self.organisation

    def shown_name(self, idp: str, name: str) -> str:
        """The name as Jitsi shows it: the IdP's label added unless it is the organisation's
        (or not configured at all: nothing to label it with)."""
        if self.is_organisation(idp) or idp not in self.labels:
            return name
        return f"{name} ({self.labels.get(idp, idp)})"

    # ---- admin searches ------------------------------------------------------------------

    def speakers(self, *, username: bool, email: str | None) -> tuple[list[str] | None, bool]:
        """(IdPs a search by username and/or e-mail may match, None for any; verified only)."""
        idps: list[str] | None = sorted(self.organisation) if username else None
        verified = False
        if email is not None:
            by_email, verified = self.email_speakers(email)
            if by_email is not None:
                idps = by_email if idps is None else [i for i in idps if i in by_email]
        return idps, verified

    def narrow(self, q: AuditQuery) -> AuditQuery:
        """An audit query by e-mail or username, narrowed to the events of IdPs that may
        speak for it; unchanged when it names an IdP or asks for all."""
        if q.all_idps or "idp" in q.fields:
            return q
        username = "username" in q.fields
        email = q.fields["email"][0] if "email" in q.fields else None
        if not username and email is None:
            return q
        idps, verified = self.speakers(username=username, email=email)
        fields = dict(q.fields) if idps is None else {**q.fields, "idp": idps}
        return replace(q, fields=fields, verified_only=verified)

    def person_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A person row (audit ``people``, a session) with its ``email_trust`` and whether
        its IdP is one of the organisation's."""
        idp = row.get("idp")
        row["email_trust"] = self.email_state(idp, row.get("email"), row.get("email_verified"))
        row["organisation_idp"] = self.is_organisation(idp)
        return row
