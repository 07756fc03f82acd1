"""Access follows the IdP, against the real Keycloak: revalidation with Keycloak's refresh
token (a user disabled through the admin API loses meeting access within one interval and
gets it back when enabled), front-channel logout from Keycloak's own logout page in
Chromium, and pushed authorization requests (plain and ``private_key_jwt``).

No clock is moved here: Keycloak's tokens follow its own clock, so the intervals are short
and real (``revalidate_seconds: 3``)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
import yaml
from playwright.async_api import Browser

from tests.support.gateway import JITSI_BASE, GatewayUnderTest, start_gateway
from tests.support.keycloak import Keycloak, KeycloakRealm, documented_blocks, documented_realm

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(600)]

INTERVAL = 3


def _user(name: str) -> dict[str, Any]:
    return {
        "username": name,
        "enabled": True,
        "firstName": name.capitalize(),
        "lastName": "Example",
        "email": f"{name}@example.com",
        "emailVerified": True,
        "credentials": [{"type": "password", "value": f"{name}-pw", "temporary": False}],
        "groups": ["/staff"],
    }


@pytest_asyncio.fixture(scope="module")
async def realm(keycloak: Keycloak) -> KeycloakRealm:
    representation = documented_realm(f"access-{secrets.token_hex(4)}")
    representation["users"] = [_user(n) for n in ("grace", "heidi", "ivan", "judy")]
    return await keycloak.import_realm(representation)


def documented_settings(block: int = 0) -> dict[str, Any]:
    return dict(yaml.safe_load(documented_blocks("yaml")[block]))


@asynccontextmanager
async def kc_gateway(
    realm: KeycloakRealm,
    mongo_uri: str,
    *,
    client_id: str = "jitsi-gateway",
    policy: dict[str, Any] | None = None,
    **idp: Any,
) -> AsyncIterator[GatewayUnderTest]:
    documented = documented_settings()
    entry = {k: v for k, v in documented["idps"][0].items() if k not in ("client_secret",)}
    entry.update(issuer=realm.issuer, **idp)
    entry.pop("client_id", None)
    async with start_gateway(
        realm,  # type: ignore[arg-type]  # quacks like TestOP
        mongo_uri,
        client_metadata=lambda _url: {"client_id": client_id},
        idp=entry,
        policy=policy or documented["policy"],
    ) as gw:
        yield gw


async def update_client(realm: KeycloakRealm, client_id: str, change: Callable) -> None:
    uuid = await realm.client_uuid(client_id)
    client = (await realm.admin("GET", f"/clients/{uuid}")).json()
    change(client)
    response = await realm.admin("PUT", f"/clients/{uuid}", json=client)
    assert response.status_code in (200, 204), response.text


async def set_enabled(realm: KeycloakRealm, username: str, enabled: bool) -> None:
    uid = await realm.user_id(username)
    user = (await realm.admin("GET", f"/users/{uid}")).json()
    user["enabled"] = enabled
    response = await realm.admin("PUT", f"/users/{uid}", json=user)
    assert response.status_code in (200, 204), response.text


def person() -> httpx.AsyncClient:
    """One browser's cookies, no redirects followed. Keycloak marks its login cookies
    ``Secure``; browsers send them to http://127.0.0.1 (a loopback origin counts as
    secure), Python's cookie jar does not: the jar keeps them as plain cookies instead."""
    client = httpx.AsyncClient(follow_redirects=False, timeout=60)

    async def loopback_is_secure(_response: httpx.Response) -> None:
        for cookie in client.cookies.jar:
            cookie.secure = False

    client.event_hooks["response"] = [loopback_is_secure]
    return client


async def events(gw: GatewayUnderTest, name: str) -> list[dict[str, Any]]:
    return [d async for d in gw.store.audit.collection.find({"event": name}, sort=[("time", 1)])]


async def sessions(gw: GatewayUnderTest) -> int:
    return await gw.store.sessions.collection.count_documents({})


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.25)
    raise AssertionError("condition not reached in time")


def has_token(response: httpx.Response) -> bool:
    location = response.headers.get("location", "")
    return response.status_code == 302 and location.startswith(JITSI_BASE) and "jwt=" in location


