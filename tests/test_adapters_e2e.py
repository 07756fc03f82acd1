"""Each built-in adapter signs in through the full flow against the real test OP, with the
test OP's accounts shaped like that IdP's tokens; the stored Identity is checked field by
field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from tests.idp_shapes import (
    ENTRA_ACCOUNTS,
    GROUP_A,
    GROUP_B,
    OID,
    OTHER_TENANT,
    SHAPES_ACCOUNTS,
    TENANT,
)
from tests.support.gateway import JITSI_BASE, GatewayUnderTest, start_gateway
from tests.support.op import TestOP

pytestmark = pytest.mark.asyncio

CLAIMS = {
    "openid": ["sub", "hd", "tid", "oid"],
    "profile": ["name", "preferred_username", "nickname", "picture"],
    "email": ["email", "email_verified"],
    "groups": ["groups", "groups_direct"],
    "roles": ["roles", "realm_access", "resource_access"],
}
SCOPES = ["openid", "profile", "email", "groups", "roles"]


@pytest.fixture(scope="module")
def shapes_op() -> Iterator[TestOP]:
    with TestOP.start(SHAPES_ACCOUNTS, claims=CLAIMS) as op:
        yield op


@pytest.fixture(scope="module")
def entra_op() -> Iterator[TestOP]:
    """An OP mounted like Entra: issuer .../<tid>/v2.0, discovery claiming {tenantid}."""
    with TestOP.start(
        ENTRA_ACCOUNTS,
        claims=CLAIMS,
        issuer_path=f"/{TENANT}/v2.0",
        discovery_issuer="{origin}/{tenantid}/v2.0",
    ) as op:
        yield op


async def stored_identity(gw: GatewayUnderTest) -> dict[str, Any]:
    docs = [d async for d in gw.store.sessions.collection.find({})]
    assert len(docs) == 1
    return docs[0]["identity"]


async def sign_in_ok(gw: GatewayUnderTest, op: TestOP, username: str) -> httpx.Response:
    async with httpx.AsyncClient(follow_redirects=False, timeout=15) as browser:
        response = await gw.sign_in(
            browser, op, room="room1", username=username, password=f"{username}-pw"
        )
    assert response.status_code == 302, response.text
    assert response.headers["location"].startswith(f"{JITSI_BASE}/room1?jwt=")
    return response


async def test_keycloak(shapes_op: TestOP, mongo_uri: str) -> None:
    idp = {
        "id": "kc",
        "adapter": "keycloak",
        "scopes": SCOPES,
        "options": {"client_roles": ["jitsi-web"]},
    }
    async with start_gateway(shapes_op, mongo_uri, idp=idp) as gw:
        await sign_in_ok(gw, shapes_op, "kc")
        assert await stored_identity(gw) == {
            "idp": "kc",
            "issuer": shapes_op.issuer,
            "subject": "kc-0001",
            "username": "kay",
            "name": "Kay Cloak",
            "email": "kay@corp.example",
            "email_verified": False,
            "groups": ["kc:/staff/devops", "kc:devops", "kc:/partners", "kc:partners"],
            "roles": ["kc:offline_access", "kc:staff", "kc:jitsi-web:moderator"],
            "groups_complete": True,
            "tenant": None,
            "picture": None,
            "extra": {},
        }


async def test_google_workspace_domain(shapes_op: TestOP, mongo_uri: str) -> None:
    idp = {
        "id": "google",
        "adapter": "google",
        "scopes": ["openid", "profile", "email"],
        "options": {"allowed_domains": ["work.example"]},
    }
    async with start_gateway(shapes_op, mongo_uri, idp=idp) as gw:
        async with httpx.AsyncClient(follow_redirects=False) as browser:
            start = await browser.get(f"{gw.url}/oidc/auth", params={"room": "r"})
            assert "hd=work.example" in start.headers["location"]  # the hint is sent...
        await sign_in_ok(gw, shapes_op, "gwork")
        assert await stored_identity(gw) == {
            "idp": "google",
            "issuer": shapes_op.issuer,
            "subject": "108922",
            "username": "gee@work.example",
            "name": "Gee Work",
            "email": "gee@work.example",
            "email_verified": True,
            "groups": [],
            "roles": [],
            "groups_complete": True,
            "tenant": "work.example",
            "picture": "https://lh3.googleusercontent.com/a/gee",
            "extra": {},
        }
        # ...but only the hd claim decides: a matching e-mail suffix without hd is refused.
        async with httpx.AsyncClient(follow_redirects=False) as browser:
            callback = await gw.start_and_login(
                browser, shapes_op, username="gfake", password="gfake-pw"
            )
            refused = await browser.get(callback)
        assert refused.status_code == 403
        events = [e async for e in gw.store.audit.collection.find({"outcome": "failure"})]
        assert events[-1]["reason"] == "policy_denied"
        assert "domain_not_allowed" in events[-1]["detail"]


def entra_idp(op: TestOP, **options: Any) -> dict[str, Any]:
    origin = op.issuer.split(f"/{TENANT}/")[0]
    return {
        "id": "entra",
        "adapter": "azure",
        "issuer": origin + "/{tenantid}/v2.0",
        "discovery_url": op.issuer + "/.well-known/openid-configuration",
        "scopes": SCOPES,
        "options": {"allowed_tenants": [TENANT], **options},
    }


async def test_entra_multi_tenant_template(entra_op: TestOP, mongo_uri: str) -> None:
    async with start_gateway(entra_op, mongo_uri, idp=entra_idp(entra_op)) as gw:
        await sign_in_ok(gw, entra_op, "entra")
        assert await stored_identity(gw) == {
            "idp": "entra",
            "issuer": entra_op.issuer,  # the template with tid substituted
            "subject": OID,
            "username": "ed@contoso.example",
            "name": "Ed Entra",
            "email": "ed@contoso.example",
            "email_verified": False,  # Entra's email is not trusted unless configured
            "groups": [f"entra:{GROUP_A}", f"entra:{GROUP_B}"],
            "roles": ["entra:Meeting.Host"],
            "groups_complete": True,
            "tenant": TENANT,
            "picture": None,
            "extra": {},
        }


async def test_entra_tenant_not_allowed(entra_op: TestOP, mongo_uri: str) -> None:
    idp = entra_idp(entra_op)
    idp["options"]["allowed_tenants"] = [OTHER_TENANT]
    async with start_gateway(entra_op, mongo_uri, idp=idp) as gw:
        async with httpx.AsyncClient(follow_redirects=False) as browser:
            callback = await gw.start_and_login(
                browser, entra_op, username="entra", password="entra-pw"
            )
            assert (await browser.get(callback)).status_code == 403
        events = [e async for e in gw.store.audit.collection.find({"outcome": "failure"})]
        assert "tenant_not_allowed" in events[-1]["detail"]


async def test_entra_group_overage_without_graph_is_groups_unknown(
    entra_op: TestOP, mongo_uri: str
) -> None:
    async with start_gateway(entra_op, mongo_uri, idp=entra_idp(entra_op)) as gw:
        await sign_in_ok(gw, entra_op, "overage")
        identity = await stored_identity(gw)
        assert identity["groups"] == []
        assert identity["groups_complete"] is False


class GraphMemberOf(tornado.web.RequestHandler):
    """Stand-in for Graph's /me/transitiveMemberOf: two pages of groups, bearer required."""

    def get(self, page: str | None) -> None:
        if not self.request.headers.get("Authorization", "").startswith("Bearer "):
            raise tornado.web.HTTPError(401)
        base = f"{self.request.protocol}://{self.request.host}/v1.0"
        if page is None:
            self.write(
                {
                    "value": [{"id": GROUP_A}, {"id": "33333333-0000-4000-8000-00000000000c"}],
                    "@odata.nextLink": f"{base}/me/transitiveMemberOf/page2",
                }
            )
        else:
            self.write({"value": [{"id": GROUP_B}]})


