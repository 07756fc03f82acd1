"""Questions operators ask of the audit log: filters, pages, exports and statistics.

Shared by the HTTP API (``gateway/handlers/admin.py``) and the CLI (``gateway/audit_cli.py``),
so both accept the same parameters and reject the same bad values (``FilterError`` names the
parameter). Pages are cut with an opaque cursor over ``(time, _id)``: events arriving while
someone pages never shift, repeat or hide the events of later pages. Exports iterate a
server-side cursor, so memory stays constant however large the range.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import ipaddress
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from gateway.errors import REASONS
from gateway.store.audit import OUTCOMES

Order = Literal["asc", "desc"]

LIST_FIELDS = ("event", "outcome", "idp", "reason")  # comma-separated values allowed
EXACT_FIELDS = ("subject", "username", "email", "room", "tenant", "client_ip", "request_id")
FILTER_PARAMS = ("since", "until", *LIST_FIELDS, *EXACT_FIELDS)
PAGE_PARAMS = ("limit", "order", "cursor")
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
RELATIVE = re.compile(r"^(\d{1,6})([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_VALUE = 512
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

CSV_COLUMNS = (
    "time",
    "event",
    "outcome",
    "reason",
    "idp",
    "issuer",
    "subject",
    "username",
    "email",
    "email_verified",
    "groups",
    "room",
    "tenant",
    "affiliation",
    "features",
    "rule",
    "client_ip",
    "user_agent",
    "request_id",
    "session_hash",
    "jti",
    "token_expires_at",
    "detail",
    "_id",
)


class FilterError(ValueError):
    """A bad query parameter; ``parameter`` names it for the 400 answer."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True)
class AuditQuery:
    since: datetime | None = None
    until: datetime | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)
    order: Order = "desc"
    limit: int = 100
    after: tuple[datetime, str] | None = None  # decoded cursor


# ---- parsing -------------------------------------------------------------------------------


