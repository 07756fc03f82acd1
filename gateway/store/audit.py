"""The audit log: one document per step of every sign-in, durable through MongoDB outages.

Writing an event must never break or stall a sign-in. ``write`` hands the event to one
writer task, which groups waiting events into one ``insert_many`` (group commit). With a
spool directory (the default) the request does not wait: the event is first appended to this
process's journal (``gateway/store/journal.py``, local disk, what a crash leaves there is
replayed at the next start), so the answer goes out after a local write and the insert
follows behind it, lingering a few milliseconds to take more events at once. Without a spool,
or with ``audit.wait_for_store``, ``write`` waits a short, bounded time for the event to be
stored, as before. When MongoDB fails or times out the batch goes
to the local spool (``gateway/store/spool.py``, fsync'd) and every later event follows it
there until a replayer task has copied the spool back into MongoDB in order. Event ids are
fixed before the first attempt, so an insert that timed out but landed anyway is not
duplicated by the replay (duplicate keys are ignored). ``close`` flushes everything.

The callers build events from fixed fields only; tokens, codes and secrets are never passed in,
and keys that look like one are dropped here as a second line of defence. Every field is
bounded (``gateway/store/audit_bounds.py``), and no one event can stop the pipeline: an event
MongoDB refuses for what it is (too large, not encodable, a write error that is not about
the connection) is set aside (a log line naming its id and event, the
``jog_audit_events_refused`` counter, and the event itself appended to
``refused.ndjson`` in the spool directory) while the rest of its batch is stored, and the
writer and replayer tasks survive any error.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bson import json_util
from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from gateway.store.audit_bounds import bounded
from gateway.store.indexes import index_names
from gateway.store.journal import Journal
from gateway.store.journal import encode as journal_record
from gateway.store.spool import Spool, SpoolFull, encode_line
from gateway.store.tasks import stop, stop_requested

if TYPE_CHECKING:
    from gateway.config import Audit as AuditSettings
    from gateway.store.audit_query import AuditReader

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

EVENTS = (
    "flow_started",
    "idp_choice_confirm",
    "login_succeeded",
    "login_failed",
    "token_minted",
    "room_refused",
    "session_expired",
    "logout",
    "backchannel_logout",
    "admin_query",
    "code_issued",
    "token_issued",
    "token_refreshed",
    "token_refused",
    "admin_session_ended",
    "session_revalidated",
    "session_revalidation_failed",
    "frontchannel_logout",
)
OUTCOMES = ("success", "failure", "info")

# Every filter of the query API is backed by one of these (field, time) indexes.
INDEXED_FIELDS = (
    "event",
    "outcome",
    "idp",
    "subject",
    "email",
    "room",
    "tenant",
    "client_ip",
    "reason",
    "request_id",
    "username",
    "session_hash",
    "flow_hash",
)
RETENTION_INDEX = "audit_retention"
FORBIDDEN_KEYS = frozenset(
    {"token", "id_token", "access_token", "refresh_token", "code", "state", "secret", "password"}
)
DUPLICATE_KEY = 11000
INDEXES = [IndexModel([("time", DESCENDING), ("_id", DESCENDING)], name="time_id")]
# (field, time, _id): an equality filter is answered in (time, _id) order, no sort
INDEXES += [
    IndexModel([(f, ASCENDING), ("time", DESCENDING), ("_id", DESCENDING)], name=f"{f}_time_id")
    for f in INDEXED_FIELDS
]
REFUSED_FILE = "refused.ndjson"
REFUSED_MAX_BYTES = 64 * 1024 * 1024
# What the driver raises for an event it cannot encode (DocumentTooLarge is an
# InvalidDocument), and the server's codes for a document it refuses for itself: BadValue,
# InvalidBSON, DollarPrefixedFieldName, DocumentValidationFailure, BSONObjectTooLarge and
# the two "object to insert too large". Anything else is taken as the store's problem.
UNENCODABLE = (InvalidDocument, UnicodeError, OverflowError, TypeError, ValueError)
REFUSAL_CODES = frozenset({2, 22, 52, 121, 10334, 17419, 17420})


def _is_only_duplicates(exc: BulkWriteError) -> bool:
    errors = exc.details.get("writeErrors", [])
    return bool(errors) and all(e.get("code") == DUPLICATE_KEY for e in errors)


def _refuses_event(exc: BaseException) -> bool:
    """Whether ``exc`` says an event itself cannot be stored (set it aside), rather than
    that the store cannot take writes now (spool the batch and try again)."""
    if isinstance(exc, UNENCODABLE):
        return True
    if isinstance(exc, BulkWriteError):
        if exc.details.get("writeConcernErrors"):
            return False
        codes = {e.get("code") for e in exc.details.get("writeErrors", [])}
        return bool(codes - {DUPLICATE_KEY}) and codes <= REFUSAL_CODES | {DUPLICATE_KEY}
    if isinstance(exc, OperationFailure):
        return exc.code in REFUSAL_CODES
    return False


class AuditLog:
    def __init__(self, collection: AsyncCollection, write_timeout: float = 2.0) -> None:
        self.collection = collection
        self._reader: AuditReader | None = None
        self.write_timeout = write_timeout
        self.batch_size = 500
        self.replay_interval = 5.0
        self.retention_days: int | None = None
        self.spool: Spool | None = None
        # False: answers wait for a local journal write only (needs the spool directory).
        self.wait_for_store = True
        self.journal: Journal | None = None  # open while events are journaled
        self.linger = 0.005  # seconds a journaled batch waits for more events
        self._segment: dict[str, int] = {}  # event id -> its journal segment
        self._enqueued = 0  # events handed over, ever
        self._stored = 0  # of those, the ones MongoDB or the spool took (or that were lost)
        self._settling: list[tuple[int, asyncio.Future[None]]] = []
        # Counters for /metrics and tests.
        self.write_failures = 0  # MongoDB writes that failed or timed out
        self.dropped = 0  # events lost: no spool configured, or the spool full
        self.replayed = 0  # events copied from the spool into MongoDB
        self.refused = 0  # events MongoDB refused for what they are: set aside
        self._queue: list[dict[str, Any]] = []
        self._waiters: dict[str, asyncio.Future[bool]] = {}
        self._inflight: list[dict[str, Any]] = []
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None  # set when nothing is queued or in flight
        self._writer: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._spool_lock: asyncio.Lock | None = None
        self._replay_lock: asyncio.Lock | None = None
        self._spooling = False  # MongoDB failed: events go to the spool until it is replayed
        self._counter = 0

    @property
    def reader(self) -> AuditReader:
        """Queries over this log (admin API, CLI, web view)."""
        from gateway.store.audit_query import AuditReader  # it imports this module

        if self._reader is None:
            self._reader = AuditReader(self.collection)
        return self._reader

    def configure(self, settings: AuditSettings) -> None:
        """Apply the ``audit:`` settings (before the first write)."""
        self.write_timeout = settings.write_timeout_seconds
        self.batch_size = settings.batch_size
        self.replay_interval = settings.replay_interval_seconds
        self.retention_days = settings.retention_days
        self.wait_for_store = settings.wait_for_store
        if settings.spool_dir:
            self.spool = Spool(Path(settings.spool_dir), settings.spool_max_bytes)

    # ---- state for /metrics ----------------------------------------------------------------

    @property
    def spool_depth(self) -> int:
        """Events waiting in the local spool for MongoDB."""
        return self.spool.depth if self.spool else 0

    @property
    def queued(self) -> int:
        """Events handed to the writer and not yet stored anywhere."""
        return len(self._queue) + len(self._inflight)

    # ---- indexes ---------------------------------------------------------------------------

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes(INDEXES)
        await self._ensure_retention()

    def expected_indexes(self) -> dict[str, tuple[str, ...]]:
        names = index_names(INDEXES)
        retention = (RETENTION_INDEX,) if self.retention_days is not None else ()
        return {self.collection.name: names + retention}

    async def _ensure_retention(self) -> None:
        existing = await self.collection.index_information()
        current = existing.get(RETENTION_INDEX)
        if self.retention_days is None:
            if current is not None:
                await self.collection.drop_index(RETENTION_INDEX)
            return
        seconds = self.retention_days * 86400
        if current is None:
            await self.collection.create_index(
                [("time", ASCENDING)], name=RETENTION_INDEX, expireAfterSeconds=seconds
            )
        elif current.get("expireAfterSeconds") != seconds:
            try:
                await self.collection.database.command(
                    "collMod",
                    self.collection.name,
                    index={"name": RETENTION_INDEX, "expireAfterSeconds": seconds},
                )
            except OperationFailure:
                await self.collection.drop_index(RETENTION_INDEX)
                await self.collection.create_index(
                    [("time", ASCENDING)], name=RETENTION_INDEX, expireAfterSeconds=seconds
                )

    # ---- writing ---------------------------------------------------------------------------

    def new_id(self, time: datetime) -> str:
        """Sortable, unique event id: event time (ms), a per-process counter, randomness."""
        self._counter = (self._counter + 1) % 0x1000000
        ms = int(time.timestamp() * 1000)
        return f"{ms:012x}{self._counter:06x}{secrets.token_hex(7)}"

    def prepare(self, event: dict[str, Any]) -> dict[str, Any]:
        """The stored document: id, schema version, normalised fields, no empty values."""
        time = event.get("time") or datetime.now(UTC)
        time = time.astimezone(UTC).replace(microsecond=time.microsecond // 1000 * 1000)
        doc: dict[str, Any] = {"_id": event.get("_id") or self.new_id(time), "v": SCHEMA_VERSION}
        for key, value in event.items():
            if value is None or key in ("_id", "v"):
                continue
            if key in FORBIDDEN_KEYS:
                log.error("audit: dropped field %r from event %s", key, event.get("event"))
                continue
            doc[key] = value
        doc["time"] = time
        doc = bounded(doc)
        expiry = doc.get("token_expires_at")
        if isinstance(expiry, int | float) and not isinstance(expiry, bool):
            doc["token_expires_at"] = datetime.fromtimestamp(expiry, UTC)  # dates, not numbers
        for key in ("email", "room", "tenant"):
            if isinstance(doc.get(key), str):
                doc[key] = doc[key].strip().lower()
        return doc

    def enqueue(self, event: dict[str, Any]) -> None:
        """Queue one event without waiting for it: the next :meth:`write` of the same request
        (or the writer on its own) stores it, in the same insert when it is still queued."""
        doc = self.prepare(event)
        self._keep(doc)
        self._hand_over(doc)

    async def write(self, event: dict[str, Any]) -> bool:
        """Store one event; True once it is journaled (see the module docstring) or in
        MongoDB or the spool, False after the bound."""
        doc = self.prepare(event)
        if self._keep(doc):
            self._hand_over(doc)
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiters[doc["_id"]] = future
        self._hand_over(doc)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.write_timeout * 2 + 1)
        except TimeoutError:
            log.error("audit write of %s not confirmed in time; still queued", doc["event"])
            return False

    def _keep(self, doc: dict[str, Any]) -> bool:
        """Journal the event when the journal is open; False when the caller must wait."""
        if self.journal is None:
            return False
        try:
            segment = self.journal.append(journal_record(doc))
        except OSError as exc:
            log.error("audit: journal write failed (%s); waiting for MongoDB instead", exc)
            return False
        except UNENCODABLE:
            return False  # not encodable: the writer sets it aside (see _insert)
        self._segment[doc["_id"]] = segment
        return True

    def _hand_over(self, doc: dict[str, Any]) -> None:
        self._queue.append(doc)
        self._enqueued += 1
        self._start_writer()

    def _done(self, docs: list[dict[str, Any]]) -> None:
        """These events are stored (or lost, and logged): release journal and waiters."""
        if self._segment:  # some events were journaled
            counts = [0, 0]
            for doc in docs:
                segment = self._segment.pop(doc["_id"], None)
                if segment is not None:
                    counts[segment] += 1
            for segment, count in enumerate(counts):
                if count and self.journal is not None:
                    self.journal.stored(segment, count)
        self._stored += len(docs)
        still = []
        for target, future in self._settling:
            if self._stored >= target:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._settling = still

    async def settle(self, timeout: float | None = None) -> bool:
        """Wait until every event handed over before this call is stored (the audit
        queries call this first, so an operator sees every answered request); False when
        ``timeout`` (default: the write bound) passes first."""
        target = self._enqueued
        if self._stored >= target:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settling.append((target, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout or self.write_timeout * 2 + 1)
            return True
        except TimeoutError:
            return False

    def _loop_state(self) -> None:
        """Events and locks belong to one event loop: made on first use, dropped by close()."""
        if self._wake is None or self._idle is None:
            self._wake, self._idle = asyncio.Event(), asyncio.Event()
        self._spool_lock = self._spool_lock or asyncio.Lock()
        self._replay_lock = self._replay_lock or asyncio.Lock()

    def _start_writer(self) -> None:
        self._loop_state()
        assert self._wake is not None and self._idle is not None
        self._idle.clear()
        self._wake.set()
        if self._writer is None or self._writer.done():
            # A fresh context: the writer outlives the request that started it, and its log
            # lines must not carry that request's id.
            self._writer = asyncio.get_running_loop().create_task(
                self._run_writer(), context=contextvars.Context()
            )

    async def _run_writer(self) -> None:
        assert self._wake is not None and self._idle is not None
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.journal is not None and len(self._queue) < self.batch_size:
                await asyncio.sleep(self.linger)  # nobody waits: let more events join
            self._inflight = self._queue[: self.batch_size]
            del self._queue[: len(self._inflight)]
            try:
                ok = await self._persist(self._inflight)
            except Exception:  # never let one batch end the writer (and every later event)
                stop_requested()
                log.exception("audit: writing %d event(s) failed", len(self._inflight))
                self.dropped += len(self._inflight)
                ok = False
            for doc in self._inflight:
                waiter = self._waiters.pop(doc["_id"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(ok)
            self._done(self._inflight)
            self._inflight = []

    async def _insert(self, docs: list[dict[str, Any]]) -> None:
        """insert_many that treats already-present ids as success (idempotent replay).
        An event refused for what it is (:func:`_refuses_event`) is set aside and the
        others are stored one by one; any other failure is raised (the batch is spooled
        and tried again: the store, not the event, is the problem)."""
        try:
            await self.collection.insert_many(docs, ordered=False)
            return
        except BulkWriteError as exc:
            if _is_only_duplicates(exc):
                return
            if not _refuses_event(exc):
                raise
        except (PyMongoError, *UNENCODABLE) as exc:
            if not _refuses_event(exc):
                raise
        for doc in docs:  # find the culprit(s): every other event is stored
            try:
                await self.collection.insert_one(doc)
            except (PyMongoError, *UNENCODABLE) as exc:
                if getattr(exc, "code", None) == DUPLICATE_KEY:
                    continue
                if not _refuses_event(exc):
                    raise
                await self._set_aside(doc, exc)

    async def _set_aside(self, doc: dict[str, Any], exc: BaseException) -> None:
        """Keep an event MongoDB will never take out of the way of the others."""
        self.refused += 1
        log.error(
            "audit: MongoDB refused event %s (%s, %s); set aside",
            doc.get("_id"),
            doc.get("event"),
            type(exc).__name__,
        )
        if self.spool is None or self.spool.path is None:
            return
        path = self.spool.path.parent / REFUSED_FILE
        try:
            await asyncio.to_thread(_append_refused, path, doc)
        except (OSError, TypeError, ValueError) as err:
            log.error("audit: cannot keep refused event %s (%s)", doc.get("_id"), err)

    async def _persist(self, docs: list[dict[str, Any]]) -> bool:
        if not self._spooling or self.spool is None:
            try:
                await asyncio.wait_for(self._insert(docs), self.write_timeout)
                return True
            except (PyMongoError, TimeoutError) as exc:
                self.write_failures += 1
                log.error(
                    "audit: MongoDB write of %d event(s) failed (%s); spooling",
                    len(docs),
                    type(exc).__name__,
                )
                self._spooling = self.spool is not None
        return await self._to_spool(docs)

    async def _to_spool(self, docs: list[dict[str, Any]]) -> bool:
        if self.spool is None:
            self.dropped += len(docs)
            log.error("audit: no spool configured; %d event(s) lost", len(docs))
            return False
        assert self._spool_lock is not None
        async with self._spool_lock:
            try:
                try:
                    await asyncio.to_thread(self.spool.append, docs)
                except (TypeError, ValueError, OverflowError):
                    # One event cannot be written as JSON: set it aside, spool the others.
                    keep = []
                    for doc in docs:
                        try:
                            encode_line(doc)
                            keep.append(doc)
                        except (TypeError, ValueError, OverflowError) as exc:
                            await self._set_aside(doc, exc)
                    await asyncio.to_thread(self.spool.append, keep)
            except (SpoolFull, OSError) as exc:
                self.dropped += len(docs)
                log.error("audit: %s", exc)
                if self.spool.depth == 0:
                    self._spooling = False
                return False
        self._start_replayer()
        return True

    # ---- replay ----------------------------------------------------------------------------

    def _start_replayer(self) -> None:
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(
                self._run_replayer(), context=contextvars.Context()
            )

    async def _run_replayer(self) -> None:
        while self.spool_depth > 0:
            try:
                await self.replay_once()
            except (PyMongoError, TimeoutError, OSError) as exc:
                stop_requested()
                log.warning("audit: spool replay waits for MongoDB (%s)", type(exc).__name__)
                await asyncio.sleep(self.replay_interval)
            except Exception:  # a bug must not end the replay for good: log, wait, retry
                stop_requested()
                log.exception("audit: spool replay failed")
                await asyncio.sleep(self.replay_interval)

    async def replay_once(self) -> int:
        """Copy the next batch of spooled events into MongoDB; returns how many."""
        if self.spool is None:
            return 0
        self._loop_state()
        assert self._spool_lock is not None and self._replay_lock is not None
        async with self._replay_lock:  # one replay at a time: a batch is committed once
            async with self._spool_lock:
                docs, end, lines = await asyncio.to_thread(self.spool.read_batch, self.batch_size)
            if docs:
                await asyncio.wait_for(self._insert(docs), max(self.write_timeout, 1.0) * 5)
            async with self._spool_lock:
                await asyncio.to_thread(self.spool.commit, end, lines)
                self.replayed += len(docs)
                if self.spool.depth == 0:
                    self._spooling = False
                    log.info("audit: spool replayed, writing to MongoDB again")
            return len(docs)

    async def start(self) -> None:
        """Open the spool and the journal, and replay what an earlier run left in them
        (never raises; without a usable spool, writes wait for MongoDB)."""
        if self.spool is None:
            return
        try:
            await asyncio.to_thread(self.spool.open)
        except OSError as exc:
            log.error("audit: cannot open the spool in %s: %s", self.spool.directory, exc)
            return
        if not self.wait_for_store and self.journal is None and self.spool.path is not None:
            journal = Journal(self.spool.path)
            try:
                leftover = journal.leftover()
                if leftover:  # into the spool (fsync'd) before open() empties the journal
                    log.warning("audit: %d journaled event(s) to replay", len(leftover))
                    await asyncio.to_thread(self.spool.append, leftover)
                journal.open()
                self.journal = journal
            except (OSError, SpoolFull) as exc:
                log.error("audit: no journal (%s); writes wait for MongoDB", exc)
        for name, count in self.spool.adopted_at_open:
            log.warning("audit: adopted %d event(s) from %s (its process is gone)", count, name)
        if self.spool.depth:
            log.warning("audit: %d spooled event(s) to replay", self.spool.depth)
            self._spooling = True
            self._loop_state()
            self._start_replayer()

    async def adopt_orphans(self) -> int:
        """Take over spool files whose process is gone (called periodically); events."""
        if self.spool is None or self.spool.path is None:
            return 0
        self._loop_state()
        assert self._spool_lock is not None
        async with self._spool_lock:
            adopted = await asyncio.to_thread(self.spool.adopt_orphans)
        for name, count in adopted:
            log.warning("audit: adopted %d event(s) from %s (its process is gone)", count, name)
        if adopted:
            self._spooling = True
            self._start_replayer()
        return sum(count for _, count in adopted)

    # ---- shutdown --------------------------------------------------------------------------

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event is stored and the spool is replayed (or ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self.queued and self._idle is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        while self.spool_depth and loop.time() < deadline:
            bound = min(deadline - loop.time(), max(self.write_timeout, 0.5) * 2)
            try:
                await asyncio.wait_for(self.replay_once(), max(0.1, bound))
            except (PyMongoError, TimeoutError, OSError):
                break
        return not self.queued and not self.spool_depth

    async def close(self, timeout: float = 10.0) -> None:
        """Flush, stop the tasks, and keep whatever MongoDB did not take in the spool."""
        await self.flush(timeout)
        for task in (self._writer, self._replayer):
            await stop(task)
        leftover = self._inflight + self._queue
        self._inflight, self._queue = [], []
        if leftover:
            self._loop_state()
            await self._to_spool(leftover)
            self._done(leftover)
            await stop(self._replayer)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()
        for _, future in self._settling:
            if not future.done():
                future.cancel()
        self._settling = []
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        self._writer = self._replayer = None
        self._wake = self._idle = None
        self._spool_lock = self._replay_lock = None
        if self.spool is not None:
            self.spool.close()


def _append_refused(path: Path, doc: dict[str, Any]) -> None:
    """One line of extended JSON per refused event (fsync'd), up to ``REFUSED_MAX_BYTES``."""
    line = json_util.dumps(doc, default=repr).encode("utf-8", "backslashreplace") + b"\n"
    size = path.stat().st_size if path.exists() else 0
    if size + len(line) > REFUSED_MAX_BYTES:
        raise OSError(f"{path} is full ({size} bytes)")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
