"""A known, deterministic audit data set for query, stats, export and benchmark checks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import yaml
from pymongo.errors import BulkWriteError

from gateway.store.audit import AuditLog

IDPS = ("corp", "social")
ROOMS = ("standup", "retro", "allhands", "sales", "board")
REASONS = ("state_reused", "id_token_invalid", "policy_denied", "idp_error")
START = datetime(2025, 3, 1, tzinfo=UTC)


def event(i: int, start: datetime = START, step: timedelta = timedelta(minutes=7)) -> dict:
    """Event number ``i``: a pattern of flows, logins, failures and tokens."""
    kind = i % 5
    user = i % 13
    doc: dict[str, Any] = {
        "time": start + step * i,
        "idp": IDPS[i % 2],
        "issuer": f"https://{IDPS[i % 2]}.example",
        "client_ip": f"10.0.{i % 3}.{i % 7}",
        "user_agent": "bench/1.0",
        "request_id": f"req{i:08d}",
        "room": ROOMS[i % len(ROOMS)],
    }
    if kind == 0:
        doc |= {"event": "flow_started", "outcome": "success"}
    elif kind == 1:
        doc |= {"event": "login_failed", "outcome": "failure", "reason": REASONS[i % 4]}
        doc["detail"] = f"{doc['reason']} detail"
    else:
        doc |= {
            "event": "login_succeeded" if kind == 2 else "token_minted",
            "outcome": "success",
            "subject": f"user{user}-sub",
            "username": f"user{user}",
            "name": f"User Number {user}",
            "email": f"User{user}@Example.org",
            "email_verified": user % 2 == 0,
            "groups": ["staff"] if user % 3 else ["staff", "admins"],
        }
        if kind == 3:
            doc["tenant"] = "acme" if i % 2 else None
    return doc


def documents(
    count: int, start: datetime = START, step: timedelta = timedelta(minutes=7), first: int = 0
) -> Iterator[dict]:
    """Stored documents (ids, schema version, normalised) for events first..first+count."""
    log = AuditLog(None)  # type: ignore[arg-type]  # prepare() needs no collection
    for i in range(first, first + count):
        yield log.prepare(event(i, start, step))


def cli_settings(path: Path, uri: str, db: str) -> Path:
    """A settings file for the audit CLI against ``uri``/``db`` (the test and the export
    benchmark)."""
    data = {
        "public_url": "https://meet.example.com",
        "mongodb": {"uri": uri, "database": db},
        "cookies": {"secret": "c" * 40},
        "jitsi": {
            "base_url": "https://meet.example.com",
            "app_id": "app",
            "domain": "meet.example.com",
            "app_secret": "s" * 40,
        },
        "idps": [
            {
                "id": "corp",
                "adapter": "generic",
                "issuer": "https://corp.example",
                "client_id": "c",
                "client_secret": "x",
            }
        ],
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


async def load(collection: Any, docs: list[dict[str, Any]]) -> None:
    """Insert test events whose ids are fixed, idempotent under driver retries: on a busy
    machine the store may apply an ``insert_many`` whose answer the driver then misses, and
    the driver's retry meets the ids it already wrote (the embedded store does not
    deduplicate retryable writes). Only duplicates of our own ids are forgiven. One 60 s
    deadline instead of the gateway's socket timeout: hundreds of events with every audit
    index in place can take longer than 2 s there."""
    with pymongo.timeout(60):
        try:
            await collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != 11000 for e in errors):
                raise
            ids = [d["_id"] for d in docs]
            assert await collection.count_documents({"_id": {"$in": ids}}) == len(ids)
