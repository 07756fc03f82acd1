"""The gateway's own identity rules (gateway/identity_rules.py, adapters.base.identity_problems):
every adapter's Identity is checked after ``identity()``, whatever the plugin did, and the
conformance kit reports the same rules. A careless test-only plugin (subject from a custom
claim, the verified flag passed through as given) is registered through a real entry point
and signs in against the real test OP."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from adapters.base import Identity, identity_problems, subject_problem
from adapters.conformance import AdapterKit, Good
from gateway.errors import GatewayError
from gateway.identity_rules import claimed, enforce
from gateway.plugins import GROUP
from tests.idp_shapes import account
from tests.support.gateway import JITSI_BASE, start_gateway
from tests.support.op import TestOP

ISS = "https://acme.example"
GOOD = Identity(idp="acme", issuer=ISS, subject="u-1", username="ann", name="Ann")

# A plugin as a hurried author writes it: no check of its own on the subject or the flag.
CARELESS = """
from adapters.base import AccessDenied, Adapter, Identity

class AcmeAdapter(Adapter):
    description = "test-only careless adapter"

    def identity(self, claims, userinfo):
        if claims.get("acme_org") == "outside":
            raise AccessDenied("org_not_allowed", "not in the acme org")
        uid = claims.get("acme_uid")
        return Identity(idp=self.idp_id, issuer=claims["iss"], subject=uid,
                        username=claims.get("preferred_username") or "someone",
                        name=claims.get("name") or "Someone",
                        email=claims.get("email"),
                        email_verified=claims.get("acme_verified", False))
"""


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param({"subject": "   "}, "subject is blank", id="blank_subject"),
        pytest.param({"subject": "\t\n "}, "subject is blank", id="whitespace_subject"),
        pytest.param({"subject": ""}, "subject is blank", id="empty_subject"),
        pytest.param({"subject": "u\x00-1"}, "control characters", id="nul_in_subject"),
        pytest.param({"subject": "u-1\x85"}, "control characters", id="c1_in_subject"),
        pytest.param({"subject": "u" * 256}, "at most 255", id="long_subject"),
        pytest.param({"subject": 7}, "must be a string", id="int_subject"),
        pytest.param({"email_verified": "false"}, "email_verified must be a bool", id="str_flag"),
        pytest.param({"email_verified": 1}, "email_verified must be a bool", id="int_flag"),
        pytest.param({"idp": "other"}, "not the adapter's idp_id", id="foreign_idp"),
        pytest.param({"username": " "}, "username must be a non-blank", id="blank_username"),
        pytest.param({"groups": ("staff",)}, "namespaced", id="bare_group"),
    ],
)
def test_identity_rules_refuse(change: dict[str, Any], problem: str) -> None:
    bad = replace(GOOD, **change)
    problems = identity_problems(bad, "acme")
    assert any(problem in p for p in problems), problems
    with pytest.raises(GatewayError) as raised:
        enforce(bad, "acme", {"iss": ISS, "sub": "tok-sub", "email": "ann@acme.example"})
    assert raised.value.reason == "claims_invalid"
    assert "identity_invalid" in raised.value.detail
    assert raised.value.audit["subject"] == "tok-sub"  # findable by the token's sub
    assert raised.value.audit["email"] == "ann@acme.example"


def test_identity_rules_accept_a_good_identity() -> None:
    assert identity_problems(GOOD, "acme") == []
    assert identity_problems(replace(GOOD, subject="x" * 255), "acme") == []
    assert enforce(GOOD, "acme", {"iss": ISS}) is GOOD
    with pytest.raises(GatewayError, match="not the ID token's iss"):
        enforce(GOOD, "acme", {"iss": "https://other.example"})


def test_claimed_records_only_values_that_pass_the_rules() -> None:
    assert claimed({"iss": ISS, "sub": "  ", "email": "a@b", "email_verified": "true"}) == {
        "email": "a@b",
        "email_verified": False,  # only a real true is verified
    }
    assert claimed({"iss": ISS, "sub": "s\n1", "email": "x" * 400 + "@b"}) == {}
    assert claimed({"iss": ISS, "sub": "s1", "email": 5}) == {"issuer": ISS, "subject": "s1"}
    assert subject_problem("ok") is None


def careless_class() -> type:
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(CARELESS), namespace)  # the same source the entry point loads
    return namespace["AcmeAdapter"]


def test_kit_fails_a_blank_subject_in_the_minimal_case() -> None:
    claims = {"iss": ISS, "sub": "s", "acme_uid": "   "}
    kit = AdapterKit(careless_class(), issuer=ISS, good=[Good("minimal", claims)])
    with pytest.raises(AssertionError, match="subject is blank"):
        kit.check_good(kit.good[0])


def test_kit_robust_check_catches_what_the_gateway_refuses() -> None:
    claims = {"iss": ISS, "sub": "s", "acme_uid": "u-1"}
    kit = AdapterKit(careless_class(), issuer=ISS, good=[Good("minimal", claims)])
    kit.check_good(kit.good[0])  # a good subject passes
    with pytest.raises(AssertionError) as raised:
        kit.check_robust(kit.good[0])
    assert "acme_uid=blank-string" in str(raised.value) or "blank" in str(raised.value)
    assert "subject is blank" in str(raised.value)


# ---- end to end: a real entry point, the real test OP, the gateway's callback ----------

ACCOUNTS = [
    account("acme-ws", "ws", acme_uid="   ", email="ws@acme.example", email_verified=True),
    account("acme-fv", "fv", acme_uid="u-fv", email="fv@acme.example", acme_verified="false"),
    account("acme-out", "out", acme_uid="u-out", email="out@acme.example", acme_org="outside"),
    account("acme-ok", "ok", acme_uid="u-ok", email="ok@acme.example", acme_verified=True),
]
CLAIMS = {
    "openid": ["sub"],
    "email": ["email", "email_verified"],
    "acme": ["acme_uid", "acme_verified", "acme_org"],
}


@pytest.fixture(scope="module")
def careless_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``jogtest-acme`` registered by a real entry point in a temporary dist-info."""
    folder = tmp_path_factory.mktemp("careless-plugin")
    module = f"jogtest_acme_{uuid.uuid4().hex[:10]}"
    dist_info = folder / "jog_test_acme-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: jog-test-acme\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[{GROUP}]\njogtest-acme = {module}:AcmeAdapter\n", encoding="utf-8"
    )
    (folder / f"{module}.py").write_text(textwrap.dedent(CARELESS), encoding="utf-8")
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    try:
        yield "jogtest-acme"
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(module, None)
        importlib.invalidate_caches()