async def room(gw: GatewayUnderTest, browser: httpx.AsyncClient) -> httpx.Response:
    return await browser.get(f"{gw.url}/oidc/auth", params={"room": "standup"})


async def test_disabled_in_keycloak_loses_access_within_one_interval(
    realm: KeycloakRealm, mongo_uri: str
) -> None:
    async with kc_gateway(realm, mongo_uri, revalidate_seconds=INTERVAL) as gw:
        async with person() as browser:
            signed = await gw.sign_in(browser, realm, "standup", "grace", "grace-pw")
            assert has_token(signed), signed.text
            doc = await gw.store.sessions.collection.find_one({})
            assert doc is not None and isinstance(doc["idp_refresh"], bytes)
            # Keycloak answers a due revalidation: access stays.
            await asyncio.sleep(INTERVAL + 0.5)
            assert has_token(await room(gw, browser))
            assert len(await events(gw, "session_revalidated")) == 1
            await set_enabled(realm, "grace", False)
            try:
                await asyncio.sleep(INTERVAL + 0.5)
                refused = await room(gw, browser)
                assert refused.status_code == 302
                assert refused.headers["location"].startswith(realm.issuer)  # to Keycloak
                assert await sessions(gw) == 0
                (ended,) = await events(gw, "session_revalidation_failed")
                assert ended["reason"] == "idp_revoked" and ended["access_kept"] is False
            finally:
                await set_enabled(realm, "grace", True)
        # Enabled again, a new sign-in brings access back.
        async with person() as browser:
            again = await gw.sign_in(browser, realm, "standup", "grace", "grace-pw")
            assert has_token(again)
            assert has_token(await room(gw, browser))


async def test_admin_revoking_the_keycloak_session_ends_access(
    realm: KeycloakRealm, mongo_uri: str
) -> None:
    """Keycloak's admin 'sign out' without a back-channel URL: revalidation notices it.
    (Each gateway start re-imports the client's settings, so changes follow the start.)"""
    async with kc_gateway(realm, mongo_uri, revalidate_seconds=INTERVAL) as gw:
        await update_client(
            realm, "jitsi-gateway", lambda c: c["attributes"].update({"backchannel.logout.url": ""})
        )
        async with person() as browser:
            assert has_token(await gw.sign_in(browser, realm, "standup", "heidi", "heidi-pw"))
            await realm.admin("POST", f"/users/{await realm.user_id('heidi')}/logout")
            await asyncio.sleep(INTERVAL + 0.5)
            assert (await room(gw, browser)).headers["location"].startswith(realm.issuer)
        (ended,) = await events(gw, "session_revalidation_failed")
        assert ended["reason"] == "idp_revoked"


async def test_keycloak_down_with_allow_keeps_access_for_the_grace(
    realm: KeycloakRealm, mongo_uri: str
) -> None:
    """Keycloak unreachable at revalidation (its token endpoint moved to a closed port)."""
    async with kc_gateway(
        realm,
        mongo_uri,
        revalidate_seconds=INTERVAL,
        revalidate_outage="allow",
        revalidate_outage_grace_seconds=INTERVAL,
        http_timeout_seconds=5,
    ) as gw:
        async with person() as browser:
            assert has_token(await gw.sign_in(browser, realm, "standup", "ivan", "ivan-pw"))
            meta = await gw.gateway.idps["keycloak"].rp.metadata()
            object.__setattr__(meta, "token_endpoint", "http://127.0.0.1:9/token")
            await asyncio.sleep(INTERVAL + 0.5)
            assert has_token(await room(gw, browser))  # kept: the grace has begun
            (kept,) = await events(gw, "session_revalidation_failed")
            assert kept["access_kept"] is True and "unreachable" in kept["detail"]
            await asyncio.sleep(INTERVAL + 0.5)
            assert (await room(gw, browser)).headers["location"].startswith(realm.issuer)
            assert (await events(gw, "session_revalidation_failed"))[-1]["access_kept"] is False


