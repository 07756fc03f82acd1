"""The gateway against a real Keycloak (26.7, Quarkus distribution from Maven Central).

The realm is docs/keycloak.md's JSON (clients, roles, groups, mappers, logout URIs) plus the
users below; the gateway's IdP entry and policy are that page's YAML. One Keycloak per pytest
process (the ``keycloak`` fixture), one realm for this module.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
import pytest_asyncio
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.async_api import Browser, Page
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from gateway.devtools.standin import make_standin
from tests.support.gateway import GatewayUnderTest, start_gateway, with_query
from tests.support.keycloak import (
    Keycloak,
    KeycloakRealm,
    documented_blocks,
    documented_realm,
)

# The first test also waits for Keycloak to start (40-120 s, more on a loaded machine).
pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(600)]


def _user(name: str, groups: list[str], **more: Any) -> dict[str, Any]:
    return {
        "username": name,
        "enabled": True,
        "firstName": name.capitalize(),
        "lastName": "Example",
        "credentials": [{"type": "password", "value": f"{name}-pw", "temporary": False}],
        "groups": groups,
        **more,
    }


USERS = [
    # Owner by realm role; a subgroup of staff.
    _user(
        "alice",
        ["/staff/devops"],
        email="alice@example.com",
        emailVerified=True,
        realmRoles=["jitsi-moderator"],
    ),
    # Moderator by client role; no e-mail at all.
    _user("bob", ["/staff"], clientRoles={"jitsi-gateway": ["host"]}),
    # An e-mail Keycloak has not verified.
    _user("carol", ["/staff"], email="carol@example.com", emailVerified=False),
    # Disabled by an administrator.
    _user("dave", ["/staff"], email="dave@example.com", emailVerified=True, enabled=False),
    # Refused by group (contractors), even though verified.
    _user("erin", ["/contractors"], email="erin@example.com", emailVerified=True),
]


@pytest_asyncio.fixture(scope="module")
async def realm(keycloak: Keycloak) -> KeycloakRealm:
    representation = documented_realm(f"jitsi-{secrets.token_hex(4)}")
    representation["users"] = USERS
    realm = await keycloak.import_realm(representation)
    # docs/keycloak.md: Verify Profile off, so bob (no e-mail) is not asked for one.
    verify_profile = json.loads(documented_blocks("json")[1])
    await realm.admin("PUT", "/authentication/required-actions/VERIFY_PROFILE", json=verify_profile)
    return realm


def documented_settings(block: int = 0) -> dict[str, Any]:
    return dict(yaml.safe_load(documented_blocks("yaml")[block]))


@asynccontextmanager
async def kc_gateway(
    realm: KeycloakRealm,
    mongo_uri: str,
    *,
    client_id: str = "jitsi-gateway",
    jitsi_url: str | None = None,
    **overrides: Any,
) -> AsyncIterator[GatewayUnderTest]:
    """A gateway configured as docs/keycloak.md says, its client pointed at it."""
    documented = documented_settings()
    idp = {k: v for k, v in documented["idps"][0].items() if k not in ("client_secret",)}
    idp.update(issuer=realm.issuer, **overrides.pop("idp", {}))
    idp.pop("client_id", None)
    if jitsi_url:
        overrides["jitsi"] = {"base_url": jitsi_url, **overrides.get("jitsi", {})}
    async with start_gateway(
        realm,  # type: ignore[arg-type]  # quacks like TestOP (issuer, register_client)
        mongo_uri,
        client_metadata=lambda url: {"client_id": client_id},
        idp=idp,
        policy=overrides.pop("policy", documented["policy"]),
        **overrides,
    ) as gw:
        yield gw


@asynccontextmanager
async def with_standin(
    realm: KeycloakRealm, mongo_uri: str, **kwargs: Any
) -> AsyncIterator[tuple[str, GatewayUnderTest]]:
    """A Keycloak gateway plus the Jitsi stand-in page in front of it; (jitsi url, gateway)."""
    sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    jitsi_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    async with kc_gateway(realm, mongo_uri, jitsi_url=jitsi_url, **kwargs) as gw:
        standin = HTTPServer(make_standin(gw.url, gw.settings.jitsi))
        standin.add_sockets(sockets)
        try:
            yield jitsi_url, gw
        finally:
            standin.stop()
            await standin.close_all_connections()


async def keycloak_login(page: Page, username: str, password: str | None = None) -> None:
    """Fill Keycloak's own login form."""
    await page.wait_for_selector("#kc-login", timeout=60_000)
    await page.fill("#username", username)
    await page.fill("#password", password or f"{username}-pw")
    await page.click("#kc-login")


