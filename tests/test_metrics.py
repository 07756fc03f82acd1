"""``/metrics`` (parsed with Prometheus' own text parser) and the structured, redacted logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway.logging_setup import _BEARER, _JWT, _SECRET_PARAMS, configure_logging, redact
from tests.support.gateway import GatewayUnderTest, start_gateway
from tests.support.op import TestOP

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(gw: GatewayUnderTest, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"{gw.url}/metrics", headers=headers)


@pytest.mark.asyncio
async def test_counters_after_a_known_sequence_of_sign_ins(
    gw: GatewayUnderTest, op: TestOP
) -> None:
    before = parse((await scrape(gw)).text)
    assert value(before, "jog_sign_ins_total", idp="testop", outcome="success") == 0
    for username in ("alice", "bob"):
        async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser:
            response = await gw.sign_in(browser, op, username=username, password=f"{username}-pw")
            assert "jwt=" in response.headers["location"]
    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser:
        callback = await gw.start_and_login(browser, op)
        await op.tamper_next_id_token("signature")
        assert (await browser.get(callback)).status_code == 401
        # A bad room is refused before any IdP is involved.
        assert (await browser.get(f"{gw.url}/oidc/auth?room=a.b")).status_code == 400

    response = await scrape(gw)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = parse(response.text)
    assert value(samples, "jog_sign_ins_total", idp="testop", outcome="success") == 2
    assert value(samples, "jog_sign_ins_total", idp="testop", outcome="failure") == 1
    assert value(samples, "jog_sign_ins_total", idp="none", outcome="failure") == 1
    assert (
        value(samples, "jog_sign_in_failures_total", idp="testop", reason="id_token_invalid") == 1
    )
    assert value(samples, "jog_sign_in_failures_total", idp="none", reason="bad_request") == 1
    assert value(samples, "jog_tokens_minted_total", idp="testop") == 2
    assert value(samples, "jog_audit_events_total", event="flow_started", outcome="success") == 3
    assert value(samples, "jog_jwks_fetches_total", idp="testop") >= 1
    assert value(samples, "jog_store_errors_total") == 0
    assert ("jog_audit_spool_depth", ()) in samples
    # the callback signs in and mints at once: no hop through /oidc/tokenize
    assert value(samples, "jog_request_duration_seconds_count", step="redirect", status="3xx") == 2
    assert value(samples, "jog_request_duration_seconds_count", step="tokenize", status="3xx") == 0
    assert value(samples, "jog_request_duration_seconds_count", step="redirect", status="4xx") == 1
    assert value(samples, "jog_request_duration_seconds_count", step="auth", status="3xx") == 3
    # Label values never carry request input.
    assert "a.b" not in response.text


@pytest.mark.asyncio
async def test_store_commands_and_idp_requests_move_with_a_sign_in(
    gw: GatewayUnderTest, op: TestOP
) -> None:
    """The round trips the sign-in benchmark counts: MongoDB commands by command and
    collection, outbound calls to the IdP by method."""
    before = parse((await scrape(gw)).text)
    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser:
        response = await gw.sign_in(browser, op)
        assert "jwt=" in response.headers["location"]
    assert await gw.store.audit.flush()
    after = parse((await scrape(gw)).text)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # Which commands a sign-in needs is the hot path's business; that each store touched
    # is counted under its own collection is this counter's.
    commands = [
        (labels, count - before.get((name, labels), 0.0))
        for (name, labels), count in after.items()
        if name == "jog_store_commands_total"
    ]
    touched = {dict(labels)["collection"] for labels, delta in commands if delta > 0}
    assert {"flows", "sessions", "audit"} <= touched, commands
    assert moved("jog_store_commands_total", command="insert", collection="audit") >= 1
    assert all(float(delta).is_integer() for _, delta in commands)
    assert moved("jog_idp_requests_total", method="POST") >= 1  # the code exchange


@pytest.mark.asyncio
async def test_metrics_bearer_token(op: TestOP, mongo_uri: str) -> None:
    token = "scrape-token-0123456789"
    async with start_gateway(op, mongo_uri, metrics={"bearer_token": token}) as gw:
        assert (await scrape(gw)).status_code == 401
        assert (await scrape(gw, Authorization="Bearer wrong-token-0123456789")).status_code == 401
        assert (await scrape(gw, Authorization=f"Basic {token}")).status_code == 401
        ok = await scrape(gw, Authorization=f"Bearer {token}")
        assert ok.status_code == 200 and "jog_sign_ins_total" in ok.text


@pytest.mark.asyncio
async def test_metrics_can_be_disabled(op: TestOP, mongo_uri: str) -> None:
    async with start_gateway(op, mongo_uri, metrics={"enabled": False}) as gw:
        response = await scrape(gw)
        assert response.status_code == 404 and "jog_" not in response.text


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Route the root logger to a JSON stream for one test, then restore it."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("tornado.access").disabled = False


@pytest.mark.asyncio
async def test_json_logs_carry_request_id_and_no_secrets(
    gw: GatewayUnderTest, op: TestOP, json_logs: io.StringIO
) -> None:
    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser:
        callback = await gw.start_and_login(browser, op)
        response = await browser.get(callback)
        assert response.status_code == 302
        refused = await browser.get(f"{gw.url}/oidc/auth?room=a.b")
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    assert lines, "nothing was logged"
    code = callback.split("code=", 1)[1].split("&", 1)[0]
    state = callback.split("state=", 1)[1].split("&", 1)[0]
    raw = json_logs.getvalue()
    assert code not in raw and state not in raw
    access = [entry for entry in lines if entry["logger"] == "gateway.access"]
    redirect = next(entry for entry in access if entry["path"] == "/oidc/redirect/testop")
    assert redirect["status"] == 302 and redirect["request_id"] == response.headers["X-Request-Id"]
    request_id = refused.headers["X-Request-Id"]
    mine = [entry for entry in lines if entry.get("request_id") == request_id]
    assert {entry["logger"] for entry in mine} >= {"gateway.signin", "gateway.access"}
    event = await gw.store.audit.collection.find_one({"reason": "bad_request"})
    assert event is not None and event["request_id"] == request_id


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET /x?code=SplxlOBeZQQYbYS6WxSbIA&state=af0ifjsldkj", "SplxlOBeZQQYbYS6WxSbIA"),
        ("GET /x?code=SplxlOBeZQQYbYS6WxSbIA&state=af0ifjsldkj", "af0ifjsldkj"),
        ("room url https://meet/x?jwt=abc.def.ghi", "abc.def.ghi"),
        ("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl seen", "c2lnbmF0dXJl"),
        ("Authorization: Bearer s3cr3t-t0ken", "s3cr3t-t0ken"),
        ("authorization: bearer AbCdEf", "AbCdEf"),
        ("body logout_token=aaa.bbb.ccc", "aaa.bbb.ccc"),
        ("client_secret=p@ss:w/rd", "p@ss:w/rd"),
    ],
)
def test_redaction(text: str, secret: str) -> None:
    assert secret not in redact(text)


def every_pattern(text: str) -> str:
    """Redaction without the literal pre-checks: every pattern on every line."""
    text = _JWT.sub("[redacted-jwt]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    return _SECRET_PARAMS.sub(r"\1=[redacted]", text)


PIECES = st.sampled_from(
    [
        "eyJ",
        "hbGci",
        ".",
        "x",
        " ",
        "Bearer ",
        "BEARER\t",
        "bEaReR ",
        "code",
        "state",
        "=",
        "&",
        "jwt",
        "tok3n",
        "\u212a",
        "\u0130",
        "_-",
        "abcdefghijklm",
        "\n",
    ]
)


@given(st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=24).map("".join))
def test_the_literal_pre_checks_never_change_what_is_redacted(text: str) -> None:
    assert redact(text) == every_pattern(text)


def test_redaction_applies_to_every_logger(json_logs: io.StringIO) -> None:
    logging.getLogger("some.library").warning("fetched %s", "https://idp/cb?code=abc123secret")
    entry = json.loads(json_logs.getvalue().splitlines()[-1])
    assert "abc123secret" not in entry["message"] and entry["level"] == "WARNING"


@pytest.mark.parametrize(
    "text", ["admin request refused: missing bearer token", "expected a bearer scheme"]
)
def test_redaction_leaves_plain_words(text: str) -> None:
    assert redact(text) == text


@pytest.mark.asyncio
async def test_round_trips_of_a_sign_in_and_of_single_sign_on(
    gw: GatewayUnderTest, op: TestOP
) -> None:
    """Counted, not timed: a full sign-in is two gateway hops and, on the person's path,
    four store round trips (flow in, flow read, flow consumed, session in) plus one audit insert per
    hop; single sign-on into another room is one hop, one session read and one insert."""

    def commands(samples: dict) -> dict[tuple[str, str], float]:
        return {
            (dict(labels)["command"], dict(labels)["collection"]): count
            for (name, labels), count in samples.items()
            if name == "jog_store_commands_total"
            # the 5 s maintenance round checks every collection's indexes, off the path
            and dict(labels)["command"] not in ("listIndexes", "createIndexes")
        }

    def delta(before: dict, after: dict) -> dict[tuple[str, str], int]:
        moved = {k: int(v - before.get(k, 0.0)) for k, v in after.items()}
        return {k: v for k, v in moved.items() if v}

    async with httpx.AsyncClient(follow_redirects=False, timeout=15.0) as browser:
        start = commands(parse((await scrape(gw)).text))
        response = await gw.sign_in(browser, op)
        assert "jwt=" in response.headers["location"]
        assert await gw.store.audit.flush()
        signed_in = commands(parse((await scrape(gw)).text))
        again = await browser.get(f"{gw.url}/oidc/auth", params={"room": "second"})
        assert "jwt=" in again.headers["location"]
        assert await gw.store.audit.flush()
        sso = commands(parse((await scrape(gw)).text))
    assert delta(start, signed_in) == {
        ("insert", "flows"): 1,
        ("find", "flows"): 1,  # the flow read by _id, then consumed by a conditional update
        ("update", "flows"): 1,
        ("insert", "sessions"): 1,
        ("insert", "audit"): 2,  # flow_started; login_succeeded + token_minted together
    }
    assert delta(signed_in, sso) == {("find", "sessions"): 1, ("insert", "audit"): 1}
