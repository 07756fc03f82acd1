"""Several IdPs side by side: chooser page, e-mail domain choice, pinned rooms and tenants,
and the mix-up defence (a callback answered by another IdP than the flow's)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from tests.idp_shapes import SHAPES_ACCOUNTS
from tests.support.gateway import JITSI_BASE, GatewayUnderTest, start_gateway, with_query
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def second_op() -> Iterator[TestOP]:
    with TestOP.start(SHAPES_ACCOUNTS) as op:
        yield op


@pytest.fixture(scope="module")
def third_op() -> Iterator[TestOP]:
    with TestOP.start(SHAPES_ACCOUNTS) as op:
        yield op


@pytest_asyncio.fixture
async def three(
    op: TestOP, second_op: TestOP, third_op: TestOP, mongo_uri: str
) -> AsyncIterator[GatewayUnderTest]:
    """testop (example.org), kc2 (corp.example; keycloak like partner: one adapter twice),
    partner (pinned to rooms partner-*), acme (pinned to tenant acme)."""
    more = [
        (
            second_op,
            {
                "id": "kc2",
                "adapter": "keycloak",
                "display_name": "Staff realm",
                "email_domains": ["corp.example"],
            },
        ),
        (
            third_op,
            {
                "id": "partner",
                "adapter": "keycloak",
                "display_name": "Partner realm",
                "rooms": ["partner-*"],
            },
        ),
        # The same OP a second time as another IdP entry, pinned to a tenant.
        (third_op, {"id": "acme", "display_name": "Acme", "tenants": ["acme"]}),
    ]
    idp = {"display_name": "Test OP", "email_domains": ["example.org"]}
    async with start_gateway(op, mongo_uri, idp=idp, more_idps=more) as gw:
        yield gw


def buttons(html: str) -> list[str]:
    return re.findall(r'data-idp="([^"]+)"', html)


async def test_chooser_lists_unpinned_idps(three: GatewayUnderTest) -> None:
    async with httpx.AsyncClient() as browser:
        page = await browser.get(f"{three.url}/oidc/auth", params={"room": "weekly"})
    assert page.status_code == 200
    assert buttons(page.text) == ["testop", "kc2"]
    assert "Sign in with Staff realm" in page.text
    assert '<label for="login_hint">' in page.text
    assert 'href="/oidc/auth?room=weekly&amp;idp=kc2"' in page.text


@pytest.mark.parametrize(
    ("params", "idp"),
    [
        ({"login_hint": "kay@CORP.example"}, "kc2"),
        ({"login_hint": "alice@example.org"}, "testop"),
        ({"idp": "kc2"}, "kc2"),
        ({"room": "partner-sync"}, "partner"),
        ({"tenant": "acme"}, "acme"),
    ],
    ids=["email-domain-kc2", "email-domain-testop", "idp-param", "pinned-room", "pinned-tenant"],
)
async def test_request_goes_straight_to_one_idp(
    three: GatewayUnderTest,
    op: TestOP,
    second_op: TestOP,
    third_op: TestOP,
    params: dict[str, str],
    idp: str,
) -> None:
    issuers = {
        "testop": op.issuer,
        "kc2": second_op.issuer,
        "partner": third_op.issuer,
        "acme": third_op.issuer,
    }
    async with httpx.AsyncClient() as browser:
        response = await browser.get(f"{three.url}/oidc/auth", params={"room": "weekly", **params})
    assert response.status_code == 302, response.text
    assert response.headers["location"].startswith(issuers[idp] + "/auth?")
    if "login_hint" in params:
        assert parse_qs(urlsplit(response.headers["location"]).query)["login_hint"] == [
            params["login_hint"]
        ]


@pytest.mark.parametrize(
    ("params", "sent"),
    [
        ({"room": "partner-sync", "login_hint": "alice@example.org"}, None),
        ({"room": "partner-sync", "login_hint": "Kay@corp.EXAMPLE."}, None),
        ({"room": "weekly", "idp": "kc2", "login_hint": "alice@example.org"}, None),
        ({"room": "partner-sync", "login_hint": "pat@partner.example"}, "pat@partner.example"),
        ({"room": "partner-sync", "login_hint": "pat"}, "pat"),
    ],
    ids=[
        "pinned-room-other-idps-domain",
        "pinned-room-other-idps-domain-trailing-dot",
        "chosen-idp-other-idps-domain",
        "unowned-domain-passed-on",
        "bare-username-passed-on",
    ],
)
async def test_a_login_hint_of_another_idps_domain_is_not_passed_on(
    three: GatewayUnderTest, params: dict[str, str], sent: str | None
) -> None:
    """An address of a domain another IdP owns names a person of that IdP: the IdP the room
    is pinned to (or the one chosen) must not receive it (it would learn who is coming)."""
    async with httpx.AsyncClient() as browser:
        response = await browser.get(f"{three.url}/oidc/auth", params=params)
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query.get("login_hint") == ([sent] if sent else None)


async def test_unknown_email_domain_shows_the_chooser_with_an_alert(
    three: GatewayUnderTest,
) -> None:
    async with httpx.AsyncClient() as browser:
        page = await browser.get(
            f"{three.url}/oidc/auth", params={"room": "weekly", "login_hint": "x@elsewhere.example"}
        )
    assert page.status_code == 200
    assert 'role="alert"' in page.text
    assert 'value="x@elsewhere.example"' in page.text


async def test_pinned_room_refuses_other_idps(three: GatewayUnderTest) -> None:
    async with httpx.AsyncClient() as browser:
        response = await browser.get(
            f"{three.url}/oidc/auth", params={"room": "partner-sync", "idp": "testop"}
        )
        assert response.status_code == 400
        response = await browser.get(
            f"{three.url}/oidc/auth", params={"room": "weekly", "idp": "partner"}
        )
        assert response.status_code == 400
    failures = [e async for e in three.store.audit.collection.find({"outcome": "failure"})]
    assert [e["reason"] for e in failures] == ["idp_unknown", "idp_unknown"]


async def test_session_from_one_idp_does_not_open_a_room_pinned_to_another(
    three: GatewayUnderTest, op: TestOP
) -> None:
    async with httpx.AsyncClient(follow_redirects=False) as browser:
        done = await three.sign_in(browser, op, room="weekly", idp="testop")
        assert done.headers["location"].startswith(f"{JITSI_BASE}/weekly?jwt=")
        # Single sign-on still works for unpinned rooms...
        again = await browser.get(f"{three.url}/oidc/auth", params={"room": "other"})
        assert again.headers["location"].startswith(f"{JITSI_BASE}/other?jwt=")
        # ...but a room pinned to the partner IdP needs a sign-in there.
        pinned = await browser.get(f"{three.url}/oidc/tokenize", params={"room": "partner-x"})
        assert pinned.headers["location"] == "/oidc/auth?room=partner-x"
        auth = await browser.get(f"{three.url}/oidc/auth", params={"room": "partner-x"})
        assert auth.status_code == 302
        assert not auth.headers["location"].startswith(JITSI_BASE)  # no token: the partner IdP


@pytest.mark.parametrize(
    ("path", "iss", "reason"),
    [
        ("kc2", "other", "issuer_mismatch"),
        ("kc2", "absent", "issuer_mismatch"),
        ("testop", "other", "issuer_mismatch"),
        ("testop", "absent", "issuer_mismatch"),
        ("testop", "flow", "code_exchange_failed"),
    ],
    ids=[
        "at-other-idps-callback",
        "at-other-idps-callback-no-iss",
        "iss-of-other-idp",
        "iss-removed",
        "iss-forged-to-flow-idp",
    ],
)
async def test_mix_up_callback_from_another_idp_is_refused(
    three: GatewayUnderTest, op: TestOP, second_op: TestOP, path: str, iss: str, reason: str
) -> None:
    async with httpx.AsyncClient(follow_redirects=False) as browser:
        # The victim starts a flow with testop...
        start = await browser.get(f"{three.url}/oidc/auth", params={"room": "r", "idp": "testop"})
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        # ...and the attacker's code comes from kc2 (another IdP), pasted under that state.
        other = await three.start_and_login(
            browser, second_op, room="r", username="kc", password="kc-pw", idp="kc2"
        )
        assert other.startswith(f"{three.url}/oidc/redirect/kc2?")
        iss_value = {"other": second_op.issuer, "absent": None, "flow": op.issuer}[iss]
        forged = with_query(other, state=state, iss=iss_value)
        forged = forged.replace("/oidc/redirect/kc2?", f"/oidc/redirect/{path}?")
        response = await browser.get(forged)
    assert response.status_code in (400, 502)
    failures = [e async for e in three.store.audit.collection.find({"outcome": "failure"})]
    assert failures[-1]["reason"] == reason
    assert failures[-1]["idp"] == "testop"
    assert await three.store.sessions.collection.count_documents({}) == 0