async def room_claims(page: Page) -> dict[str, Any]:
    await page.wait_for_selector("#claims", timeout=60_000)
    return dict(json.loads(await page.inner_text("#claims")))


async def events(gw: GatewayUnderTest, name: str) -> list[dict[str, Any]]:
    cursor = gw.store.audit.collection.find({"event": name}, sort=[("time", 1)])
    return [d async for d in cursor]


async def test_sign_in_and_single_sign_on_in_chromium(
    realm: KeycloakRealm, mongo_uri: str, chromium: Browser
) -> None:
    async with with_standin(realm, mongo_uri) as (jitsi, gw):
        page = await chromium.new_page()
        await page.goto(f"{jitsi}/DailyStandup")
        assert page.url.startswith(f"{realm.issuer}/protocol/openid-connect/auth")
        await keycloak_login(page, "alice")
        claims = await room_claims(page)
        assert await page.inner_text("#status") == "token accepted"
        assert claims["room"] == "dailystandup"
        user = claims["context"]["user"]
        assert user["name"] == "Alice Example"
        assert user["email"] == "alice@example.com"
        assert user["affiliation"] == "owner"  # realm role jitsi-moderator
        sub = user["id"].removeprefix("keycloak:")
        assert sub == await realm.user_id("alice")

        # Another room: the gateway's own session, no trip to Keycloak.
        await page.goto(f"{jitsi}/Retro")
        assert (await room_claims(page))["room"] == "retro"

        # Without the gateway's cookie Keycloak's session signs the person in (no form).
        await page.context.clear_cookies(name=gw.settings.cookies.session_name)
        await page.goto(f"{jitsi}/Planning")
        assert (await room_claims(page))["room"] == "planning"
        logins = await events(gw, "login_succeeded")
        assert len(logins) == 2
        assert {e["idp"] for e in logins} == {"keycloak"}


async def test_roles_and_groups_decide_policy(
    realm: KeycloakRealm, mongo_uri: str, chromium: Browser
) -> None:
    """Realm role -> owner, client role -> moderator, group path -> member, a refusing group
    -> the refusal page and a policy_denied event naming the rule."""
    async with with_standin(realm, mongo_uri) as (jitsi, gw):
        expected = {"alice": "owner", "bob": "moderator", "carol": "member"}
        for name, affiliation in expected.items():
            page = await chromium.new_page()
            await page.goto(f"{jitsi}/standup")
            await keycloak_login(page, name)
            user = (await room_claims(page))["context"]["user"]
            assert user["affiliation"] == affiliation, name
            assert user["moderator"] is (affiliation != "member"), name

        page = await chromium.new_page()
        await page.goto(f"{jitsi}/standup")
        async with page.expect_response(lambda r: "/oidc/redirect/" in r.url) as answer:
            await keycloak_login(page, "erin")
        assert (await answer.value).status == 403
        assert "Access refused" in await page.inner_text("body")
        [refused] = await events(gw, "login_failed")
        assert refused["reason"] == "policy_denied"
        assert refused["rule"] == 'rule 1 "contractors-refused"'
        assert refused["username"] == "erin"
        assert "keycloak:/contractors" in refused["groups"]


