"""``/admin/sessions``: a person's live sessions (GET) and ending them (DELETE).

Same bearer tokens, JSON errors and ``admin_query`` audit event as ``/admin/audit``; each
session ended is audited as ``admin_session_ended`` naming the admin token's name. See
:mod:`gateway.session_admin` for the selectors.
"""

from __future__ import annotations

from gateway import session_admin as sa
from gateway.handlers.admin import AdminHandler
from gateway.store import audit_query as aq


class SessionsHandler(AdminHandler):
    async def delete(self) -> None:
        await self.get()  # authentication, limits and error answers are shared

    async def answer(self, params: dict[str, str | None]) -> None:
        unknown = sorted(set(params) - {*sa.SELECTOR_PARAMS, "session", "all_idps"})
        if unknown:
            raise aq.FilterError(unknown[0], "unknown parameter")
        try:
            selector = sa.Selector.parse(params)
        except sa.SelectorError as exc:
            raise aq.FilterError(exc.parameter, exc.message) from None
        store, now = self.gateway.store, self.gateway.now()
        if self.request.method == "DELETE":
            assert self.admin is not None
            ended = await sa.end_sessions(
                store,
                selector,
                now,
                admin=self.admin,
                via="api",
                client_ip=self.client_ip(),
                request_id=self.request_id,
            )
            await self.audit_admin("success", query=self.safe_query(), count=len(ended))
            self.send_json(200, {"ended": ended, "count": len(ended)})
            return
        if selector.session:
            raise aq.FilterError("session", "only for DELETE")
        docs = await sa.live_sessions(store, selector, now)
        await self.audit_admin("success", query=self.safe_query(), count=len(docs))
        rows = [sa.summary(d, sa.trust_of(store)) for d in docs]
        self.send_json(200, {"sessions": rows, "count": len(docs)})