@pytest_asyncio.fixture
async def graph_url() -> AsyncIterator[str]:
    app = tornado.web.Application(
        [(r"/v1\.0/me/transitiveMemberOf(?:/microsoft\.graph\.group|/(page2))", GraphMemberOf)]
    )
    server = HTTPServer(app)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}/v1.0"
    server.stop()
    await asyncio.sleep(0)


async def test_entra_group_overage_resolved_through_graph(
    entra_op: TestOP, mongo_uri: str, graph_url: str
) -> None:
    idp = entra_idp(entra_op, graph_groups=True, graph_url=graph_url)
    async with start_gateway(entra_op, mongo_uri, idp=idp) as gw:
        await sign_in_ok(gw, entra_op, "overage")
        identity = await stored_identity(gw)
        assert identity["groups_complete"] is True
        assert identity["groups"] == [
            f"entra:{GROUP_A}",
            "entra:33333333-0000-4000-8000-00000000000c",
            f"entra:{GROUP_B}",
        ]


async def test_generic_with_dotted_claim_paths(shapes_op: TestOP, mongo_uri: str) -> None:
    idp = {
        "id": "gen",
        "adapter": "generic",
        "scopes": SCOPES,
        "options": {"groups": "realm_access.roles", "roles": None, "extra_claims": ["hd"]},
    }
    async with start_gateway(shapes_op, mongo_uri, idp=idp) as gw:
        await sign_in_ok(gw, shapes_op, "kc")
        identity = await stored_identity(gw)
        assert identity["groups"] == ["gen:offline_access", "gen:staff"]
        assert identity["roles"] == []
        assert identity["username"] == "kay"