async def test_email_missing_or_unverified(realm: KeycloakRealm, mongo_uri: str) -> None:
    """docs/adapters.md: e-mail and email_verified as the IdP asserts, never defaulted. Bob has
    none: no e-mail in the token, named by first and last name. Carol's is unverified: it
    does not satisfy an e-mail domain rule (alice's verified one does)."""
    policy = {
        "default": "deny",
        "rules": [
            {"name": "verified-domain", "email_domains": ["example.com"], "affiliation": "owner"},
            {"name": "staff", "groups": ["keycloak:/staff"], "affiliation": "member"},
        ],
    }
    async with kc_gateway(realm, mongo_uri, policy=policy) as gw:
        outcomes = {}
        for name in ("alice", "bob", "carol"):
            async with httpx.AsyncClient(follow_redirects=False, timeout=60) as person:
                response = await gw.sign_in(person, realm, "standup", name, f"{name}-pw")
                assert response.status_code == 302, response.text
                token = parse_qs(urlsplit(response.headers["location"]).query)["jwt"][0]
                outcomes[name] = jwt_claims(token)["context"]["user"]
        assert outcomes["alice"]["affiliation"] == "owner"
        assert outcomes["alice"]["email"] == "alice@example.com"
        assert "email" not in outcomes["bob"]
        assert outcomes["bob"]["name"] == "Bob Example"
        assert outcomes["carol"]["affiliation"] == "member"  # unverified: not the domain rule
        logins = {e["username"]: e for e in await events(gw, "login_succeeded")}
        assert logins["carol"]["email_verified"] is False
        assert logins["carol"]["rule"] == 'rule 2 "staff"'
        assert logins["alice"]["email_verified"] is True
        assert "email" not in logins["bob"] and logins["bob"]["email_verified"] is False


def jwt_claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


async def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.25)


async def session_count(gw: GatewayUnderTest) -> int:
    return int(await gw.store.sessions.collection.count_documents({}))


async def test_rp_initiated_logout_ends_the_keycloak_session(
    realm: KeycloakRealm, mongo_uri: str, chromium: Browser
) -> None:
    async with with_standin(realm, mongo_uri) as (jitsi, gw):
        page = await chromium.new_page()
        await page.goto(f"{jitsi}/standup")
        await keycloak_login(page, "alice")
        await room_claims(page)
        await page.goto(f"{gw.url}/oidc/logout")
        await page.click("#logout")
        await page.wait_for_url(f"{gw.url}/oidc/logged-out**", timeout=60_000)
        [event] = await events(gw, "logout")
        assert event["idp_logout"] is True
        assert await session_count(gw) == 0
        # Keycloak's session ended too: the next room asks for the password.
        await page.goto(f"{jitsi}/retro")
        await page.wait_for_selector("#kc-login", timeout=60_000)
        assert page.url.startswith(f"{realm.issuer}/protocol/openid-connect/auth")
        await keycloak_login(page, "alice")
        assert (await room_claims(page))["room"] == "retro"


async def test_admin_sign_out_in_keycloak_ends_the_gateway_session(
    realm: KeycloakRealm, mongo_uri: str, chromium: Browser
) -> None:
    """An administrator signs the person out in Keycloak (admin REST API); Keycloak posts a
    back-channel logout token and the gateway session is gone."""
    async with with_standin(realm, mongo_uri) as (jitsi, gw):
        page = await chromium.new_page()
        await page.goto(f"{jitsi}/standup")
        await keycloak_login(page, "bob")
        await room_claims(page)
        assert await session_count(gw) == 1
        await realm.admin("POST", f"/users/{await realm.user_id('bob')}/logout")

        async def ended() -> bool:
            return await session_count(gw) == 0

        await wait_for(ended)
        # One logout token per Keycloak session of bob's (earlier tests' too): all accepted,
        # one of them ended this browser's gateway session.
        logouts = await events(gw, "backchannel_logout")
        assert {e["outcome"] for e in logouts} == {"success"}, logouts
        assert sum(e["sessions_ended"] for e in logouts) == 1
        await page.goto(f"{jitsi}/retro")
        await page.wait_for_selector("#kc-login", timeout=60_000)


