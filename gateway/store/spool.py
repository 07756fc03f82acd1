"""The local audit spool: where events wait while MongoDB cannot take them.

One append-only file of JSON lines (MongoDB extended JSON, so datetimes survive), fsync'd
after every append, bounded in size. Replay reads it in order from a committed offset kept in
a small side file, so a crash during replay re-sends at most one batch; the events' fixed
``_id`` makes that re-send harmless (duplicate keys are ignored). When everything is replayed
the file is truncated.

Each process holds an exclusive ``flock`` on its own spool file (``audit-<n>.spool``, the
first free ``n``), so several gateway processes can share one directory. Any other spool
file whose lock is free (its process is gone: a crash, or a restart with fewer processes)
is adopted: its pending events are appended to this process's file (fsync'd) and the
orphan emptied, so every file in the directory is replayed, once, whatever the process
count. An orphan's journal segments (``gateway/store/journal.py``: events its process had
handed over but not yet stored) are adopted the same way. A crash between the two steps
can only repeat events, which the fixed ``_id`` turns into no-ops in MongoDB.

All methods are blocking file I/O: ``AuditLog`` calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import fcntl
import os
from datetime import UTC
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import JSONOptions

from gateway.store.journal import read_records, segment_paths

MAX_FILES = 64
READ_OPTIONS = JSONOptions(tz_aware=True, tzinfo=UTC)


def _line(doc: dict[str, Any]) -> bytes:
    return json_util.dumps(doc).encode("utf-8") + b"\n"


def encode_line(doc: dict[str, Any]) -> bytes:
    """The spool line of one event (TypeError or ValueError when it cannot be one)."""
    return _line(doc)


class SpoolFull(Exception):
    """The spool reached its size limit: the event cannot be kept."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.path: Path | None = None
        self._lock_fd: int | None = None
        self._offset = 0  # bytes of the file already replayed
        self.depth = 0  # events in the file not yet replayed
        self.adopted_at_open: list[tuple[str, int]] = []

    # ---- ownership -------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the first free spool file in the directory and count what it still holds."""
        if self.path is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for n in range(MAX_FILES):
            lock_path = self.directory / f"audit-{n}.lock"
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock_fd = fd
            self.path = self.directory / f"audit-{n}.spool"
            break
        else:
            raise OSError(f"all {MAX_FILES} audit spool files in {self.directory} are locked")
        self._offset = self._read_offset()
        self.depth = sum(1 for _ in self._lines_from(self._offset))
        self.adopted_at_open = self.adopt_orphans()

    def adopt_orphans(self) -> list[tuple[str, int]]:
        """Move the pending events of every unlocked spool file into ours; returns
        (file name, events) for each file adopted."""
        if self.path is None:
            return []
        adopted = []
        for lock_path in sorted(self.directory.glob("audit-*.lock")):
            other = lock_path.with_suffix(".spool")
            if other == self.path:
                continue
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process owns it
                orphan = Spool(self.directory, self.max_bytes)
                orphan.path = other
                orphan._offset = orphan._read_offset()
                lines = list(orphan._lines_from(orphan._offset))
                segments = segment_paths(other)  # events its process had not yet stored
                for segment in segments:
                    lines += [_line(doc) for doc in read_records(segment)]
                if lines:
                    self._append_raw(b"".join(lines), len(lines))
                    adopted.append((other.name, len(lines)))
                for emptied in (other, *segments):  # only after ours is fsync'd
                    if emptied.exists():
                        with emptied.open("wb") as f:
                            os.fsync(f.fileno())
                other.with_suffix(".offset").unlink(missing_ok=True)
            finally:
                os.close(fd)
        return adopted

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.path = None

    @property
    def _offset_path(self) -> Path:
        assert self.path is not None
        return self.path.with_suffix(".offset")

    def _read_offset(self) -> int:
        try:
            value = int(self._offset_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0
        size = self.path.stat().st_size if self.path and self.path.exists() else 0
        return value if 0 <= value <= size else 0

    # ---- writing ---------------------------------------------------------------------------

    def append(self, docs: list[dict[str, Any]]) -> None:
        """Append events durably (one write, one fsync); SpoolFull when over the limit."""
        self.open()
        assert self.path is not None
        data = b"".join(_line(d) for d in docs)
        size = self.path.stat().st_size if self.path.exists() else 0
        if size + len(data) > self.max_bytes:
            raise SpoolFull(
                f"audit spool {self.path} is full ({size} of {self.max_bytes} bytes): "
                f"{len(docs)} event(s) dropped; restore MongoDB or raise audit.spool_max_bytes"
            )
        self._append_raw(data, len(docs))

    def _append_raw(self, data: bytes, count: int) -> None:
        assert self.path is not None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.depth += count

    # ---- replay ----------------------------------------------------------------------------

    def _lines_from(self, offset: int) -> Any:
        if self.path is None or not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(offset)
            for line in f:
                if line.endswith(b"\n"):  # a torn last line (crash mid-write) is not an event
                    yield line

    def read_batch(self, limit: int) -> tuple[list[dict[str, Any]], int, int]:
        """Up to ``limit`` events from the committed offset, the offset after them, and the
        number of lines consumed (an unreadable line is consumed but not returned)."""
        self.open()
        docs: list[dict[str, Any]] = []
        end = self._offset
        lines = 0
        for line in self._lines_from(self._offset):
            end += len(line)
            lines += 1
            try:
                docs.append(json_util.loads(line, json_options=READ_OPTIONS))
            except ValueError:
                continue  # an unreadable line cannot be replayed; skip past it
            if len(docs) >= limit:
                break
        return docs, end, lines

    def commit(self, offset: int, count: int) -> None:
        """Record that everything before ``offset`` is in MongoDB; truncate when all is."""
        assert self.path is not None
        self._offset = offset
        self.depth = max(0, self.depth - count)
        size = self.path.stat().st_size if self.path.exists() else 0
        if offset >= size:
            with self.path.open("wb") as f:
                os.fsync(f.fileno())
            self._offset = 0
            self.depth = 0
            self._offset_path.unlink(missing_ok=True)
            return
        tmp = self._offset_path.with_suffix(".offset.tmp")
        with tmp.open("w") as f:
            f.write(str(offset))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._offset_path)
