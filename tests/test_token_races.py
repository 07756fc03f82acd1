"""Races on the token service, over real HTTP against the real gateway and store: many
rounds of concurrent requests (asyncio.gather), and in every round the invariants hold: a
code redeems at most once, and no refresh token of a revoked family stays usable, whatever
refresh was in flight when the family was revoked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from gateway.hashing import sha256_hex
from tests.support.gateway import GatewayUnderTest
from tests.support.op import TestOP
from tests.support.token_service import CLIENT_ID, pkce_pair, token_service_gateway
from tests.test_token_service import SSO, authorize_url, code_of, full_grant

pytestmark = pytest.mark.asyncio

ROUNDS = 15


@pytest_asyncio.fixture
async def tgw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    async with token_service_gateway(op, mongo_uri, SSO) as running:
        yield running


async def fresh_code(gw: GatewayUnderTest, browser: httpx.AsyncClient) -> tuple[str, str]:
    """(code, verifier) from the browser's live session (no IdP round trip)."""
    verifier, challenge = pkce_pair()
    response = await browser.get(authorize_url(gw, challenge))
    assert response.status_code == 302, response.text
    return code_of(response.headers["location"]), verifier


async def live_tokens(gw: GatewayUnderTest, family: str) -> int:
    """Refresh tokens of the family that the store would still accept."""
    return await gw.store.grants.refresh.count_documents(
        {"family": family, "used_at": None, "revoked": {"$ne": True}}
    )


async def family_of(gw: GatewayUnderTest, refresh_token: str) -> str:
    record = await gw.store.grants.refresh.find_one({"_id": sha256_hex(refresh_token)})
    assert record is not None
    return record["family"]


async def test_races_never_leave_a_live_token(
    tgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    await full_grant(tgw, op, browser)  # a live session in the browser
    failures: list[str] = []
    async with httpx.AsyncClient(timeout=30.0) as client:

        async def post(**form: str) -> httpx.Response:
            return await client.post(f"{tgw.url}/oidc/token", data=form)

        async def redeem(code: str, verifier: str) -> httpx.Response:
            return await post(
                grant_type="authorization_code",
                code=code,
                redirect_uri=SSO,
                client_id=CLIENT_ID,
                code_verifier=verifier,
            )

        async def refresh(token: str) -> httpx.Response:
            return await post(grant_type="refresh_token", refresh_token=token, client_id=CLIENT_ID)

        async def thief(token: str, stop: asyncio.Event) -> str:
            """Refreshes back to back until refused; returns the last token it got."""
            while not stop.is_set():
                answer = await refresh(token)
                if answer.status_code != 200:
                    break
                token = answer.json()["refresh_token"]
            return token

        for round_no in range(ROUNDS):
            # 1. A code redeemed twice at once: at most one answer, and nothing left live.
            code, verifier = await fresh_code(tgw, browser)
            answers = await asyncio.gather(redeem(code, verifier), redeem(code, verifier))
            ok = [a for a in answers if a.status_code == 200]
            if len(ok) > 1:
                failures.append(f"round {round_no}: a code redeemed twice")
            for a in ok:
                if await live_tokens(tgw, await family_of(tgw, a.json()["refresh_token"])):
                    failures.append(f"round {round_no}: double redemption left a live token")

            # 2. Two refreshes of one token at once: the family ends with no live token.
            code, verifier = await fresh_code(tgw, browser)
            first = await redeem(code, verifier)
            assert first.status_code == 200, first.text
            stolen = first.json()["refresh_token"]
            family = await family_of(tgw, stolen)
            await asyncio.gather(refresh(stolen), refresh(stolen))
            if await live_tokens(tgw, family):
                failures.append(f"round {round_no}: concurrent refresh left a live token")

            # 3. A thief refreshing back to back while the victim presents the stolen
            # token again: once the victim hears "revoked", the thief is cut off too.
            code, verifier = await fresh_code(tgw, browser)
            first = await redeem(code, verifier)
            stolen = first.json()["refresh_token"]
            family = await family_of(tgw, stolen)
            stop = asyncio.Event()
            thief_task = asyncio.ensure_future(thief(stolen, stop))
            await asyncio.sleep(0.01 * (round_no % 4))
            victim = await refresh(stolen)
            stop.set()
            last = await thief_task
            if victim.status_code == 200:
                continue  # the victim was first: the thief's own reuse revoked the family
            again = await refresh(last)
            if again.status_code == 200:
                failures.append(f"round {round_no}: the thief kept refreshing after revocation")
            if await live_tokens(tgw, family):
                failures.append(f"round {round_no}: theft left a live token")
    assert failures == []