async def test_disabled_user_is_stopped_at_keycloak(
    realm: KeycloakRealm, mongo_uri: str, chromium: Browser
) -> None:
    """Keycloak refuses a disabled account on its own login page; the gateway keeps only the
    started flow: no session, no token, no login_succeeded."""
    async with with_standin(realm, mongo_uri) as (jitsi, gw):
        page = await chromium.new_page()
        await page.goto(f"{jitsi}/standup")
        await keycloak_login(page, "dave")
        await page.wait_for_selector("#input-error, .kc-feedback-text, #kc-error-message")
        text = await page.inner_text("body")
        assert "disabled" in text.lower(), text
        assert page.url.startswith(realm.issuer)
        assert await session_count(gw) == 0
        assert await events(gw, "login_succeeded") == []
        assert len(await events(gw, "flow_started")) == 1


async def test_iss_as_keycloak_sends_it(realm: KeycloakRealm, mongo_uri: str) -> None:
    """Keycloak advertises and sends RFC 9207 ``iss``: the real one passes, another issuer
    or none at all is refused before the code is redeemed."""
    assert (await realm.discovery())["authorization_response_iss_parameter_supported"] is True
    async with kc_gateway(realm, mongo_uri) as gw:
        for forged, reason in ((realm.issuer + "/", "issuer_mismatch"), (None, "issuer_mismatch")):
            async with httpx.AsyncClient(follow_redirects=False, timeout=60) as person:
                callback = await gw.start_and_login(person, realm, "standup", "alice", "alice-pw")
                assert parse_qs(urlsplit(callback).query)["iss"] == [realm.issuer]
                response = await person.get(with_query(callback, iss=forged))
                assert response.status_code == 400, response.text
        failures = await events(gw, "login_failed")
        assert [e["reason"] for e in failures] == ["issuer_mismatch", "issuer_mismatch"]
        async with httpx.AsyncClient(follow_redirects=False, timeout=60) as person:
            response = await gw.sign_in(person, realm, "standup", "alice", "alice-pw")
            assert response.status_code == 302 and "jwt=" in response.headers["location"]


async def test_realm_key_rotation_between_sign_ins(realm: KeycloakRealm, mongo_uri: str) -> None:
    """A new RS256 key with a higher priority, the old one disabled, while people sign in:
    no sign-in fails (the gateway fetches the JWKS again for the new kid)."""
    old = set(await realm.active_rsa_kids())

    async def person(i: int) -> int:
        async with httpx.AsyncClient(follow_redirects=False, timeout=60) as client:
            response = await gw.sign_in(client, realm, f"room{i}", "alice", "alice-pw")
            assert "jwt=" in response.headers.get("location", ""), response.text
            return response.status_code

    async with kc_gateway(realm, mongo_uri) as gw:
        statuses = list(await asyncio.gather(*(person(i) for i in range(3))))
        rotation = asyncio.ensure_future(realm.rotate_rsa_key(priority=500))
        statuses += await asyncio.gather(*(person(i) for i in range(3, 9)))
        new_kid = await rotation
        statuses += await asyncio.gather(*(person(i) for i in range(9, 12)))
        assert statuses == [302] * 12
        assert new_kid not in old
        assert set(await realm.active_rsa_kids()) == {new_kid}
        async with httpx.AsyncClient(timeout=30) as client:
            published = (await client.get(f"{realm.issuer}/protocol/openid-connect/certs")).json()
        assert not old & {k["kid"] for k in published["keys"]}  # old keys gone: new kid used
        assert await events(gw, "login_failed") == []


