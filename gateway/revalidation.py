"""Access follows the IdP: a session asks its IdP again, with the refresh token, once its
``revalidate_seconds`` have passed.

Revalidation happens on the person's path (a room request, the token service's authorize or
refresh), never in the background, and only when due: the session read that every room
request makes anyway carries ``revalidate_at``, so a request with nothing due costs no extra
round trip. When due, one caller of all processes takes the revalidation (a conditional
update) and makes one refresh-token call to the IdP; others go on with the session meanwhile.

- The IdP refuses (``invalid_grant``: account disabled, session or grant revoked): the
  session and its token-service refresh tokens end, audited; the person goes to the IdP.
- The IdP cannot be asked: ``revalidate_outage: allow`` keeps access for at most
  ``revalidate_outage_grace_seconds`` after the first failure (asking again every minute),
  ``refuse`` ends the session at once; audited either way.
- The IdP gave no refresh token: the session ends ``max_session_age_seconds`` after sign-in
  and the person goes back to the IdP (where a live IdP session signs them in at once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from gateway.auditing import Auditor, Caller
from gateway.config import IdP
from gateway.hashing import sha256_hex
from gateway.idps import ConfiguredIdP
from gateway.oidc.client import RefreshRefused, RefreshUnavailable
from gateway.sealing import Sealer
from gateway.store import Store
from gateway.store.sessions import SessionRecord

log = logging.getLogger(__name__)

RETRY_SECONDS = 60  # during an outage that is allowed: how often the IdP is asked again


def first_revalidation(config: IdP, now: datetime, has_refresh_token: bool) -> datetime | None:
    """When a new session first asks its IdP (None: revalidation off): after the interval
    with a refresh token, at the maximum session age without one."""
    if config.revalidate_seconds == 0:
        return None
    wait = config.revalidate_seconds if has_refresh_token else config.max_session_age_seconds
    return now + timedelta(seconds=wait)


class Revalidator:
    def __init__(
        self,
        idps: Mapping[str, ConfiguredIdP],
        store: Store,
        sealer: Sealer,
        audit: Auditor,
        now: Callable[[], datetime],
    ) -> None:
        self.idps = idps
        self.store = store
        self.sealer = sealer
        self.audit = audit
        self.now = now

    @staticmethod
    def due(record: SessionRecord, now: datetime) -> bool:
        return record.revalidate_at is not None and record.revalidate_at <= now

    async def still_valid(self, caller: Caller, record: SessionRecord) -> bool:
        """False when the session has just been ended (audited, cookie marked to clear)."""
        now = self.now()
        if not self.due(record, now):
            return True
        idp = self.idps.get(record.identity.idp)
        if idp is None or idp.config.revalidate_seconds == 0:
            return True  # revalidation switched off since sign-in
        cfg = idp.config
        sessions = self.store.sessions
        if record.idp_refresh is None:
            await self._end(caller, record, "session_max_age", f"{cfg.id}: no refresh token")
            return False
        lease = now + timedelta(seconds=2 * cfg.http_timeout_seconds + 5)
        if not await sessions.claim_revalidation(record, lease):
            return True  # another request is asking the IdP right now
        token = self.sealer.open(record.idp_refresh, record.key)
        if token is None:  # the key changed since sign-in: ask the person to sign in again
            detail = f"{cfg.id}: stored refresh token does not open (session.refresh_token_key?)"
            await self._end(caller, record, "session_max_age", detail)
            return False
        try:
            answer = await idp.rp.refresh(token, record.idp_sub or record.identity.subject)
        except RefreshRefused as exc:
            await self._end(caller, record, "idp_revoked", str(exc))
            return False
        except RefreshUnavailable as exc:
            return await self._outage(caller, record, cfg, now, str(exc))
        sealed = (
            self.sealer.seal(answer.refresh_token, record.key) if answer.refresh_token else None
        )
        await sessions.revalidated(
            record.key,
            next_at=now + timedelta(seconds=cfg.revalidate_seconds),
            idp_refresh=sealed,
            id_token=answer.id_token,
        )
        await self.audit(
            caller,
            "session_revalidated",
            "success",
            identity=record.identity,
            session_hash=record.key[:32],
            refresh_rotated=sealed is not None,
        )
        return True

    async def _outage(
        self, caller: Caller, record: SessionRecord, cfg: IdP, now: datetime, detail: str
    ) -> bool:
        since = record.outage_since or now
        until = since + timedelta(seconds=cfg.revalidate_outage_grace_seconds)
        if cfg.revalidate_outage == "refuse" or now >= until:
            rule = "refuse" if cfg.revalidate_outage == "refuse" else "grace over"
            await self._end(
                caller, record, "idp_revalidation_unavailable", f"{detail}; access ended ({rule})"
            )
            return False
        retry = min(RETRY_SECONDS, cfg.revalidate_seconds)
        await self.store.sessions.revalidated(
            record.key, next_at=now + timedelta(seconds=retry), outage_since=since
        )
        await self.audit(
            caller,
            "session_revalidation_failed",
            "info",
            identity=record.identity,
            session_hash=record.key[:32],
            reason="idp_revalidation_unavailable",
            detail=f"{detail}; access kept (revalidate_outage allow)",
            access_kept=True,
            kept_until=until,
        )
        return True

    async def _end(self, caller: Caller, record: SessionRecord, reason: str, detail: str) -> None:
        """The session and its token-service refresh tokens end; audited with the reason."""
        log.info("session of %s ended at revalidation: %s", record.identity.user_id, reason)
        await self.store.sessions.delete_key(record.key)
        revoked = await self.store.grants.revoke_session(record.key)
        if caller.session_id and sha256_hex(caller.session_id) == record.key:
            caller.end_session()
        await self.audit(
            caller,
            "session_revalidation_failed",
            "info",
            identity=record.identity,
            session_hash=record.key[:32],
            reason=reason,
            detail=detail,
            access_kept=False,
            refresh_tokens_revoked=revoked,
        )
