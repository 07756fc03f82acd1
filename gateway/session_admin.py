"""Session administration: find a person's live sessions and end them.

Used by ``/admin/sessions`` and ``jitsi-oidc-gateway sessions``. A person is named by IdP and
subject (the stable key), by username or by e-mail (case-insensitive); ``idp`` may narrow a
username or e-mail to one IdP. Sessions are shown by their ``session`` reference: the same
32-hex prefix of the session id's SHA-256 that audit events carry as ``session_hash``, so an
operator can go from an audit event to the session and back; the session id itself is never
shown (it is only in the browser's cookie). Ending a session deletes it: the next room
request finds no session and goes back to the IdP. Each ended session is audited as
``admin_session_ended`` with the person, the admin (token name or ``cli:<user>``) and how.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.store import Store
from gateway.trust import IdpTrust

SELECTOR_PARAMS = ("idp", "subject", "username", "email")
SESSION_REF = re.compile(r"[0-9a-f]{32}")
MAX_VALUE = 512


class SelectorError(ValueError):
    """A bad selector; ``parameter`` names the offending input."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True)
class Selector:
    idp: str | None = None
    subject: str | None = None
    username: str | None = None
    email: str | None = None
    session: str | None = None
    all_idps: bool = False  # username/e-mail: every IdP's sessions, not only those that may speak

    @classmethod
    def parse(cls, values: Mapping[str, str | None]) -> Selector:
        """Exactly one way to name the person: idp+subject, username or email; ``all_idps``
        (true/false) widens a username or e-mail to every IdP (see :meth:`query`)."""
        clean: dict[str, str] = {}
        for name in (*SELECTOR_PARAMS, "session"):
            value = values.get(name)
            if value is None:
                continue
            value = value.strip()
            if not value or len(value) > MAX_VALUE:
                raise SelectorError(name, f"must be 1 to {MAX_VALUE} characters")
            clean[name] = value
        named = [n for n in ("subject", "username", "email") if n in clean]
        if len(named) != 1:
            raise SelectorError(
                "subject" if not named else named[1],
                "name the person by exactly one of: idp and subject, username, email",
            )
        if "subject" in clean and "idp" not in clean:
            raise SelectorError("idp", "required with subject (subjects are unique per IdP)")
        every = values.get("all_idps")
        if every not in (None, "", "false", "0", "no", "true", "1", "yes"):
            raise SelectorError("all_idps", "must be true or false")
        session = clean.get("session")
        if session is not None and not SESSION_REF.fullmatch(session):
            raise SelectorError("session", "must be a session reference (32 hex characters)")
        return cls(
            clean.get("idp"),
            clean.get("subject"),
            clean.get("username"),
            clean["email"].lower() if "email" in clean else None,
            session,
            every in ("true", "1", "yes"),
        )

    def query(self, trust: IdpTrust | None = None) -> dict[str, Any]:
        """The sessions' filter. A username or e-mail without ``idp`` matches only the
        sessions of IdPs that may speak for it (``trust``: the organisation's IdPs for a
        username, the domain's owner or verified addresses of nobody's domain for an
        e-mail) unless ``all_idps``: another IdP asserting Alice's username or address is
        not Alice, and ``end`` must not end its sessions."""
        query: dict[str, Any] = {}
        if self.idp:
            query["identity.idp"] = self.idp
        elif trust is not None and not self.all_idps and (self.username or self.email):
            idps, verified = trust.speakers(username=bool(self.username), email=self.email)
            if idps is not None:
                query["identity.idp"] = {"$in": idps}
            if verified:
                query["identity.email_verified"] = True
        if self.subject:
            query["identity.subject"] = self.subject
        if self.username:
            query["identity.username"] = self.username
        if self.email:
            query["email_key"] = self.email
        return query

    def describe(self) -> dict[str, str]:
        """The selector as given, for audit events and answers."""
        names = (*SELECTOR_PARAMS, "session")
        given = {n: v for n in names if (v := getattr(self, n)) is not None}
        return given | ({"all_idps": "true"} if self.all_idps else {})


def summary(doc: Mapping[str, Any], trust: IdpTrust | None = None) -> dict[str, Any]:
    """What an operator sees of a session: who, through which IdP, since and until when,
    and (with ``trust``) whether the gateway believes the e-mail (``email_trust``)."""
    identity = doc.get("identity", {})
    row = {
        "session": doc["_id"][:32],
        "idp": identity.get("idp"),
        "subject": identity.get("subject"),
        "username": identity.get("username"),
        "name": identity.get("name"),
        "email": identity.get("email"),
        "email_verified": identity.get("email_verified"),
        "created_at": _iso(doc.get("created_at")),
        "expires_at": _iso(doc.get("expires_at")),
    }
    return trust.person_row(row) if trust is not None else row


def trust_of(store: Store) -> IdpTrust | None:
    """The settings' trust the gateway or the CLI handed the store (None: not known)."""
    return store.trust if isinstance(store.trust, IdpTrust) else None


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else None


async def live_sessions(store: Store, selector: Selector, now: datetime) -> list[dict[str, Any]]:
    docs = await store.sessions.find_live(selector.query(trust_of(store)), now)
    if selector.session:
        docs = [d for d in docs if d["_id"].startswith(selector.session)]
    return docs


async def end_sessions(
    store: Store,
    selector: Selector,
    now: datetime,
    *,
    admin: str,
    via: str,
    client_ip: str | None = None,
    request_id: str | None = None,
) -> list[dict[str, Any]]:
    """End the matching live sessions; audit each one ended. Returns their summaries."""
    ended = []
    for doc in await live_sessions(store, selector, now):
        if await store.sessions.delete_hashed([doc["_id"]]) != 1:
            continue  # ended meanwhile (logout, expiry): nothing to audit here
        identity = doc.get("identity", {})
        await store.audit.write(
            {
                "time": now,
                "event": "admin_session_ended",
                "outcome": "success",
                "idp": identity.get("idp"),
                "issuer": identity.get("issuer"),
                "subject": identity.get("subject"),
                "username": identity.get("username"),
                "email": identity.get("email"),
                "email_verified": identity.get("email_verified"),
                "groups": identity.get("groups"),
                "email_trust": summary(doc, trust_of(store)).get("email_trust"),
                "session_hash": doc["_id"][:32],
                "admin": admin,
                "via": via,
                "selector": selector.describe(),
                "client_ip": client_ip,
                "request_id": request_id,
            }
        )
        ended.append(summary(doc, trust_of(store)))
    return ended
