"""Pure functions of the audit feature: client IP, filter parsing, cursors, settings."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network

import pytest

from gateway.clientip import client_ip
from gateway.config import ConfigError, settings_from_dict
from gateway.store import audit_query as aq

PROXIES = [ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8"), ip_network("fd00::/8")]
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("peer", "xff", "real", "expected"),
    [
        ("198.51.100.1", "1.2.3.4", None, "198.51.100.1"),  # untrusted peer: headers ignored
        ("127.0.0.1", None, None, "127.0.0.1"),
        ("127.0.0.1", "203.0.113.9", None, "203.0.113.9"),
        ("127.0.0.1", "6.6.6.6, 203.0.113.9, 10.2.3.4", None, "203.0.113.9"),  # right-most
        ("127.0.0.1", "10.9.9.9, 10.2.3.4", None, "10.9.9.9"),  # all ours: left-most
        ("127.0.0.1", "garbage, 10.2.3.4", None, "10.2.3.4"),  # stop at the last trusted hop
        ("127.0.0.1", "203.0.113.9:4711", None, "203.0.113.9"),
        ("127.0.0.1", "[2001:db8::1]:443", None, "2001:db8::1"),
        ("127.0.0.1", None, "192.0.2.44", "192.0.2.44"),
        ("127.0.0.1", None, "nonsense", "127.0.0.1"),
        ("::ffff:127.0.0.1", "203.0.113.9", None, "203.0.113.9"),  # v4-mapped peer
        ("fd00::5", "2001:db8::7", None, "2001:db8::7"),
    ],
    ids=[
        "untrusted-peer",
        "no-header",
        "one-hop",
        "right-most-untrusted",
        "all-trusted",
        "garbage",
        "v4-port",
        "v6-port",
        "real-ip",
        "bad-real-ip",
        "v4-mapped",
        "v6",
    ],
)
def test_client_ip(peer: str, xff: str | None, real: str | None, expected: str) -> None:
    assert client_ip(peer, xff, real, PROXIES) == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_ip("127.0.0.1", "203.0.113.9", "192.0.2.1", []) == "127.0.0.1"


def test_times_iso_and_relative() -> None:
    assert aq.parse_time("since", "24h", NOW) == NOW - timedelta(hours=24)
    assert aq.parse_time("since", "2w", NOW) == NOW - timedelta(weeks=2)
    assert aq.parse_time("since", "2025-01-02T03:04:05Z", NOW) == datetime(
        2025, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert aq.parse_time("since", "2025-01-02T05:04:05+02:00", NOW).hour == 3
    assert aq.parse_time("since", "2025-01-02", NOW).tzinfo is not None
    with pytest.raises(aq.FilterError) as err:
        aq.parse_time("until", "soon", NOW)
    assert err.value.parameter == "until"


def test_query_becomes_an_indexed_mongo_filter() -> None:
    q = aq.parse_query(
        {"event": "login_failed,room_refused", "email": " Bob@Example.ORG ", "since": "1h"},
        now=NOW,
    )
    since = NOW - timedelta(hours=1)
    assert aq.mongo_filter(q) == {
        "time": {"$gt": since - MS},  # BSON dates are whole ms: exactly time >= since
        "event": {"$in": ["login_failed", "room_refused"]},
        "email": "bob@example.org",
    }
    assert aq.mongo_filter(aq.parse_query({}, now=NOW)) == {}


def test_cursor_round_trip_and_tampering() -> None:
    doc = {"time": datetime(2025, 1, 1, 0, 0, 0, 123000, tzinfo=UTC), "_id": "abc"}
    cursor = aq.encode_cursor(doc, "desc")
    q = aq.parse_query({"cursor": cursor}, now=NOW)
    assert q.after == (doc["time"], "abc")
    asc = aq.parse_query(
        {
            "cursor": aq.encode_cursor(doc, "asc", aq.snapshot_bound(NOW)),
            "order": "asc",
            "since": "2024-12-31",
        },
        now=NOW + timedelta(days=1),
    )
    # the cursor is past since: only the keyset bound remains (and the snapshot bound)
    assert aq.mongo_filter(asc) == {"time": {"$lt": NOW + MS, "$gt": doc["time"]}}
    assert aq.tie_filter(asc) == {"time": doc["time"], "_id": {"$gt": "abc"}}
    for bad in ("", "!!!", cursor[:-3], "eyJ0IjoxfQ"):
        with pytest.raises(aq.FilterError):
            aq.parse_query({"cursor": bad}, now=NOW)


def base_settings(**extra: object) -> dict:
    return {
        "public_url": "https://meet.example.com",
        "cookies": {"secret": "c" * 40},
        "jitsi": {
            "base_url": "https://meet.example.com",
            "app_id": "a",
            "domain": "d",
            "app_secret": "s" * 40,
        },
        "idps": [
            {
                "id": "corp",
                "adapter": "generic",
                "issuer": "https://idp.example",
                "client_id": "c",
                "client_secret": "x",
            }
        ],
        **extra,
    }


def test_admin_and_audit_settings_are_validated_with_clear_messages() -> None:
    digest = hashlib.sha256(b"t").hexdigest()
    ok = settings_from_dict(
        base_settings(
            admin={"tokens": [{"name": "ops", "sha256": digest.upper()}]},
            audit={"retention_days": 30},
            trusted_proxies=["127.0.0.1/32"],
        )
    )
    assert ok.admin.tokens[0].sha256 == digest and ok.audit.retention_days == 30
    cases = {
        "admin.tokens[0].sha256": {"admin": {"tokens": [{"name": "ops", "sha256": "t"}]}},
        "admin": {
            "admin": {"tokens": [{"name": "a", "sha256": digest}, {"name": "a", "sha256": digest}]}
        },
        "audit.retention_days": {"audit": {"retention_days": 0}},
        "audit.spool_max_bytes": {"audit": {"spool_max_bytes": 10}},
        "trusted_proxies[0]": {"trusted_proxies": ["nginx"]},
    }
    for path, extra in cases.items():
        with pytest.raises(ConfigError) as err:
            settings_from_dict(base_settings(**extra))
        assert any(line.startswith(path) for line in err.value.problems), err.value.problems


# ---- issue 15: exact bounds, odd times, names, CSV -------------------------------------------


def test_cursor_is_a_keyset_with_an_explicit_tie_branch() -> None:
    """Two flat branches: the cursor's millisecond with _id past it, then strictly past it."""
    doc = {"time": datetime(2025, 1, 1, 0, 0, 0, 123000, tzinfo=UTC), "_id": "abc"}
    desc = aq.parse_query({"cursor": aq.encode_cursor(doc, "desc"), "event": "logout"}, now=NOW)
    assert aq.tie_filter(desc) == {"event": "logout", "time": doc["time"], "_id": {"$lt": "abc"}}
    assert aq.mongo_filter(desc) == {"event": "logout", "time": {"$lt": doc["time"]}}
    since = datetime(2024, 12, 31, 0, 0, 0, 500, tzinfo=UTC)  # sub-millisecond
    desc_since = aq.parse_query(
        {"cursor": aq.encode_cursor(doc, "desc"), "since": since.isoformat()}, now=NOW
    )
    assert aq.mongo_filter(desc_since)["time"] == {
        "$lt": doc["time"],
        "$gt": datetime(2024, 12, 31, 0, 0, 0, 0, tzinfo=UTC),  # > 0 ms: from 1 ms on
    }
    assert aq.tie_filter(aq.parse_query({}, now=NOW)) is None