@pytest.fixture(scope="module")
def acme_op() -> Iterator[TestOP]:
    with TestOP.start(ACCOUNTS, claims=CLAIMS) as op:
        yield op


async def sign_in_as(
    careless_plugin: str, acme_op: TestOP, mongo_uri: str, username: str
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    idp = {"id": "acme", "adapter": careless_plugin, "scopes": ["openid", "email", "acme"]}
    async with start_gateway(acme_op, mongo_uri, idp=idp) as gw:
        async with httpx.AsyncClient(follow_redirects=False) as browser:
            callback = await gw.start_and_login(
                browser, acme_op, username=username, password=f"{username}-pw"
            )
            answer = await browser.get(callback)
        events = await gw.store.audit.collection.find({}, {"_id": 0}).to_list(None)
        sessions = await gw.store.sessions.collection.count_documents({})
    assert sessions == (1 if answer.status_code == 302 else 0)
    return answer, events


def failed(events: list[dict[str, Any]]) -> dict[str, Any]:
    found = [e for e in events if e["event"] == "login_failed"]
    assert len(found) == 1, events
    return found[0]


@pytest.mark.asyncio
async def test_blank_subject_from_a_plugin_is_refused_end_to_end(
    careless_plugin: str, acme_op: TestOP, mongo_uri: str
) -> None:
    answer, events = await sign_in_as(careless_plugin, acme_op, mongo_uri, "ws")
    assert answer.status_code == 403, answer.text
    assert "jwt=" not in answer.headers.get("location", "")
    event = failed(events)
    assert event["reason"] == "claims_invalid"
    assert "subject is blank" in event["detail"]
    # The operator finds the refusal by the ID token's sub and e-mail.
    assert (event["subject"], event["email"]) == ("acme-ws", "ws@acme.example")
    assert event["email_verified"] is True
    assert not [e for e in events if e["event"] == "token_minted"]


@pytest.mark.asyncio
async def test_string_false_is_never_a_verified_email(
    careless_plugin: str, acme_op: TestOP, mongo_uri: str
) -> None:
    answer, events = await sign_in_as(careless_plugin, acme_op, mongo_uri, "fv")
    assert answer.status_code == 403, answer.text
    event = failed(events)
    assert "email_verified must be a bool" in event["detail"]
    assert (event["subject"], event["email"]) == ("acme-fv", "fv@acme.example")


@pytest.mark.asyncio
async def test_plugin_refusal_records_who_the_token_named(
    careless_plugin: str, acme_op: TestOP, mongo_uri: str
) -> None:
    answer, events = await sign_in_as(careless_plugin, acme_op, mongo_uri, "out")
    assert answer.status_code == 403
    event = failed(events)
    assert event["reason"] == "policy_denied"
    assert (event["subject"], event["email"]) == ("acme-out", "out@acme.example")
    assert event["email_verified"] is False  # the token did not assert it


@pytest.mark.asyncio
async def test_a_good_identity_from_the_same_plugin_signs_in(
    careless_plugin: str, acme_op: TestOP, mongo_uri: str
) -> None:
    answer, events = await sign_in_as(careless_plugin, acme_op, mongo_uri, "ok")
    assert answer.status_code == 302
    assert answer.headers["location"].startswith(f"{JITSI_BASE}/standup?jwt=")
    ok = [e for e in events if e["event"] == "login_succeeded"]
    assert ok and ok[0]["subject"] == "u-ok" and ok[0]["email_verified"] is True
