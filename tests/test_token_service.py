"""The token service over plain HTTP against the real OP: codes, PKCE, refresh rotation,
refusals. The browser path (Jitsi's sso.html behind nginx) is in test_sso_browser.py."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import httpx
import jwt
import pytest
import pytest_asyncio

from gateway.oidc.pkce import s256_challenge
from tests.support.gateway import APP_SECRET, JITSI_BASE, GatewayUnderTest
from tests.support.op import TestOP
from tests.support.token_service import CLIENT_ID, pkce_pair, token_service_gateway

pytestmark = pytest.mark.asyncio

SSO = f"{JITSI_BASE}/static/sso.html"
STATE = json.dumps(
    {
        "room": "Standup",
        "roomSafe": "standup",
        "tenant": None,
        "config.startWithAudioMuted": True,
        "config.subject": "Daily & weekly",
    }
)


@pytest_asyncio.fixture
async def tgw(op: TestOP, mongo_uri: str) -> AsyncIterator[GatewayUnderTest]:
    async with token_service_gateway(op, mongo_uri, SSO) as running:
        yield running


def js_encode(value: str) -> str:
    """What Jitsi's ``encodeURIComponent`` makes of the state (``{state}`` in tokenAuthUrl)."""
    return quote(value, safe="!~*'()")


def authorize_url(gw: GatewayUnderTest, challenge: str, state: str = STATE, **extra: str) -> str:
    """Jitsi's popup login (``tokenAuthInline``): ``{state}`` filled in with
    ``encodeURIComponent``, its challenge, and ``&nonce=`` appended (the popup path only)."""
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": SSO,
        "code_challenge": challenge,
        **extra,
    }
    nonce = "n" + secrets.token_hex(16)
    return f"{gw.url}/oidc/authorize?{urlencode(params)}&state={js_encode(state)}&nonce={nonce}"


async def sign_in_for_code(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient, url: str
) -> str:
    """Follow the authorize URL through the IdP; return where the gateway finally sends
    the browser (sso.html with code and state)."""
    response = await browser.get(url)
    location = response.headers["location"]
    if location.startswith(op.issuer):
        callback = await op.login_over_http(browser, location, "alice", "alice-pw")
        resume = await browser.get(callback)
        assert resume.status_code == 302, resume.text
        assert resume.headers["location"].startswith("/oidc/authorize?")
        response = await browser.get(urljoin(gw.url, resume.headers["location"]))
        location = response.headers["location"]
    assert response.status_code == 302, response.text
    return location


