"""Exact keyset paging on the real MongoDB-wire server (SecantusDB by default).

Ties (many events in one millisecond) and bounds equal to an event's time are the cases where
a range-only cursor or a ``$gte`` bound over a (field, time) index loses events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio

from gateway.store import Store
from gateway.store import audit_query as aq
from tests.support import auditdata

pytestmark = pytest.mark.asyncio

SAME_MS = auditdata.START + timedelta(hours=5)
# 40 spread events, then 250 in one and the same millisecond, then 40 more
DATA = (
    list(auditdata.documents(40))
    + list(auditdata.documents(250, SAME_MS, timedelta(0), 1000))
    + list(auditdata.documents(40, SAME_MS + timedelta(seconds=1), first=2000))
)


@pytest_asyncio.fixture
async def store(mongo_uri: str, db_name: str) -> AsyncIterator[Store]:
    s = Store.connect(mongo_uri, db_name, 5)
    await s.audit.ensure_indexes()
    await s.audit.collection.insert_many([dict(d) for d in DATA])
    try:
        yield s
    finally:
        await s.client.drop_database(db_name)
        await s.close()


def ordered(docs: list[dict], order: str) -> list[str]:
    key = sorted(docs, key=lambda d: (d["time"], d["_id"]), reverse=order == "desc")
    return [d["_id"] for d in key]


async def all_pages(store: Store, params: dict[str, str], limit: int = 7) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page_params = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        q = aq.parse_query(page_params, now=auditdata.START + timedelta(days=30))
        docs, cursor = await aq.page(store.audit.collection, q)
        seen += [d["_id"] for d in docs]
        if cursor is None:
            return seen


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_ties_are_paged_exactly_in_both_directions(store: Store, order: str) -> None:
    assert await all_pages(store, {"order": order}) == ordered(DATA, order)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_ties_under_a_field_filter(store: Store, order: str) -> None:
    expected = [d for d in DATA if d["event"] == "token_minted"]
    got = await all_pages(store, {"order": order, "event": "token_minted"}, limit=5)
    assert got == ordered(expected, order)


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("event", ["token_minted", "token_minted,login_failed", None])
async def test_bounds_equal_to_an_event_time(store: Store, order: str, event: str | None) -> None:
    """since is inclusive and until exclusive, whatever the filter and the direction."""
    minted = [d for d in DATA if d["event"] == "token_minted"]
    since, until = minted[2]["time"], minted[-3]["time"]
    params = {"order": order, "since": aq.iso(since), "until": aq.iso(until)}
    if event:
        params["event"] = event
    names = event.split(",") if event else None
    expected = [
        d for d in DATA if since <= d["time"] < until and (names is None or d["event"] in names)
    ]
    assert minted[2] in expected
    assert await all_pages(store, params) == ordered(expected, order)
    # and the tie millisecond itself as both bounds of a one-millisecond window
    one_ms = {
        "order": order,
        "since": aq.iso(SAME_MS),
        "until": aq.iso(SAME_MS + timedelta(milliseconds=1)),
    }
    assert await all_pages(store, one_ms) == ordered(
        [d for d in DATA if d["time"] == SAME_MS], order
    )
