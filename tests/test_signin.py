"""The sign-in service without HTTP: its steps called directly with a stand-in relying party
(a unit test of ``gateway.signin``; the end-to-end tests drive the same steps through the
real OP, nginx and Chromium)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio

from gateway.auditing import Caller
from gateway.errors import GatewayError
from gateway.oidc.client import TokenSet
from gateway.signin import ChooseIdP, GoTo, LiveSession, Refusal, RoomRequest, RoomToken
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio


class StandInRP:
    """Answers like a relying party whose IdP signs everyone in as ``sub``."""

    def __init__(self, real: Any, sub: str = "alice-sub", fail: str | None = None) -> None:
        self.config = real.config
        self.redirect_uri = real.redirect_uri
        self.sub = sub
        self.fail = fail
        self.calls: list[str] = []

    async def authorization_url(self, *, state: str, nonce: str, **_: Any) -> str:
        self.calls.append("authorize")
        self.state, self.nonce = state, nonce
        return f"https://idp.invalid/auth?state={state}"

    async def check_response_issuer(self, iss: str | None) -> None:
        self.calls.append("iss")
        if iss == "https://evil.invalid":
            raise GatewayError("issuer_mismatch", "stand-in: iss names another issuer")

    async def redeem(self, code: str, *, code_verifier: str, nonce: str, iss: Any) -> TokenSet:
        self.calls.append("redeem")
        if self.fail:
            raise GatewayError(self.fail, "stand-in")
        claims = {
            "iss": self.config.issuer,
            "sub": self.sub,
            "nonce": nonce,
            "preferred_username": "alice",
            "email": "alice@example.com",
            "email_verified": True,
            "name": "Alice",
            "sid": "idp-session-1",
        }
        return TokenSet("header.payload.sig", "access", claims)


def caller(**kw: Any) -> Caller:
    fields: dict[str, Any] = {"session_id": None, "flow_binding": None} | kw
    return Caller(client_ip="192.0.2.1", user_agent="unit", request_id="r1", **fields)


@pytest_asyncio.fixture
async def gw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    async with start_gateway(op, mongo_uri) as gw:
        (idp,) = gw.gateway.idps.values()
        gw.gateway.idps[idp.id] = dataclasses.replace(idp, rp=StandInRP(idp.rp))
        yield gw


async def events(gw: GatewayUnderTest) -> list[dict[str, Any]]:
    await gw.store.audit.flush()
    return await gw.store.audit.collection.find({}, sort=[("time", 1), ("_id", 1)]).to_list(100)


async def test_start_finish_and_room_token_without_http(gw: GatewayUnderTest) -> None:
    signin = gw.gateway.signin
    (idp,) = gw.gateway.idps.values()
    browser = caller()
    step = await signin.start(browser, RoomRequest("standup"), idp_id=None, login_hint=None)
    assert isinstance(step, GoTo) and step.url.startswith("https://idp.invalid/auth")
    assert browser.new_flow is not None  # the flow cookie the web layer must set
    state = parse_qs(urlsplit(step.url).query)["state"][0]

    back = caller(flow_binding=browser.flow_binding)
    done = await signin.finish(back, idp.id, state=state, iss=None, error=None, code="c")
    assert isinstance(done, RoomToken) and "/standup?jwt=" in done.url  # minted at once
    assert back.new_session is not None
    session_id = back.new_session[0]
    assert idp.rp.calls == ["authorize", "iss", "redeem"]

    # the verified sub travels with the identity into the session (back-channel logout)
    stored = await gw.store.sessions.collection.find_one({})
    assert stored["idp_sub"] == "alice-sub" and stored["idp_sid"] == "idp-session-1"

    signed_in = caller(session_id=session_id)
    token = await signin.room(signed_in, RoomRequest("standup"))
    assert isinstance(token, RoomToken) and "/standup?jwt=" in token.url
    again = await signin.start(signed_in, RoomRequest("other"), idp_id=None, login_hint=None)
    assert isinstance(again, LiveSession) and again.identity.username == "alice"

    names = [e["event"] for e in await events(gw)]
    assert names == ["flow_started", "login_succeeded", "token_minted", "token_minted"]


async def test_a_state_is_single_use_and_refusals_are_audited(gw: GatewayUnderTest) -> None:
    signin = gw.gateway.signin
    (idp,) = gw.gateway.idps.values()
    browser = caller()
    step = await signin.start(browser, RoomRequest("r"), idp_id=None, login_hint=None)
    assert isinstance(step, GoTo)
    state = parse_qs(urlsplit(step.url).query)["state"][0]
    back = caller(flow_binding=browser.flow_binding)
    await signin.finish(back, idp.id, state=state, iss=None, error=None, code="c")
    with pytest.raises(Refusal) as refused:
        await signin.finish(back, idp.id, state=state, iss=None, error=None, code="c")
    assert refused.value.error.reason == "state_reused"
    assert refused.value.error.info.status == 400
    # another browser (no flow cookie) with a fresh state: refused before any code exchange
    step = await signin.start(caller(), RoomRequest("r"), idp_id=None, login_hint=None)
    assert isinstance(step, GoTo)
    state = parse_qs(urlsplit(step.url).query)["state"][0]
    calls = len(idp.rp.calls)
    with pytest.raises(Refusal) as refused:
        await signin.finish(caller(), idp.id, state=state, iss=None, error=None, code="c")
    assert refused.value.error.reason == "state_browser_mismatch"
    assert len(idp.rp.calls) == calls  # the relying party was not asked
    failures = [e for e in await events(gw) if e["outcome"] == "failure"]
    assert [(e["event"], e["reason"], e["idp"]) for e in failures] == [
        ("login_failed", "state_reused", idp.id),
        ("login_failed", "state_browser_mismatch", idp.id),
    ]


async def test_an_unknown_idp_and_a_foreign_iss_are_refused(gw: GatewayUnderTest) -> None:
    signin = gw.gateway.signin
    (idp,) = gw.gateway.idps.values()
    with pytest.raises(Refusal) as refused:
        await signin.start(caller(), RoomRequest("r"), idp_id="nope", login_hint=None)
    assert refused.value.error.reason == "idp_unknown" and refused.value.room == "r"
    browser = caller()
    step = await signin.start(browser, RoomRequest("r"), idp_id=None, login_hint=None)
    assert isinstance(step, GoTo)
    state = parse_qs(urlsplit(step.url).query)["state"][0]
    with pytest.raises(Refusal) as refused:
        await signin.finish(
            caller(flow_binding=browser.flow_binding),
            idp.id,
            state=state,
            iss="https://evil.invalid",
            error=None,
            code="c",
        )
    assert refused.value.error.reason == "issuer_mismatch"
    assert "redeem" not in idp.rp.calls
    docs = await events(gw)
    assert docs[0]["requested_idp"] == "nope" and docs[0].get("idp") is None


async def test_several_idps_offer_a_choice(op: TestOP, mongo_uri: str) -> None:
    async with start_gateway(op, mongo_uri, more_idps=[(op, {"id": "other"})]) as gw:
        step = await gw.gateway.signin.start(
            caller(), RoomRequest("r"), idp_id=None, login_hint=None
        )
        assert isinstance(step, ChooseIdP) and len(step.eligible) == 2 and not step.confirm
        step = await gw.gateway.signin.start(
            caller(cross_site=True), RoomRequest("r"), idp_id="other", login_hint=None
        )
        assert isinstance(step, ChooseIdP) and step.confirm