def test_oldest_first_is_a_snapshot_fixed_at_the_first_page() -> None:
    first = aq.parse_query({"order": "asc"}, now=NOW)
    assert first.until == NOW + timedelta(milliseconds=1)
    doc = {"time": NOW - timedelta(hours=1), "_id": "x"}
    cursor = aq.encode_cursor(doc, "asc", first.until)
    later = aq.parse_query({"order": "asc", "cursor": cursor}, now=NOW + timedelta(hours=3))
    assert later.until == first.until  # the bound of the first page, not the new now
    assert aq.parse_query({"order": "desc"}, now=NOW).until is None


@pytest.mark.parametrize("value", ["999999d", "999999w", "0001-01-01", "1900-01-01T00:00:00Z"])
def test_far_past_since_means_no_bound(value: str) -> None:
    assert aq.parse_query({"since": value}, now=NOW).since is None
    with pytest.raises(aq.FilterError) as err:
        aq.parse_query({"until": value}, now=NOW)
    assert err.value.parameter == "until"


def test_an_unencoded_plus_in_an_offset_is_accepted() -> None:
    # "+01:00" in a query string arrives as " 01:00"
    assert aq.parse_time("since", "2025-01-02T05:04:05 01:00", NOW) == datetime(
        2025, 1, 2, 4, 4, 5, tzinfo=UTC
    )
    with pytest.raises(aq.FilterError) as err:
        aq.parse_time("since", "2025-01-02 soon", NOW)
    assert "%2B" in err.value.message


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"event": "token_mintd"}, "event"),
        ({"event": "login_failed,logn"}, "event"),
        ({"idp": "crop"}, "idp"),
    ],
)
def test_unknown_event_and_idp_names_are_refused(params: dict, parameter: str) -> None:
    with pytest.raises(aq.FilterError) as err:
        aq.parse_query(params, now=NOW, idps=("corp", "social"))
    assert err.value.parameter == parameter
    assert aq.parse_query({"idp": "corp"}, now=NOW, idps=("corp",)).fields["idp"] == ["corp"]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (True, "true"),
        (False, "false"),
        ("-curl/8.5", "-curl/8.5"),
        ("+49 30 1234", "+49 30 1234"),
        ("=1+2", "'=1+2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ('+HYPERLINK("http://x")', '\'+HYPERLINK("http://x")'),
        ("\tx", "'\tx"),
        (["a", True], "a true"),
        (None, ""),
    ],
)
def test_csv_cells(value: object, cell: str) -> None:
    assert aq.csv_cell(value) == cell