async def test_par_with_keycloak(realm: KeycloakRealm, mongo_uri: str) -> None:
    meta = await realm.discovery()
    assert meta["pushed_authorization_request_endpoint"]

    def require_par(client: dict[str, Any]) -> None:
        client["attributes"]["require.pushed.authorization.requests"] = "true"

    try:
        async with kc_gateway(realm, mongo_uri, par="always") as gw:
            # Keycloak refuses this client's front-channel requests from now on.
            await update_client(realm, "jitsi-gateway", require_par)
            async with person() as browser:
                start = await room(gw, browser)
                query = parse_qs(urlsplit(start.headers["location"]).query)
                assert set(query) == {"client_id", "request_uri"}
                assert query["request_uri"][0].startswith("urn:ietf:params:oauth:request_uri:")
                callback = await realm.login_over_http(
                    browser, start.headers["location"], "judy", "judy-pw"
                )
                assert has_token(await browser.get(callback))
        async with kc_gateway(realm, mongo_uri, par="never") as gw:
            await update_client(realm, "jitsi-gateway", require_par)
            async with person() as browser:
                start = await room(gw, browser)
                refused = await browser.get(start.headers["location"])
                assert refused.status_code == 400 or "error=" in refused.headers.get("location", "")
    finally:
        await update_client(
            realm,
            "jitsi-gateway",
            lambda c: c["attributes"].update({"require.pushed.authorization.requests": "false"}),
        )


async def test_par_with_signed_jwt_client(
    realm: KeycloakRealm, mongo_uri: str, tmp_path: Path
) -> None:
    from tests.test_keycloak import rsa_key_file

    documented = documented_settings(1)["idps"][0]
    key = rsa_key_file(tmp_path / "gateway.key")
    async with kc_gateway(
        realm,
        mongo_uri,
        client_id=documented["client_id"],
        policy={"default": "allow", "rules": []},  # this client maps no groups
        par="always",
        token_endpoint_auth_method="private_key_jwt",
        client_assertion={**documented["client_assertion"], "key_file": str(key)},
    ) as gw:
        async with person() as browser:
            start = await room(gw, browser)
            assert set(parse_qs(urlsplit(start.headers["location"]).query)) == {
                "client_id",
                "request_uri",
            }
            callback = await realm.login_over_http(
                browser, start.headers["location"], "judy", "judy-pw"
            )
            assert has_token(await browser.get(callback))


async def test_frontchannel_logout_from_keycloak_in_chromium(
    realm: KeycloakRealm, mongo_uri: str, chromium: Browser
) -> None:
    async with kc_gateway(realm, mongo_uri) as gw:
        url = f"{gw.url}/oidc/frontchannel-logout/{next(iter(gw.gateway.idps))}"

        def frontchannel(client: dict[str, Any]) -> None:
            client["frontchannelLogout"] = True
            client["attributes"].update(
                {
                    "frontchannel.logout.url": url,
                    "frontchannel.logout.session.required": "true",
                    "backchannel.logout.url": "",  # so only the front channel can end it
                }
            )

        await update_client(realm, "jitsi-gateway", frontchannel)
        context = await chromium.new_context()
        page = await context.new_page()
        await page.route(f"{JITSI_BASE}/**", lambda route: route.fulfill(body="jitsi"))
        await page.goto(f"{gw.url}/oidc/auth?room=standup")
        await page.wait_for_selector("#kc-login", timeout=60_000)
        await page.fill("#username", "judy")
        await page.fill("#password", "judy-pw")
        await page.click("#kc-login")
        await page.wait_for_url(f"{JITSI_BASE}/**", timeout=60_000)
        assert await sessions(gw) == 1
        # Judy signs out at Keycloak itself: its page frames the gateway's URI.
        await page.goto(f"{realm.issuer}/protocol/openid-connect/logout")
        await page.click("#kc-logout")

        async def ended() -> bool:  # the event is written after the session is gone
            return bool(await events(gw, "frontchannel_logout"))

        await wait_for(ended, 60)
        (done,) = await events(gw, "frontchannel_logout")
        assert done["outcome"] == "success" and done["sessions_ended"] == 1
        assert await sessions(gw) == 0
        assert await events(gw, "backchannel_logout") == []  # the front channel did it
