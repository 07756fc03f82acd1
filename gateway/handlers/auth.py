"""``GET /oidc/auth``: the entry point nginx sends token-less room requests to."""

from __future__ import annotations

from adapters.base import Identity
from gateway.errors import GatewayError
from gateway.handlers.base import GatewayHandler
from gateway.idps import ConfiguredIdP
from gateway.jitsi_state import MAX_STATE, parse_state
from gateway.signin import ChooseIdP, GoTo, LiveSession, RoomRequest


class AuthHandler(GatewayHandler):
    """Room request in, IdP sign-in (or a live session) out. Subclasses (the token
    service's ``/oidc/authorize``) change what a live session leads to and where the
    callback continues; the IdP choice and the flow are the same."""

    entry_path = "/oidc/auth"

    def parse_request(self) -> RoomRequest:
        raw_state = self.param("state", MAX_STATE)
        if raw_state is not None:  # Jitsi's login button: tokenAuthUrl with {state}
            state = parse_state(raw_state, self.param("room", 256))
            return RoomRequest(state.room, state.tenant, state)
        return RoomRequest(*self.room_and_tenant())

    async def with_session(self, identity: Identity, request: RoomRequest) -> None:
        """A live session of an eligible IdP: single sign-on, the room token at once."""
        self.to_room(await self.gateway.signin.enter(self.caller(), identity, request))

    def entry_link(self, request: RoomRequest, **kw: str) -> str:
        """This entry point again with more parameters (the chooser's links)."""
        return request.link(self.entry_path, **kw)

    def hidden_fields(self, request: RoomRequest) -> list[tuple[str, str]]:
        """What the chooser's e-mail form sends back to this entry point."""
        fields = [("room", request.room)] + ([("tenant", request.tenant)] if request.tenant else [])
        if request.state is not None:
            fields.append(("state", request.state.compact()))
        return fields

    def return_to(self) -> str | None:
        """Where the callback continues after sign-in (None: the room, minted at once)."""
        return None

    async def get(self) -> None:
        request: RoomRequest | None = None
        idp_id: str | None = None
        try:
            idp_id = self.param("idp", 64)
            request = self.parse_request()
            login_hint = self.param("login_hint", 254)
        except GatewayError as exc:
            named = idp_id if idp_id in self.gateway.idps else None
            raise await self.gateway.signin.refused(
                self.caller(),
                exc,
                idp=named,
                requested_idp=idp_id if idp_id and named is None else None,
                room=request.room if request else None,
                tenant=request.tenant if request else None,
            ) from None
        step = await self.gateway.signin.start(
            self.caller(), request, idp_id=idp_id, login_hint=login_hint, return_to=self.return_to()
        )
        if isinstance(step, LiveSession):
            await self.with_session(step.identity, request)
        elif isinstance(step, ChooseIdP):
            self.render_chooser(request, step, login_hint)
        else:
            assert isinstance(step, GoTo)
            self.redirect(step.url)

    def render_chooser(self, request: RoomRequest, step: ChooseIdP, login_hint: str | None) -> None:
        eligible: list[ConfiguredIdP] = step.eligible
        choices = [
            (idp.id, idp.config.label, self.entry_link(request, idp=idp.id)) for idp in eligible
        ]
        self.render(
            "chooser.html",
            room=request.room,
            tenant=request.tenant,
            choices=choices,
            login_hint=login_hint or "",
            show_email=any(i.config.email_domains for i in eligible),
            entry_path=self.entry_path,
            hidden=self.hidden_fields(request),
            unknown_domain=bool(login_hint) and not step.confirm,
            confirm=step.confirm,
        )
