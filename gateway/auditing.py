"""Audit events as the flow writes them: one document shape for every step.

A :class:`Caller` is the browser's side of one request as far as the flow needs it (who, from
where, which session and flow cookies it brought) and collects the cookie changes the flow
decides, which the web layer then applies. The :class:`Auditor` turns an event plus a caller
into the stored document (identity fields, session and flow hashes, client address) and hands
it to the audit store and to the observers (metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.base import Identity
from gateway.hashing import sha256_hex
from gateway.store.audit import AuditLog
from gateway.store.identity_doc import storable
from gateway.trust import IdpTrust


@dataclass
class Caller:
    client_ip: str | None
    user_agent: str
    request_id: str
    session_id: str | None  # from the signed session cookie
    flow_binding: str | None  # from the signed flow cookie (or a new one, see below)
    cross_site: bool = False  # Fetch Metadata says a link on another site led here
    # Cookie changes decided by the flow; the web layer applies them to the response.
    new_session: tuple[str, int] | None = None  # (session id, max age)
    session_ended: bool = False
    new_flow: tuple[str, int] | None = None  # (browser binding, max age)

    def start_session(self, session_id: str, max_age: int) -> None:
        self.new_session = (session_id, max_age)
        self.session_id = session_id

    def end_session(self) -> None:
        self.session_ended = True

    def bind_flow(self, binding: str, max_age: int) -> None:
        self.new_flow = (binding, max_age)
        self.flow_binding = binding


class Auditor:
    def __init__(
        self,
        log: AuditLog,
        now: Callable[[], datetime],
        observers: list[Callable[[Mapping[str, Any]], None]] | None = None,
        trust: IdpTrust | None = None,
    ) -> None:
        self.log = log
        self.now = now
        self.observers = observers if observers is not None else []
        self.trust = trust  # records whether the gateway believed each e-mail

    async def __call__(self, caller: Caller, event: str, outcome: str, **fields: Any) -> None:
        """Write one event and wait until it is stored (or spooled). ``fields``: see
        :meth:`document`."""
        doc = self.document(caller, event, outcome, **fields)
        await self.log.write(doc)
        for observe in self.observers:
            observe(doc)

    def defer(self, caller: Caller, event: str, outcome: str, **fields: Any) -> None:
        """Queue one event that the same step's next awaited event is stored with (one
        insert for both: ``login_succeeded`` and the ``token_minted`` that follows it)."""
        doc = self.document(caller, event, outcome, **fields)
        self.log.enqueue(doc)
        for observe in self.observers:
            observe(doc)

    def document(
        self,
        caller: Caller,
        event: str,
        outcome: str,
        *,
        identity: Identity | None = None,
        idp: str | None = None,
        session_id: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The stored event: the caller's address and request, the identity's fields, the
        session and flow hashes, then ``fields`` (None values left out)."""
        doc: dict[str, Any] = {
            "time": self.now(),
            "event": event,
            "outcome": outcome,
            "idp": identity.idp if identity else idp,
            "client_ip": caller.client_ip,
            "user_agent": caller.user_agent[:512],
            "request_id": caller.request_id,
        }
        if identity is not None:
            doc |= {
                "issuer": identity.issuer,
                "subject": identity.subject,
                "username": identity.username,
                "email": identity.email,
                "email_verified": identity.email_verified,  # as the IdP asserted it
                "groups": list(identity.groups),
                "name": identity.name,  # the display name Jitsi shows
            }
            if self.trust is not None:  # what the gateway believed of it (trust.py)
                doc["email_trust"] = self.trust.email_state(
                    identity.idp, identity.email, identity.email_verified
                )
                # the name as Jitsi shows it: an outside IdP's with its label
                doc["name"] = self.trust.shown_name(identity.idp, identity.name)
            if identity.extra:  # the adapter's allow-listed claims (extra_claims)
                doc["extra"] = storable(identity.extra)
        sid = session_id or caller.session_id
        if sid:
            doc["session_hash"] = sha256_hex(sid)[:32]
        # The browser's flow cookie links failures before the ID token (state_reused,
        # state_browser_mismatch, a bad room) to the sign-in that later names the person.
        if caller.flow_binding:
            doc["flow_hash"] = sha256_hex("flow:" + caller.flow_binding)[:32]
        doc |= {k: v for k, v in fields.items() if v is not None}
        return doc
