"""The whole sign-in flow over plain HTTP against the real test OP and MongoDB-wire server."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from tornado.web import create_signed_value, decode_signed_value

from gateway.hashing import sha256_hex
from tests.conftest import ID_TOKEN_TTL
from tests.support.gateway import (
    APP_SECRET,
    JITSI_BASE,
    GatewayUnderTest,
    start_gateway,
    token_from,
    with_query,
)
from tests.support.jitsi_web import jitsi_token
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio


def decode_jitsi(token: str) -> dict:
    return jwt.decode(token, APP_SECRET, algorithms=["HS256"], audience="jitsi")


async def audit_events(gw: GatewayUnderTest) -> list[dict]:
    return [d async for d in gw.store.audit.collection.find({}, sort=[("time", 1)])]


async def test_happy_path_token_meets_jitsi_contract(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    response = await gw.sign_in(browser, op, room="StandUp")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{JITSI_BASE}/StandUp?jwt=")
    token = token_from(location)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    claims = decode_jitsi(token)
    assert claims["iss"] == "test_app"
    assert claims["aud"] == "jitsi"
    assert claims["sub"] == "meet.test"
    assert claims["room"] == "standup"
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == claims["iat"] - 10
    assert isinstance(claims["jti"], str) and len(claims["jti"]) == 32
    email_hash = hashlib.sha256(b"alice@example.org").hexdigest()
    assert claims["context"] == {
        "user": {
            "id": "testop:alice-sub",
            "name": "Alice Example",
            "email": "Alice@Example.org",
            "avatar": f"https://www.gravatar.com/avatar/{email_hash}",
        }
    }
    events = [(e["event"], e["outcome"]) for e in await audit_events(gw)]
    assert events == [
        ("flow_started", "success"),
        ("login_succeeded", "success"),
        ("token_minted", "success"),
    ]


async def test_tenant_room_and_single_sign_on_into_second_room(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    first = await gw.sign_in(browser, op, room="alpha", tenant="Acme")
    assert first.headers["location"].startswith(f"{JITSI_BASE}/Acme/alpha?jwt=")
    assert decode_jitsi(token_from(first.headers["location"]))["sub"] == "acme"
    # A second room: the live session gets its token at once (one hop, no IdP round trip).
    response = await browser.get(f"{gw.url}/oidc/auth", params={"room": "beta"})
    assert response.status_code == 302
    assert response.headers["location"].startswith(f"{JITSI_BASE}/beta?jwt=")
    claims = decode_jitsi(token_from(response.headers["location"]))
    assert claims["room"] == "beta" and claims["sub"] == "meet.test"
    events = [e["event"] for e in await audit_events(gw)]
    assert events.count("flow_started") == 1
    assert events.count("token_minted") == 2


async def test_planted_session_cookie_is_never_adopted(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    """Session fixation: a validly signed cookie planted before login is replaced."""
    name = gw.settings.cookies.session_name
    secret = gw.settings.cookies.secret.get_secret_value()
    planted = "attacker-chosen-session-id"
    browser.cookies.set(name, create_signed_value(secret, name, planted).decode(), "127.0.0.1")
    await gw.sign_in(browser, op)
    value = decode_signed_value(secret, name, browser.cookies.get(name).strip('"'))
    assert value is not None and value.decode() != planted
    ids = [d["_id"] async for d in gw.store.sessions.collection.find({})]
    assert ids == [sha256_hex(value.decode())]


async def test_a_new_login_ends_the_previous_session(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    first = await gw.start_and_login(browser, op, room="one")
    second = await gw.start_and_login(browser, op, room="two")  # both flows open
    assert (await browser.get(first)).status_code == 302
    name = gw.settings.cookies.session_name
    secret = gw.settings.cookies.secret.get_secret_value()
    old = decode_signed_value(secret, name, browser.cookies.get(name).strip('"')).decode()
    assert (await browser.get(second)).status_code == 302
    new = decode_signed_value(secret, name, browser.cookies.get(name).strip('"')).decode()
    assert new != old
    ids = [d["_id"] async for d in gw.store.sessions.collection.find({})]
    assert ids == [sha256_hex(new)]


async def test_cookies_are_secure_by_default(op: TestOP, mongo_uri: str) -> None:
    async with start_gateway(op, mongo_uri, cookies={"secure": True}) as gw:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{gw.url}/oidc/auth", params={"room": "r"})
        header = response.headers["set-cookie"]
        assert header.startswith(gw.settings.cookies.flow_name + "=")
        assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header


async def test_client_secret_post_and_odd_secret_basic(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    async with start_gateway(op, mongo_uri, auth_method="client_secret_post") as gw:
        response = await gw.sign_in(browser, op, room="post")
        assert response.headers["location"].startswith(f"{JITSI_BASE}/post?jwt=")
    browser.cookies.clear()
    async with start_gateway(op, mongo_uri, client_secret="p@ss:w/rd+%~ x") as gw:
        response = await gw.sign_in(browser, op, room="basic")
        assert response.headers["location"].startswith(f"{JITSI_BASE}/basic?jwt=")


async def test_tokenize_without_session_starts_the_flow(
    gw: GatewayUnderTest, browser: httpx.AsyncClient
) -> None:
    response = await browser.get(f"{gw.url}/oidc/tokenize", params={"room": "r1", "tenant": "t"})
    assert response.status_code == 302
    assert response.headers["location"] == "/oidc/auth?room=r1&tenant=t"


# ---- refusals ------------------------------------------------------------------------------


async def assert_refused(gw: GatewayUnderTest, response: httpx.Response, status: int, reason: str):
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    assert "<h1>" in response.text
    failures = [e for e in await audit_events(gw) if e["outcome"] == "failure"]
    assert failures, "no failure event audited"
    assert failures[-1]["reason"] == reason
    return failures[-1]


async def test_reused_state_is_refused_before_the_code_is_redeemed(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op)
    assert (await browser.get(callback)).status_code == 302
    response = await browser.get(callback)
    await assert_refused(gw, response, 400, "state_reused")


async def test_state_from_another_browser_is_refused(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op)
    async with httpx.AsyncClient(follow_redirects=False) as attacker:
        response = await attacker.get(callback)
        await assert_refused(gw, response, 400, "state_browser_mismatch")
    # The victim's own flow is untouched by the foreign attempt.
    assert (await browser.get(callback)).status_code == 302


async def test_unknown_and_missing_state(gw: GatewayUnderTest, browser: httpx.AsyncClient) -> None:
    response = await browser.get(
        f"{gw.url}/oidc/redirect/testop", params={"state": "nope", "code": "x"}
    )
    await assert_refused(gw, response, 400, "state_invalid")
    response = await browser.get(f"{gw.url}/oidc/redirect/testop", params={"code": "x"})
    await assert_refused(gw, response, 400, "state_invalid")


async def test_expired_flow_is_refused(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op)
    gw.clock.offset = gw.settings.session.flow_lifetime_seconds + 1
    await assert_refused(gw, await browser.get(callback), 400, "state_expired")


async def test_wrong_nonce_is_refused(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op)
    await gw.store.flows.collection.update_many({}, {"$set": {"nonce": "another-nonce"}})
    await assert_refused(gw, await browser.get(callback), 401, "nonce_mismatch")


@pytest.mark.parametrize(
    ("mode", "reason", "check"),
    [
        ("signature", "id_token_invalid", "signature"),
        ("payload", "id_token_invalid", "signature"),
        ("alg_none", "id_token_invalid", "alg"),
        ("drop", "code_exchange_failed", None),
    ],
    ids=["tampered-signature", "tampered-payload", "alg-none", "no-id-token"],
)
async def test_tampered_id_token_is_refused(
    gw: GatewayUnderTest,
    op: TestOP,
    browser: httpx.AsyncClient,
    mode: str,
    reason: str,
    check: str | None,
) -> None:
    callback = await gw.start_and_login(browser, op)
    await op.tamper_next_id_token(mode)
    event = await assert_refused(gw, await browser.get(callback), 401 if check else 502, reason)
    if check:
        assert f": {check}:" in event["detail"]
    assert browser.cookies.get(gw.settings.cookies.session_name) is None


async def test_expired_id_token_is_refused(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op)
    leeway = gw.settings.idps[0].clock_leeway_seconds
    gw.clock.offset = ID_TOKEN_TTL + leeway + 5  # still inside the flow's lifetime
    assert gw.clock.offset < gw.settings.session.flow_lifetime_seconds
    event = await assert_refused(gw, await browser.get(callback), 401, "id_token_invalid")
    assert ": exp:" in event["detail"]


async def test_unknown_kid_refetches_keys_after_rotation(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    async with start_gateway(op, mongo_uri, idp={"jwks_min_refresh_seconds": 0}) as gw:
        rp = gw.gateway.idps["testop"].rp
        assert rp.jwks is not None and rp.jwks.loaded
        fetches = rp.jwks.fetch_count
        new_kid = await op.rotate_keys()
        callback = await gw.start_and_login(browser, op)
        response = await browser.get(callback)
        assert response.status_code == 302, response.text
        assert rp.jwks.fetch_count == fetches + 1
        assert rp.jwks._select(new_kid, "RS256") is not None


async def test_key_rotation_right_after_start_up_does_not_fail_sign_ins(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    """The IdP rotates its key seconds after the gateway fetched the key set at start-up,
    well inside jwks_min_refresh_seconds: every sign-in still succeeds, with one refetch."""
    async with start_gateway(op, mongo_uri, idp={"jwks_min_refresh_seconds": 3600}) as gw:
        rp = gw.gateway.idps["testop"].rp
        assert rp.jwks is not None
        fetches = rp.jwks.fetch_count
        new_kid = await op.rotate_keys()
        for _ in range(3):
            async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as person:
                callback = await gw.start_and_login(person, op)
                response = await person.get(callback)
                assert response.status_code == 302, response.text
        assert rp.jwks.fetch_count == fetches + 1
        assert rp.jwks._select(new_kid, "RS256") is not None


async def test_iss_parameter_of_another_issuer_is_refused(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op)
    forged = with_query(callback, iss="https://evil.example")
    await assert_refused(gw, await browser.get(forged), 400, "issuer_mismatch")


async def test_missing_iss_parameter_is_refused_when_advertised(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op)
    await assert_refused(
        gw, await browser.get(with_query(callback, iss=None)), 400, "issuer_mismatch"
    )


async def test_idp_error_response_is_refused_and_audited(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op)
    denied = with_query(callback, code=None, error="access_denied")
    event = await assert_refused(gw, await browser.get(denied), 401, "idp_error")
    assert event["detail"].endswith("error=access_denied")
    assert event["room"] == "standup"


async def test_unknown_idp_parameter(gw: GatewayUnderTest, browser: httpx.AsyncClient) -> None:
    response = await browser.get(f"{gw.url}/oidc/auth", params={"room": "r", "idp": "nope"})
    await assert_refused(gw, response, 400, "idp_unknown")


@pytest.mark.parametrize(
    "query",
    [
        "room=//evil.example",
        "room=%2F%2Fevil.example",
        "room=..%2Fadmin",
        "room=a/b",
        "room=evil.example",
        "room=a%0d%0aSet-Cookie:x=1",
        "room=",
        "",
        "room=a&room=b",
        "room=" + "a" * 129,
        "room=ok&tenant=evil.example%2F",
        "room=ok&tenant=//evil.example",
        "room=%C3%A9t%C3%A9",
        "room=%ff",
    ],
    ids=[
        "scheme-relative",
        "encoded-slashes",
        "dot-dot",
        "slash",
        "dotted-host",
        "crlf",
        "empty",
        "missing",
        "repeated",
        "too-long",
        "tenant-with-slash",
        "tenant-scheme-relative",
        "non-ascii",
        "not-utf8",
    ],
)
@pytest.mark.parametrize("path", ["/oidc/auth", "/oidc/tokenize"])
async def test_malformed_room_or_tenant_is_refused(
    gw: GatewayUnderTest, browser: httpx.AsyncClient, path: str, query: str
) -> None:
    response = await browser.get(f"{gw.url}{path}?{query}")
    await assert_refused(gw, response, 400, "bad_request")


async def test_redirects_never_leave_the_idp_or_jitsi(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    response = await browser.get(
        f"{gw.url}/oidc/auth",
        params={"room": "r", "redirect_uri": "https://evil.example/", "next": "//evil.example"},
    )
    authorize = (await op.discovery())["authorization_endpoint"]
    assert response.headers["location"].startswith(authorize + "?")
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["redirect_uri"] == [f"{gw.url}/oidc/redirect/testop"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["response_type"] == ["code"]
    for key in ("state", "nonce", "code_challenge"):
        assert len(query[key][0]) >= 43


async def test_no_secret_reaches_the_audit_log(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    callback = await gw.start_and_login(browser, op)
    tokenize = await browser.get(callback)  # signs in and mints at once
    query = parse_qs(urlsplit(callback).query)
    secrets_used = [
        query["code"][0],
        query["state"][0],
        token_from(tokenize.headers["location"]),
        gw.client["client_secret"],
        browser.cookies.get(gw.settings.cookies.session_name),
        APP_SECRET,
    ]
    dump = repr(await audit_events(gw))
    flows = repr([d async for d in gw.store.flows.collection.find({})])
    sessions = repr([d async for d in gw.store.sessions.collection.find({})])
    for value in secrets_used:
        assert value and value not in dump
        assert value not in sessions
    assert query["state"][0] not in flows


async def test_store_unavailable_gives_503(op: TestOP, mongo_uri: str, browser: httpx.AsyncClient):
    async with start_gateway(op, mongo_uri, store_uri="mongodb://127.0.0.1:9/") as gw:
        gw.store.audit.write_timeout = 0.5
        response = await browser.get(f"{gw.url}/oidc/auth", params={"room": "r"})
        assert response.status_code == 503
        assert "unavailable" in response.text
        ready = await browser.get(f"{gw.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["mongodb"] == "unreachable"


async def test_idp_unreachable_gives_502(op: TestOP, mongo_uri: str, browser: httpx.AsyncClient):
    async with start_gateway(op, mongo_uri, idp={"issuer": "http://127.0.0.1:9"}) as gw:
        response = await browser.get(f"{gw.url}/oidc/auth", params={"room": "r"})
        await assert_refused(gw, response, 502, "idp_unreachable")
        # The gateway stays in the load balancer's pool (it can still serve signed-in
        # people); the IdP's state is in the body.
        ready = await browser.get(f"{gw.url}/readyz")
        assert ready.status_code == 200
        assert ready.json()["idps"] == {"testop": "unreachable"}


async def test_health_and_ready(gw: GatewayUnderTest, browser: httpx.AsyncClient) -> None:
    assert (await browser.get(f"{gw.url}/healthz")).json() == {"status": "ok"}
    ready = await browser.get(f"{gw.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"mongodb": "ok", "indexes": "ok"},
        "idps": {"testop": "ok"},
    }


async def test_cookies_are_httponly_lax_and_signed(
    gw: GatewayUnderTest, op: TestOP, browser: httpx.AsyncClient
) -> None:
    response = await browser.get(f"{gw.url}/oidc/auth", params={"room": "r"})
    header = response.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=Lax" in header
    name = gw.settings.cookies.flow_name
    value = browser.cookies.get(name)
    assert value and value.count("|") >= 5  # Tornado's signed-value format v2


async def test_userinfo_is_read_when_configured(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    idp = {"userinfo": True, "scopes": ["openid", "profile", "email", "groups"]}
    async with start_gateway(op, mongo_uri, idp=idp) as gw:
        rp = gw.gateway.idps["testop"].rp
        answers: list[dict] = []
        real_userinfo = rp.userinfo

        async def spy(access_token: str | None, subject: str) -> dict:
            answers.append(await real_userinfo(access_token, subject))  # the real endpoint
            return answers[-1]

        rp.userinfo = spy  # type: ignore[method-assign]
        response = await gw.sign_in(browser, op, room="ui")
        assert response.status_code == 302, response.text
        assert answers and answers[0]["sub"] == "alice-sub"
        assert answers[0]["email"] == " Alice@Example.org"
        doc = await gw.store.sessions.collection.find_one({})
        assert doc["identity"]["name"] == "Alice Example"
        assert doc["identity"]["groups"] == ["testop:staff"]


async def test_host_prefixed_cookie_names(op: TestOP, mongo_uri: str) -> None:
    cookies = {"secure": True, "session_name": "__Host-jog_session", "flow_name": "__Host-jog_flow"}
    async with start_gateway(op, mongo_uri, cookies=cookies) as gw:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{gw.url}/oidc/auth", params={"room": "r"})
        header = response.headers["set-cookie"]
        assert header.startswith("__Host-jog_flow=") and "Path=/" in header and "Secure" in header
        assert "Domain" not in header


@pytest.mark.parametrize("mode", ["query", "fragment"])
async def test_every_delivery_mode_reaches_jitsis_web_client(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient, mode: str
) -> None:
    """The final URL, read by Jitsi's own parseJWTFromURLParams, gives the minted token."""
    async with start_gateway(op, mongo_uri, delivery={"mode": mode}) as gw:
        first = await gw.sign_in(browser, op, room="Standup", tenant="Acme")
        second = await browser.get(f"{gw.url}/oidc/auth", params={"room": "Retro"})
        minted = [e for e in await audit_events(gw) if e["event"] == "token_minted"]
        for response, event, path in zip(
            (first, second), minted, ("/Acme/Standup", "/Retro"), strict=True
        ):
            url = response.headers["location"]
            assert url.startswith(JITSI_BASE + path)
            token = jitsi_token(url)
            assert token is not None
            claims = decode_jitsi(token)
            assert claims["jti"] == event["jti"] and claims["room"] == event["room"]
            assert ("#" in url) == (mode == "fragment")
