"""The audit journal: events a request has handed over, kept on local disk until they are
stored, so an answer need not wait for MongoDB and a crashed gateway loses none of them.

Two segment files next to the process's spool file (``audit-<n>.journal-a`` and ``-b``),
appended with one ``write`` per event and no fsync: the kernel keeps them through a crash
of the gateway process (not of the machine; the spool, fsync'd, is for MongoDB outages).
A record is the event's BSON document (length-prefixed, encoded in C: 3 microseconds for a
token_minted event here, against 20 for the spool's extended JSON).
Events are written to the current segment; once MongoDB (or the spool) has taken every
event of a segment it is truncated. When the current segment passes ``rotate_bytes`` and the
other one is empty, writing moves there, so under steady load neither grows without bound.

What a segment still holds at start-up was not confirmed stored: ``AuditLog.start`` moves it
into the spool, whose replay inserts it (already-present ids are ignored). Blocking file I/O
of a few microseconds, called from the event loop.
"""

from __future__ import annotations

import os
from datetime import UTC
from pathlib import Path
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.errors import InvalidBSON

ROTATE_BYTES = 1024 * 1024
SUFFIXES = (".journal-a", ".journal-b")
READ_OPTIONS: CodecOptions = CodecOptions(tz_aware=True, tzinfo=UTC)


def segment_paths(spool_path: Path) -> tuple[Path, Path]:
    """The journal segments that belong to one spool file (same lock, same number)."""
    return (spool_path.with_suffix(SUFFIXES[0]), spool_path.with_suffix(SUFFIXES[1]))


def encode(doc: dict[str, Any]) -> bytes:
    """One journal record."""
    return bson.encode(doc)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The whole records of a segment (one torn by a crash mid-write is not an event)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    docs: list[dict[str, Any]] = []
    pos = 0
    while pos + 5 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "little")
        if size < 5 or pos + size > len(data):
            break
        try:
            docs.append(bson.decode(data[pos : pos + size], codec_options=READ_OPTIONS))
        except InvalidBSON:
            break
        pos += size
    return docs


class Journal:
    def __init__(self, spool_path: Path, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.paths = segment_paths(spool_path)
        self.rotate_bytes = rotate_bytes
        self.current = 0
        self.pending = [0, 0]  # events in each segment not yet stored
        self.sizes = [0, 0]
        self._fds: list[int] = []

    def leftover(self) -> list[dict[str, Any]]:
        """What an earlier run left (call before :meth:`open`, which empties the segments)."""
        return read_records(self.paths[0]) + read_records(self.paths[1])

    def open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC
        self._fds = [os.open(path, flags, 0o600) for path in self.paths]

    def append(self, record: bytes) -> int:
        """Keep one event (see :func:`encode`); returns its segment for :meth:`stored`."""
        segment = self.current
        view = memoryview(record)
        while view:
            view = view[os.write(self._fds[segment], view) :]
        self.pending[segment] += 1
        self.sizes[segment] += len(record)
        other = 1 - segment
        if self.sizes[segment] >= self.rotate_bytes and self.pending[other] == 0:
            self.current = other
        return segment

    def stored(self, segment: int, count: int) -> None:
        """``count`` events of ``segment`` are in MongoDB or the spool."""
        self.pending[segment] = max(0, self.pending[segment] - count)
        if self.pending[segment] == 0 and self.sizes[segment]:
            os.ftruncate(self._fds[segment], 0)
            self.sizes[segment] = 0

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