def rsa_key_file(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


async def test_signed_jwt_client_accepted_and_wrong_key_refused(
    realm: KeycloakRealm, mongo_uri: str, tmp_path: Path
) -> None:
    """docs/keycloak.md's signed-JWT client: Keycloak fetches the gateway's JWKS URL and
    accepts its ``private_key_jwt`` assertion. A gateway holding another key under the same
    kid is refused by Keycloak's token endpoint (code_exchange_failed, nothing minted)."""
    documented = documented_settings(1)["idps"][0]
    assert documented["token_endpoint_auth_method"] == "private_key_jwt"

    def idp(key: Path) -> dict[str, Any]:
        return {
            "options": documented["options"],
            "token_endpoint_auth_method": "private_key_jwt",
            "client_assertion": {
                **documented["client_assertion"],
                "key_file": str(key),
                "key_id": "gateway-key",
            },
        }

    good_key = rsa_key_file(tmp_path / "good.key")
    async with kc_gateway(
        realm, mongo_uri, client_id=documented["client_id"], idp=idp(good_key)
    ) as good:
        async with httpx.AsyncClient(follow_redirects=False, timeout=60) as person:
            response = await good.sign_in(person, realm, "standup", "alice", "alice-pw")
            assert response.status_code == 302 and "jwt=" in response.headers["location"]

        wrong_key = rsa_key_file(tmp_path / "wrong.key")
        async with kc_gateway(
            realm, mongo_uri, client_id=documented["client_id"], idp=idp(wrong_key)
        ) as wrong:
            # The client's redirect URIs now name ``wrong``; its keys stay ``good``'s.
            uuid = await realm.client_uuid(documented["client_id"])
            client = (await realm.admin("GET", f"/clients/{uuid}")).json()
            client["attributes"]["jwks.url"] = f"{good.url}/.well-known/jwks.json"
            await realm.admin("PUT", f"/clients/{uuid}", json=client)
            async with httpx.AsyncClient(follow_redirects=False, timeout=60) as person:
                response = await wrong.sign_in(person, realm, "standup", "alice", "alice-pw")
            assert response.status_code == 502, response.text
            [failed] = await events(wrong, "login_failed")
            assert failed["reason"] == "code_exchange_failed"
            assert await session_count(wrong) == 0


async def test_logout_after_the_id_token_expired(
    keycloak: Keycloak, mongo_uri: str, chromium: Browser
) -> None:
    """People sign out long after sign-in: Keycloak's ID tokens live as long as its access
    tokens (5 minutes by default), so the ``id_token_hint`` the gateway sends at logout has
    usually expired. Keycloak must still end its session without asking."""
    representation = documented_realm(f"short-{secrets.token_hex(4)}")
    representation["users"] = USERS[:1]
    representation["accessTokenLifespan"] = 10
    realm = await keycloak.import_realm(representation)
    async with with_standin(realm, mongo_uri) as (jitsi, gw):
        page = await chromium.new_page()
        await page.goto(f"{jitsi}/standup")
        await keycloak_login(page, "alice")
        await room_claims(page)
        await asyncio.sleep(15)  # the ID token (exp = iat + 10 s) has expired
        await page.goto(f"{gw.url}/oidc/logout")
        await page.click("#logout")
        await page.wait_for_url(f"{gw.url}/oidc/logged-out**", timeout=60_000)
        await page.goto(f"{jitsi}/retro")
        await page.wait_for_selector("#kc-login", timeout=60_000)


async def test_pkce_required_by_the_documented_client(realm: KeycloakRealm, mongo_uri: str) -> None:
    """docs/keycloak.md's client requires PKCE S256: an authorization request without a
    challenge (the gateway's, stripped) comes back as Keycloak's error redirect, which the
    gateway turns into its idp_error page and audit event."""
    async with kc_gateway(realm, mongo_uri) as gw:
        async with httpx.AsyncClient(follow_redirects=False, timeout=60) as person:
            start = await person.get(f"{gw.url}/oidc/auth", params={"room": "standup"})
            assert start.status_code == 302
            stripped = with_query(
                start.headers["location"], code_challenge=None, code_challenge_method=None
            )
            answer = await person.get(stripped)
            assert answer.status_code == 302, answer.text
            callback = answer.headers["location"]
            assert callback.startswith(f"{gw.url}/oidc/redirect/keycloak?")
            query = parse_qs(urlsplit(callback).query)
            assert query["error"] == ["invalid_request"]
            response = await person.get(callback)
        assert response.status_code == 401
        assert "Sign-in was not completed" in response.text
        [failed] = await events(gw, "login_failed")
        assert failed["reason"] == "idp_error"
        assert await session_count(gw) == 0