def test_csv_keeps_who_queried_what() -> None:
    doc = {
        "_id": "1",
        "time": NOW,
        "event": "admin_query",
        "admin": "ops",
        "path": "/admin/audit",
        "query": {"event": "login_failed"},
        "email_verified": True,
    }
    row = next(
        iter(__import__("csv").DictReader((aq.csv_header() + aq.csv_rows([doc])).splitlines()))
    )
    assert (row["admin"], row["path"], row["query"]) == (
        "ops",
        "/admin/audit",
        '{"event":"login_failed"}',
    )
    assert row["email_verified"] == "true"


def test_today_yesterday_and_time_zones() -> None:
    late = datetime(2025, 6, 1, 23, 30, tzinfo=UTC)  # already 2 June in Berlin
    assert aq.parse_time("since", "today", late) == datetime(2025, 6, 1, tzinfo=UTC)
    berlin = aq.parse_tz("Europe/Berlin")
    assert aq.parse_time("since", "today", late, berlin) == datetime(2025, 6, 1, 22, tzinfo=UTC)
    assert aq.parse_time("since", "yesterday", late, berlin) == datetime(
        2025, 5, 31, 22, tzinfo=UTC
    )
    q = aq.parse_query({"since": "2025-06-01T10:00", "tz": "Europe/Berlin"}, now=late)
    assert q.since == datetime(2025, 6, 1, 8, tzinfo=UTC)  # naive input is Berlin time
    assert aq.iso(q.since, q.tz) == "2025-06-01T10:00:00.000+02:00"
    assert aq.iso(q.since) == "2025-06-01T08:00:00.000Z"
    with pytest.raises(aq.FilterError) as err:
        aq.parse_query({"tz": "Mars/Olympus"}, now=late)
    assert err.value.parameter == "tz"


def test_excluding_event_types() -> None:
    q = aq.parse_query({"exclude_event": "admin_query,flow_started"}, now=NOW)
    assert aq.mongo_filter(q) == {"event": {"$nin": ["admin_query", "flow_started"]}}
    both = aq.parse_query({"exclude_event": "admin_query", "event": "login_failed"}, now=NOW)
    assert aq.mongo_filter(both) == {"event": {"$nin": ["admin_query"], "$in": ["login_failed"]}}
    with pytest.raises(aq.FilterError) as err:
        aq.parse_query({"exclude_event": "admin_qury"}, now=NOW)
    assert err.value.parameter == "exclude_event"


@pytest.mark.parametrize("bad", ["idp,idp", "idp,room,day", "day,hour", "colour", ""])
def test_two_dimensional_stats_names(bad: str) -> None:
    assert aq.parse_by("idp,day") == ("idp", "day")
    if bad:
        with pytest.raises(aq.FilterError):
            aq.parse_by(bad)
