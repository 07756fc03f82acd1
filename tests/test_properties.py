"""Property-based tests (Hypothesis): whatever room, tenant, Jitsi state or callback
parameters arrive, the gateway answers without an unhandled error, never redirects outside
the allowed origins, and never lets input into a header.

The HTTP properties run against one real gateway (real OP, real MongoDB-wire server) in a
thread; the pure ones against the modules that build URLs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Apps, Delivery
from gateway.delivery import app_url, deliver
from gateway.errors import GatewayError
from gateway.jitsi_state import parse_state
from gateway.rooms import room_link, valid_room, valid_tenant
from tests.support.gateway import JITSI_BASE, GatewayUnderTest
from tests.support.op import TestOP
from tests.support.threaded import gateway_in_thread

# Text that likes to break URLs and headers.
NASTY = st.lists(
    st.sampled_from([*"aZ09-_~./\\?#&=%:@+ \t\r\n\x00\"'<>é💥", "%2F", "%0d%0a", "//"]),
    max_size=20,
).map("".join)
ANY_TEXT = st.one_of(NASTY, st.text(max_size=60))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
STATES = st.one_of(
    ANY_TEXT,
    st.dictionaries(
        st.one_of(
            st.sampled_from(["room", "tenant", "roomSafe", "ios", "android", "electron"]),
            st.builds(lambda p, s: p + s, st.sampled_from(["config.", "interfaceConfig."]), NASTY),
            ANY_TEXT,
        ),
        JSON_VALUES,
        max_size=8,
    ).map(json.dumps),
)
FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def allowed_location(location: str, gw: GatewayUnderTest, op: TestOP) -> bool:
    parts = urlsplit(location)
    if not parts.scheme and not parts.netloc:
        return location.startswith("/oidc/")  # the gateway's own paths only
    origin = f"{parts.scheme}://{parts.netloc}"
    allowed = {"{0.scheme}://{0.netloc}".format(urlsplit(base)) for base in (JITSI_BASE, op.issuer)}
    return origin in allowed


@pytest.fixture(scope="module")
def live(op: TestOP, mongo_uri: str) -> Iterator[tuple[GatewayUnderTest, TestOP]]:
    with gateway_in_thread(op, mongo_uri) as gw:
        yield gw, op


@FAST
@given(room=ANY_TEXT, tenant=st.none() | ANY_TEXT, state=st.none() | STATES, idp=st.none() | NASTY)
def test_entry_point_never_fails_or_redirects_elsewhere(
    live: tuple[GatewayUnderTest, TestOP],
    room: str,
    tenant: str | None,
    state: str | None,
    idp: str | None,
) -> None:
    gw, op = live
    params: dict[str, Any] = {"room": room}
    for name, value in (("tenant", tenant), ("state", state), ("idp", idp)):
        if value is not None:
            params[name] = value
    with httpx.Client(timeout=15) as client:
        for path in ("/oidc/auth", "/oidc/tokenize"):
            response = client.get(f"{gw.url}{path}", params=params)
            assert response.status_code in (200, 302, 400), (path, response.status_code)
            location = response.headers.get("location")
            if location is not None:
                assert "\r" not in location and "\n" not in location
                assert allowed_location(location, gw, op), location


@FAST
@given(
    query=st.dictionaries(
        st.sampled_from(["code", "state", "iss", "error", "error_description", "session_state"]),
        ANY_TEXT,
        max_size=5,
    ),
    path_idp=st.sampled_from(["testop", "other", "a" * 31]),
)
def test_callback_parameters_never_cause_an_unhandled_error(
    live: tuple[GatewayUnderTest, TestOP], query: dict[str, str], path_idp: str
) -> None:
    gw, _ = live
    with httpx.Client(timeout=15) as client:
        response = client.get(f"{gw.url}/oidc/redirect/{path_idp}", params=query)
    assert 400 <= response.status_code < 500, response.status_code
    assert "location" not in response.headers
    assert response.headers["X-Request-Id"]


@settings(max_examples=400, deadline=None)
@given(state=STATES, room=st.none() | ANY_TEXT)
def test_state_parsing_refuses_or_yields_safe_names(state: str, room: str | None) -> None:
    try:
        parsed = parse_state(state, room)
    except GatewayError as exc:
        assert exc.reason == "bad_request"
        return
    assert valid_room(parsed.room)
    assert parsed.tenant is None or valid_tenant(parsed.tenant)
    for key in parsed.overrides:
        assert key.split(".")[0] in ("config", "interfaceConfig", "iceServers")
        assert all(c.isalnum() or c in "._-" for c in key), key


@settings(max_examples=400, deadline=None)
@given(
    room=st.from_regex(r"[A-Za-z0-9_~-]{1,128}", fullmatch=True),
    tenant=st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", fullmatch=True),
    overrides=st.dictionaries(
        st.from_regex(r"config(\.[A-Za-z0-9_-]{1,10}){1,3}", fullmatch=True),
        JSON_VALUES,
        max_size=5,
    ),
    mode=st.sampled_from(["query", "fragment"]),
    app=st.sampled_from(["ios", "android", "electron"]),
)
def test_room_urls_stay_on_the_jitsi_origin(
    room: str, tenant: str | None, overrides: dict[str, Any], mode: str, app: str
) -> None:
    from tests.test_jitsi import tokens

    page = tokens(base_url="https://meet.example.com/jitsi").room_page(room, tenant)
    url = deliver(Delivery(mode=mode), page, "aaa.bbb.ccc", overrides)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "meet.example.com")
    assert parts.path.startswith("/jitsi/")
    assert not any(c in url for c in "\r\n\x00 ")
    in_app = app_url(Apps(), app, url)
    assert in_app is not None
    expected = {
        "ios": "org.jitsi.meet://meet.example.com/jitsi/",
        "android": "intent://meet.example.com/jitsi/",
        "electron": "jitsi-meet://meet.example.com/jitsi/",
    }[app]
    assert in_app.startswith(expected)
    link = room_link("/oidc/auth", room, tenant)
    assert link.startswith("/oidc/auth?") and "\n" not in link