def parse_time(name: str, value: str, now: datetime) -> datetime:
    """ISO 8601 (naive means UTC) or a duration back from now: ``30m``, ``24h``, ``7d``."""
    match = RELATIVE.fullmatch(value.strip())
    if match:
        return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(name, "not an ISO 8601 time or a duration like 30m, 24h, 7d") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _check_value(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise FilterError(name, "is empty")
    if len(value) > MAX_VALUE or any(ord(c) < 32 for c in value):
        raise FilterError(name, "too long or has control characters")
    if name == "event" and not EVENT_NAME.fullmatch(value):
        raise FilterError(name, f"{value!r} is not an event name")
    if name == "outcome" and value not in OUTCOMES:
        raise FilterError(name, f"{value!r} is not one of {', '.join(OUTCOMES)}")
    if name == "reason" and value not in REASONS:
        raise FilterError(name, f"{value!r} is not a reason code (see docs/audit.md)")
    if name == "client_ip":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise FilterError(name, f"{value!r} is not an IP address") from None
    if name in ("email", "room", "tenant"):
        return value.lower()  # stored lower-cased
    return value


def parse_query(
    params: Mapping[str, str | None],
    *,
    now: datetime,
    default_order: Order = "desc",
    default_limit: int = 100,
    max_limit: int = 1000,
    extra: tuple[str, ...] = (),
) -> AuditQuery:
    """Validate request parameters into a query; unknown parameters are refused too."""
    known = set(FILTER_PARAMS) | set(PAGE_PARAMS) | set(extra)
    for name in params:
        if name not in known:
            raise FilterError(name, "unknown parameter")
    values = {k: v for k, v in params.items() if v is not None}
    since = parse_time("since", values["since"], now) if "since" in values else None
    until = parse_time("until", values["until"], now) if "until" in values else None
    if since and until and since >= until:
        raise FilterError("until", "must be later than since")
    fields: dict[str, list[str]] = {}
    for name in LIST_FIELDS:
        if name in values:
            fields[name] = [_check_value(name, v) for v in values[name].split(",")]
    for name in EXACT_FIELDS:
        if name in values:
            fields[name] = [_check_value(name, values[name])]
    order = values.get("order", default_order)
    if order not in ("asc", "desc"):
        raise FilterError("order", "must be asc or desc")
    limit = default_limit
    if "limit" in values:
        try:
            limit = int(values["limit"])
        except ValueError:
            raise FilterError("limit", "not a number") from None
        if not 1 <= limit <= max_limit:
            raise FilterError("limit", f"must be between 1 and {max_limit}")
    after = decode_cursor(values["cursor"], order) if "cursor" in values else None
    return AuditQuery(since, until, fields, order, limit, after)  # type: ignore[arg-type]


# ---- cursor --------------------------------------------------------------------------------


def encode_cursor(doc: Mapping[str, Any], order: Order) -> str:
    ms = int(doc["time"].timestamp() * 1000)
    raw = json.dumps({"t": ms, "i": doc["_id"], "o": order}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(value: str, order: Order) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = json.loads(raw)
        moment = datetime.fromtimestamp(int(data["t"]) / 1000, UTC)
        event_id = data["i"]
        made_for = data["o"]
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError, OSError):
        raise FilterError("cursor", "not a cursor returned by this API") from None
    if not isinstance(event_id, str) or made_for not in ("asc", "desc"):
        raise FilterError("cursor", "not a cursor returned by this API")
    if made_for != order:
        raise FilterError("cursor", f"was made for order={made_for}; keep the same order")
    return moment, event_id


# ---- MongoDB -------------------------------------------------------------------------------


def mongo_filter(q: AuditQuery) -> dict[str, Any]:
    """One flat document (no ``$and``/``$or``), so every planner picks the field's index.

    A cursor adds only a time bound (inclusive); ``page`` drops the ties already shown.
    """
    found: dict[str, Any] = {}
    time_range: dict[str, datetime] = {}
    if q.since:
        time_range["$gte"] = q.since
    if q.until:
        time_range["$lt"] = q.until
    if q.after:
        moment = q.after[0]
        if q.order == "desc":
            time_range["$lte"] = moment  # beside "$lt": until, both apply
        else:
            time_range["$gte"] = max(moment, q.since) if q.since else moment
    if time_range:
        found["time"] = time_range
    for name, values in q.fields.items():
        found[name] = values[0] if len(values) == 1 else {"$in": values}
    return found


def sort_spec(order: Order) -> list[tuple[str, int]]:
    direction = DESCENDING if order == "desc" else ASCENDING
    return [("time", direction), ("_id", direction)]


async def page(
    collection: AsyncCollection, q: AuditQuery
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of events and the cursor of the next page (None on the last).

    The filter bounds ``time`` only (``<=`` or ``>=`` the cursor's time: a plain range every
    planner serves from the (field, time, _id) index); events at exactly the cursor's time
    that were already shown are skipped here, so ties are split exactly by ``_id``.
    """
    cursor = collection.find(mongo_filter(q), sort=sort_spec(q.order), batch_size=q.limit + 1)
    docs: list[dict[str, Any]] = []
    try:
        async for doc in cursor:
            if q.after is not None and _already_shown(doc, q.after, q.order):
                continue
            docs.append(doc)
            if len(docs) > q.limit:
                break
    finally:
        await cursor.close()
    more = len(docs) > q.limit
    docs = docs[: q.limit]
    return docs, encode_cursor(docs[-1], q.order) if more and docs else None


def _already_shown(doc: Mapping[str, Any], after: tuple[datetime, str], order: Order) -> bool:
    moment, event_id = after
    if doc["time"] != moment:
        return False
    return doc["_id"] >= event_id if order == "desc" else doc["_id"] <= event_id


async def stream(
    collection: AsyncCollection, q: AuditQuery, batch_size: int = 1000
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching event in chunks of ``batch_size``, never more in memory."""
    cursor = collection.find(mongo_filter(q), sort=sort_spec(q.order), batch_size=batch_size)
    chunk: list[dict[str, Any]] = []
    try:
        async for doc in cursor:
            chunk.append(doc)
            if len(chunk) >= batch_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    finally:
        await cursor.close()


BUCKETS = {"hour": "%Y-%m-%dT%H:00Z", "day": "%Y-%m-%d"}


async def _aggregate(collection: AsyncCollection, pipeline: list[dict[str, Any]]) -> list[Any]:
    return await (await collection.aggregate(pipeline)).to_list(None)


async def stats(
    collection: AsyncCollection, q: AuditQuery, bucket: str = "day", top: int = 10
) -> dict[str, Any]:
    """Counts per time bucket, IdP, outcome and event; top failure reasons and rooms;
    distinct users ((idp, subject) pairs). One pipeline: the range is read once, then
    ``$facet`` counts it every way."""
    one = {"$sum": 1}

    def top_of(field_name: str, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        cond = {field_name: {"$exists": True, "$ne": None}, **(extra or {})}
        return [
            {"$match": cond},
            {"$group": {"_id": f"${field_name}", "n": one}},
            {"$sort": {"n": -1, "_id": 1}},
            {"$limit": top},
        ]

    date = {"$dateToString": {"format": BUCKETS[bucket], "date": "$time"}}
    facets = {
        "buckets": [{"$group": {"_id": date, "n": one}}, {"$sort": {"_id": 1}}],
        "idp": [{"$group": {"_id": "$idp", "n": one}}],
        "outcome": [{"$group": {"_id": "$outcome", "n": one}}],
        "event": [{"$group": {"_id": "$event", "n": one}}],
        "reasons": top_of("reason", {"outcome": "failure"}),
        "rooms": top_of("room"),
        "users": [
            {"$match": {"subject": {"$exists": True, "$ne": None}}},
            {"$group": {"_id": {"idp": "$idp", "subject": "$subject"}}},
            {"$count": "n"},
        ],
    }
    fields = ("time", "idp", "outcome", "event", "reason", "room", "subject")
    pipeline = [
        {"$match": mongo_filter(q)},
        {"$project": {"_id": 0, **dict.fromkeys(fields, 1)}},
        {"$facet": facets},
    ]
    answer = await _aggregate(collection, pipeline)
    results = answer[0] if answer else {name: [] for name in facets}

    def as_map(rows: list[dict[str, Any]]) -> dict[str, int]:
        return {str(r["_id"]) if r["_id"] is not None else "(none)": r["n"] for r in rows}

    outcomes = as_map(results["outcome"])
    return {
        "since": iso(q.since),
        "until": iso(q.until),
        "bucket": bucket,
        "total": sum(outcomes.values()),
        "per_bucket": [{"time": r["_id"], "count": r["n"]} for r in results["buckets"]],
        "per_idp": as_map(results["idp"]),
        "per_outcome": outcomes,
        "per_event": as_map(results["event"]),
        "top_failure_reasons": [{"reason": r["_id"], "count": r["n"]} for r in results["reasons"]],
        "top_rooms": [{"room": r["_id"], "count": r["n"]} for r in results["rooms"]],
        "distinct_users": results["users"][0]["n"] if results["users"] else 0,
    }


# ---- output --------------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An event as plain JSON: datetimes as ISO 8601 UTC strings."""

    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return iso(value)
        if isinstance(value, Mapping):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    return {k: convert(v) for k, v in doc.items()}


def ndjson_lines(docs: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(to_json(d), separators=(",", ":")) + "\n" for d in docs)


def csv_header() -> str:
    out = io.StringIO()
    csv.writer(out).writerow(CSV_COLUMNS)
    return out.getvalue()


def csv_rows(docs: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for doc in docs:
        plain = to_json(doc)
        row = []
        for column in CSV_COLUMNS:
            value = plain.get(column)
            if isinstance(value, list):
                value = " ".join(str(v) for v in value)
            elif isinstance(value, dict):
                value = json.dumps(value, separators=(",", ":"))
            if isinstance(value, str) and value[:1] in FORMULA_START:
                value = "'" + value  # a spreadsheet must not run a user agent as a formula
            row.append("" if value is None else value)
        writer.writerow(row)
    return out.getvalue()
