"""Which of the gateway's indexes a collection has: checked, never remembered.

A store that was restarted empty (or whose collections were dropped) loses every index
without the gateway noticing a failure: flows and sessions would then never expire and the
audit queries would scan. The maintenance loop and ``/readyz`` therefore ask the server which
indexes exist (one ``listIndexes`` per collection) and compare the names with the ones the
stores declare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase


def index_names(models: Iterable[IndexModel]) -> tuple[str, ...]:
    """The names the server gives these indexes (PyMongo names them before sending)."""
    return tuple(str(m.document["name"]) for m in models)


async def missing_indexes(db: AsyncDatabase, expected: Mapping[str, Iterable[str]]) -> list[str]:
    """``collection.index`` for every expected index the server does not have (a collection
    that does not exist has none)."""
    missing: list[str] = []
    for collection, names in expected.items():
        cursor = await db[collection].list_indexes()
        present = {ix["name"] async for ix in cursor}
        missing += [f"{collection}.{n}" for n in names if n not in present]
    return missing