async def token_request(gw: GatewayUnderTest, **form: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:  # sso.html's fetch: no gateway cookies
        return await client.post(f"{gw.url}/oidc/token", data=form)


async def redeem(gw: GatewayUnderTest, code: str, verifier: str, **over: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": SSO,
        "client_id": CLIENT_ID,
        "code_verifier": verifier,
        **over,
    }
    return await token_request(gw, **form)


def code_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["code"][0]


def jitsi_claims(token: str) -> dict[str, Any]:
    """Signature and audience checked; times are the gateway's (its clock may be moved)."""
    return jwt.decode(
        token,
        APP_SECRET,
        algorithms=["HS256"],
        audience="jitsi",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )


async def events(gw: GatewayUnderTest, name: str) -> list[dict[str, Any]]:
    return [d async for d in gw.store.audit.collection.find({"event": name}, sort=[("time", 1)])]


async def full_grant(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> tuple[dict[str, Any], str]:
    verifier, challenge = pkce_pair()
    url = authorize_url(gw, challenge)
    nonce = parse_qs(urlsplit(url).query)["nonce"][0]
    location = await sign_in_for_code(gw, op, browser, url)
    response = await redeem(gw, code_of(location), verifier)
    assert response.status_code == 200, response.text
    return response.json(), nonce


async def test_code_flow_answers_what_sso_html_needs(
    tgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    verifier, challenge = pkce_pair()
    url = authorize_url(tgw, challenge)
    nonce = parse_qs(urlsplit(url).query)["nonce"][0]
    location = await sign_in_for_code(tgw, op, browser, url)
    assert location.startswith(SSO + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [STATE]  # byte for byte
    assert set(query) == {"code", "state"}
    raw_state = urlsplit(location).query.split("state=")[1]
    assert raw_state == js_encode(STATE)  # the bytes Jitsi sent: spaces as %20, not +
    assert "Daily%20%26%20weekly" in raw_state

    response = await redeem(tgw, query["code"][0], verifier)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 300
    claims = jitsi_claims(body["access_token"])
    assert claims["room"] == "standup" and claims["context"]["user"]["id"] == "testop:alice-sub"
    # The ID token: signed by the gateway (key from its JWKS), for the Jitsi client, with
    # Jitsi's nonce.
    async with httpx.AsyncClient() as client:
        discovery = (await client.get(f"{tgw.url}/oidc/.well-known/openid-configuration")).json()
        jwks = (await client.get(discovery["jwks_uri"])).json()
    assert discovery["issuer"] == f"{tgw.url}/oidc"
    assert discovery["token_endpoint"] == f"{tgw.url}/oidc/token"
    key = jwt.PyJWK(jwks["keys"][0])
    id_claims = jwt.decode(
        body["id_token"], key, algorithms=["RS256"], audience=CLIENT_ID, issuer=f"{tgw.url}/oidc"
    )
    assert id_claims["nonce"] == nonce and id_claims["sub"] == "testop:alice-sub"
    assert body["refresh_token"]
    [issued] = await events(tgw, "token_issued")
    assert issued["client_id"] == CLIENT_ID and issued["jti"] == claims["jti"]
    assert body["refresh_token"] not in str(issued) and body["access_token"] not in str(issued)


async def test_live_session_gets_a_code_without_the_idp(
    tgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    await full_grant(tgw, op, browser)
    _, challenge = pkce_pair()
    response = await browser.get(authorize_url(tgw, challenge))
    assert response.status_code == 302
    assert response.headers["location"].startswith(SSO + "?code=")


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("wrong_verifier", {"code_verifier": "x" * 64}),
        ("other_redirect_uri", {"redirect_uri": f"{JITSI_BASE}/static/other.html"}),
        ("wrong_client", {"client_id": "someone-else"}),
        ("no_verifier", {"code_verifier": ""}),
    ],
)
async def test_code_redemption_refusals(
    tgw: GatewayUnderTest,
    op: TestOP,
    browser: httpx.AsyncClient,
    case: str,
    change: dict[str, str],
) -> None:
    verifier, challenge = pkce_pair()
    location = await sign_in_for_code(tgw, op, browser, authorize_url(tgw, challenge))
    response = await redeem(tgw, code_of(location), verifier, **change)
    assert response.status_code in (400, 401), case
    assert response.headers["Cache-Control"] == "no-store"
    error = response.json()["error"]
    expected = {"wrong_client": "invalid_client", "no_verifier": "invalid_request"}
    assert error == expected.get(case, "invalid_grant")
    [refused] = await events(tgw, "token_refused")
    assert refused["outcome"] == "failure" and refused["reason"]


async def test_a_reused_code_is_refused_and_revokes_what_it_issued(
    tgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    verifier, challenge = pkce_pair()
    location = await sign_in_for_code(tgw, op, browser, authorize_url(tgw, challenge))
    first = await redeem(tgw, code_of(location), verifier)
    assert first.status_code == 200
    again = await redeem(tgw, code_of(location), verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    refresh = await token_request(
        tgw,
        grant_type="refresh_token",
        refresh_token=first.json()["refresh_token"],
        client_id=CLIENT_ID,
    )
    assert refresh.status_code == 400  # the family issued from the replayed code is gone


async def test_refresh_rotates_and_reuse_revokes_the_family(
    tgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    body, nonce = await full_grant(tgw, op, browser)
    tgw.clock.offset += 400  # the first Jitsi token has expired
    first = await token_request(
        tgw, grant_type="refresh_token", refresh_token=body["refresh_token"], client_id=CLIENT_ID
    )
    assert first.status_code == 200, first.text
    refreshed = first.json()
    assert refreshed["refresh_token"] != body["refresh_token"]
    new_claims = jitsi_claims(refreshed["access_token"])
    assert (
        new_claims["room"] == "standup"
        and new_claims["iat"] >= jitsi_claims(body["access_token"])["iat"] + 400
    )
    id_claims = jwt.decode(refreshed["id_token"], options={"verify_signature": False})
    assert id_claims["nonce"] == nonce  # OIDC Core 12.2: the original authentication's
    # The old refresh token again: theft assumed, the whole family ends.
    reused = await token_request(
        tgw, grant_type="refresh_token", refresh_token=body["refresh_token"], client_id=CLIENT_ID
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    newest = await token_request(
        tgw,
        grant_type="refresh_token",
        refresh_token=refreshed["refresh_token"],
        client_id=CLIENT_ID,
    )
    assert newest.status_code == 400
    reasons = [e["reason"] for e in await events(tgw, "token_refused")]
    assert reasons == ["refresh_token_reused", "token_grant_invalid"]
    assert len(await events(tgw, "token_refreshed")) == 1


async def test_refresh_ends_with_the_session_logout(
    tgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    body, _ = await full_grant(tgw, op, browser)
    page = await browser.get(f"{tgw.url}/oidc/logout")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    await browser.post(f"{tgw.url}/oidc/logout", data={"csrf": csrf})
    response = await token_request(
        tgw, grant_type="refresh_token", refresh_token=body["refresh_token"], client_id=CLIENT_ID
    )
    assert response.status_code == 400 and "session has ended" in response.text


async def test_state_comes_back_byte_for_byte_through_the_idp(
    tgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    """Every character encodeURIComponent leaves alone or encodes, through a sign-in at the
    IdP (the authorize request is rebuilt on the way back) and for a live session."""
    state = json.dumps(
        {"room": "Standup", "tenant": None, "config.subject": "a b+c %41 (x)*!~'é&="},
        ensure_ascii=False,
    )
    for _ in range(2):  # first through the IdP, then with the live session
        _, challenge = pkce_pair()
        location = await sign_in_for_code(tgw, op, browser, authorize_url(tgw, challenge, state))
        raw = urlsplit(location).query.split("state=")[1]
        assert raw == js_encode(state)
        assert "a%20b%2Bc%20%2541%20(x)*!~'%C3%A9%26%3D" in raw


async def test_a_dead_refresh_token_is_taken_out_of_the_state_after_a_fresh_sign_in(
    tgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    """Jitsi's refresh after the session ended: its popup carries the dead refresh token in
    the state; the person signs in again; the state comes back without it, so sso.html
    redeems the code (its refresh branch would fail and Jitsi would keep the dead token).
    The refresh token is not carried through the IdP: the flow record never holds it."""
    body, _ = await full_grant(tgw, op, browser)
    # While the session lives the refresh token stays in the state (sso.html refreshes).
    with_refresh = json.dumps({**json.loads(STATE), "refreshToken": body["refresh_token"]})
    _, challenge = pkce_pair()
    live = await sign_in_for_code(tgw, op, browser, authorize_url(tgw, challenge, with_refresh))
    assert json.loads(parse_qs(urlsplit(live).query)["state"][0]) == json.loads(with_refresh)

    page = await browser.get(f"{tgw.url}/oidc/logout")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    await browser.post(f"{tgw.url}/oidc/logout", data={"csrf": csrf})
    verifier, challenge = pkce_pair()
    url = authorize_url(tgw, challenge, with_refresh)
    to_idp = await browser.get(url)
    assert to_idp.headers["location"].startswith(op.issuer)  # a fresh sign-in
    flows = [d async for d in tgw.store.flows.collection.find({})]
    assert flows and body["refresh_token"] not in str(flows)
    location = await sign_in_for_code(tgw, op, browser, url)
    state = parse_qs(urlsplit(location).query)["state"][0]
    assert "refreshToken" not in json.loads(state)
    assert json.loads(state) == json.loads(STATE)  # everything else kept, in its order
    assert list(json.loads(state)) == list(json.loads(STATE))
    redeemed = await redeem(tgw, code_of(location), verifier)
    assert redeemed.status_code == 200, redeemed.text
    assert body["refresh_token"] not in str(await events(tgw, "code_issued"))


async def test_a_used_refresh_token_is_taken_out_for_a_live_session(
    tgw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    """The session lives but the state's refresh token was already rotated (or revoked):
    the code goes back without it, audited as refresh_token_dropped."""
    body, _ = await full_grant(tgw, op, browser)
    rotated = await token_request(
        tgw, grant_type="refresh_token", refresh_token=body["refresh_token"], client_id=CLIENT_ID
    )
    assert rotated.status_code == 200
    stale = json.dumps({**json.loads(STATE), "refreshToken": body["refresh_token"]})
    verifier, challenge = pkce_pair()
    location = await sign_in_for_code(tgw, op, browser, authorize_url(tgw, challenge, stale))
    assert json.loads(parse_qs(urlsplit(location).query)["state"][0]) == json.loads(STATE)
    redeemed = await redeem(tgw, code_of(location), verifier)
    assert redeemed.status_code == 200, redeemed.text
    issued = await events(tgw, "code_issued")
    assert [e.get("refresh_token_dropped") for e in issued] == [None, True]
    assert body["refresh_token"] not in str(issued)


async def test_refresh_ends_with_back_channel_logout(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    async with token_service_gateway(op, mongo_uri, SSO, logout_client=True) as gw:
        body, _ = await full_grant(gw, op, browser)
        ended = await gw.store.sessions.end_at_idp("testop", sid=None, sub="alice-sub")
        assert ended == 1  # what a back-channel logout token naming alice does
        response = await token_request(
            gw, grant_type="refresh_token", refresh_token=body["refresh_token"], client_id=CLIENT_ID
        )
        assert response.status_code == 400


async def test_refresh_rechecks_the_policy(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    """A room the policy refuses at refresh time: no new token, the family ends."""
    async with token_service_gateway(op, mongo_uri, SSO) as gw:
        body, _ = await full_grant(gw, op, browser)
        # The operator closes the room (a new policy, as after a reload).
        from gateway.policy import Policy, PolicySettings

        gw.gateway.token_service.policy = Policy(  # type: ignore[union-attr]
            PolicySettings.model_validate(
                {"rules": [{"name": "closed", "allow": False, "rooms": ["standup"]}]}
            )
        )
        response = await token_request(
            gw, grant_type="refresh_token", refresh_token=body["refresh_token"], client_id=CLIENT_ID
        )
        assert response.status_code == 400 and "policy refuses" in response.text
        [refused] = await events(gw, "token_refused")
        assert refused["rule"] == 'rule 1 "closed"'


@pytest.mark.parametrize(
    ("case", "params", "status"),
    [
        ("foreign_redirect_uri", {"redirect_uri": "https://evil.example/sso.html"}, 400),
        ("unknown_client", {"client_id": "nope"}, 400),
        ("plain_challenge", {"code_challenge_method": "plain"}, 400),
        ("short_challenge", {"code_challenge": "abc"}, 400),
    ],
)
async def test_authorization_refusals_end_on_a_page_not_a_redirect(
    tgw: GatewayUnderTest, browser: httpx.AsyncClient, case: str, params: dict, status: int
) -> None:
    _, challenge = pkce_pair()
    response = await browser.get(authorize_url(tgw, challenge, **params))
    assert response.status_code == status, case
    assert "location" not in response.headers
    assert "evil.example" not in response.text


async def test_a_refused_room_goes_back_to_sso_html_as_an_error(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    policy = {"rules": [{"name": "closed", "allow": False, "rooms": ["standup"]}]}
    async with token_service_gateway(op, mongo_uri, SSO, policy=policy) as gw:
        await gw.sign_in(browser, op, room="other")  # a session for another room
        _, challenge = pkce_pair()
        response = await browser.get(authorize_url(gw, challenge))
        assert response.status_code == 302
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert response.headers["location"].startswith(SSO + "?")
        assert query["error"] == ["access_denied"] and query["state"] == [STATE]
        assert "code" not in query


@pytest.mark.parametrize(
    ("case", "form", "error"),
    [
        (
            "unsupported_grant",
            {"grant_type": "password", "client_id": CLIENT_ID},
            "unsupported_grant_type",
        ),
        ("no_grant", {"client_id": CLIENT_ID}, "unsupported_grant_type"),
        (
            "unknown_code",
            {
                "grant_type": "authorization_code",
                "client_id": CLIENT_ID,
                "code": "x",
                "redirect_uri": SSO,
                "code_verifier": "v" * 43,
            },
            "invalid_grant",
        ),
        (
            "unknown_refresh",
            {"grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": "x"},
            "invalid_grant",
        ),
    ],
)
async def test_token_endpoint_errors_are_rfc6749_json(
    tgw: GatewayUnderTest, case: str, form: dict[str, str], error: str
) -> None:
    response = await token_request(tgw, **form)
    assert response.status_code == 400, case
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == error


async def test_token_endpoint_refuses_json_and_repeated_parameters(tgw: GatewayUnderTest) -> None:
    async with httpx.AsyncClient() as client:
        as_json = await client.post(f"{tgw.url}/oidc/token", json={"grant_type": "refresh_token"})
        repeated = await client.post(
            f"{tgw.url}/oidc/token",
            content="grant_type=refresh_token&refresh_token=a&refresh_token=b&client_id=jitsi-web",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    assert repeated.status_code == 400 and repeated.json()["error"] == "invalid_request"


async def test_cors_only_for_the_registered_jitsi_origin(tgw: GatewayUnderTest) -> None:
    jitsi_origin = "{0.scheme}://{0.netloc}".format(urlsplit(JITSI_BASE))
    async with httpx.AsyncClient() as client:
        ours = await client.post(
            f"{tgw.url}/oidc/token", data={"grant_type": "x"}, headers={"Origin": jitsi_origin}
        )
        theirs = await client.post(
            f"{tgw.url}/oidc/token",
            data={"grant_type": "x"},
            headers={"Origin": "https://evil.example"},
        )
        preflight = await client.options(f"{tgw.url}/oidc/token", headers={"Origin": jitsi_origin})
    assert ours.headers["Access-Control-Allow-Origin"] == jitsi_origin
    assert "Access-Control-Allow-Origin" not in theirs.headers
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "POST"


async def test_token_service_off_by_default(gw: GatewayUnderTest) -> None:
    _, challenge = pkce_pair()
    async with httpx.AsyncClient() as client:
        token = await client.post(f"{gw.url}/oidc/token", data={"grant_type": "refresh_token"})
        discovery = await client.get(f"{gw.url}/oidc/.well-known/openid-configuration")
        authorize = await client.get(authorize_url(gw, challenge))
    assert token.status_code == 404 and discovery.status_code == 404
    assert authorize.status_code == 400


async def test_pkce_helper_matches_rfc7636_appendix_b() -> None:
    """Control for the tests' PKCE helper (RFC 7636's own example)."""
    assert (
        s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


@pytest.mark.parametrize(
    ("service", "problem"),
    [
        ({"enabled": True, "signing_key_file": "/k.pem"}, "clients: list at least one client"),
        (
            {"enabled": True, "clients": [{"client_id": "j", "redirect_uri": SSO}]},
            "signing_key_file: required when enabled",
        ),
        (
            {"clients": [{"client_id": "j", "redirect_uri": SSO + "?x=1"}]},
            "must not carry a query or fragment",
        ),
        (
            {"clients": [{"client_id": "j", "redirect_uri": "javascript:alert(1)"}]},
            "must be an absolute http(s) URL",
        ),
    ],
)
async def test_token_service_settings_fail_at_start_up(
    service: dict[str, Any], problem: str
) -> None:
    from gateway.config import ConfigError, settings_from_dict

    with pytest.raises(ConfigError) as raised:
        settings_from_dict({**_minimal_settings(), "token_service": service})
    assert any("token_service" in p and problem in p for p in raised.value.problems), raised.value


async def test_an_unreadable_signing_key_stops_start_up(tmp_path: Any) -> None:
    from gateway.app import open_token_service
    from gateway.config import ConfigError

    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    settings = _settings_with_key(str(bad))
    with pytest.raises(ConfigError) as raised:
        open_token_service(settings, None, None, None, lambda: 0.0)  # type: ignore[arg-type]
    assert raised.value.problems == [
        f"token_service.signing_key_file: {bad} is not an unencrypted PEM private key"
    ]


def _minimal_settings() -> dict[str, Any]:
    return {
        "public_url": "https://meet.example.com",
        "cookies": {"secret": "s" * 40},
        "jitsi": {
            "base_url": "https://meet.example.com",
            "app_id": "app",
            "domain": "meet.example.com",
            "app_secret": "a" * 40,
        },
        "idps": [
            {
                "id": "x",
                "adapter": "generic",
                "issuer": "https://idp.example",
                "client_id": "c",
                "client_secret": "s",
            }
        ],
    }


def _settings_with_key(path: str) -> Any:
    from gateway.config import settings_from_dict

    data = _minimal_settings()
    data["token_service"] = {
        "enabled": True,
        "clients": [{"client_id": "j", "redirect_uri": SSO}],
        "signing_key_file": path,
    }
    return settings_from_dict(data)
