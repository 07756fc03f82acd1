"""The embedded MongoDB-compatible store: a SecantusDB child process.

Used when ``mongodb.uri`` is empty (demo and local development) and by the test suite when
``MONGODB_URI`` is not set. SecantusDB (pinned in requirements.txt) speaks the MongoDB wire
protocol over TCP; it listens on loopback on the given port (0: the OS picks) and keeps its
data in ``storage`` (a temporary directory when none is given, removed by ``cleanup``).
Production deployments point ``mongodb.uri`` at a real MongoDB replica set.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LISTENING = re.compile(r"listening on ([\d.]+):(\d+)")


class EmbeddedMongo:
    def __init__(self, storage: Path | None = None, port: int = 0, durable: bool = True) -> None:
        # durable: fsync the log at every commit (--sync-on-commit), so a write the server
        # acknowledged survives a crash (without it, a SIGKILL within ~0.2 s loses writes).
        self.durable = durable
        self.storage = storage or Path(tempfile.mkdtemp(prefix="jog-secantus-"))
        self._owns_storage = storage is None
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self._drainer: threading.Thread | None = None

    @property
    def uri(self) -> str:
        """Without retryable writes: SecantusDB 0.7 records each one (30 minutes, up to
        10,000) and walks the record on every write, sorting it once full, so its CPU per
        write grew from 0.5 to 10 ms after about 2,500 sign-ins. On loopback to one local
        process the driver's retry buys little, and it was also what resent writes the
        store had applied (duplicate keys, flows taken for replays)."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true&retryWrites=false"

    def start(self, timeout: float = 60.0) -> EmbeddedMongo:
        exe = shutil.which("secantusd-py", path=str(Path(sys.executable).parent)) or shutil.which(
            "secantusd-py"
        )
        if exe is None:
            raise RuntimeError(
                "secantusd-py not found: pip install the pinned secantusdb (requirements.txt)"
            )
        self.proc = subprocess.Popen(
            [
                exe,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                str(self.storage),
                "--log-level",
                "INFO",
                *(["--sync-on-commit"] if self.durable else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            match = LISTENING.search(line)
            if match:
                self.port = int(match.group(2))
                # keep draining stderr so the server never blocks on a full pipe
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return self
        self.stop()
        raise RuntimeError("SecantusDB did not start:\n" + "".join(seen[-20:]))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._drainer is not None:
            self._drainer.join(5)
            self._drainer = None
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._owns_storage:
            shutil.rmtree(self.storage, ignore_errors=True)
