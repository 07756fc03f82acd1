"""The HTTP server ``serve`` runs: Tornado's, with a stop that drops no connection, on the
configured event loop.

``listen.event_loop`` is uvloop by default: Tornado runs on any asyncio loop, and on
libuv's the gateway spends about a third less CPU per request (single sign-on at 64
concurrent on these 2-core machines: 0.59 -> 0.45 ms; at 8: 1.29 -> 0.66 ms; measured with
``python -m benchmarks.signin``). ``asyncio`` is the standard library's loop, kept as the way
out should a platform or a driver misbehave on uvloop. The test suite runs on the same loop
(``tests/conftest.py``), so what is tested is what is served.

``HTTPServer.stop()`` closes the listening socket, and the kernel resets every connection
still waiting in its accept queue: people whose browser had already connected get a
reset instead of an answer. ``stop_accepting`` first takes those connections in, to be
served like any request in flight, and only then closes the socket; a connection that
arrives after that is refused (a browser, or nginx with another instance, tries again).

Limits on the port (``listen.*``, :func:`make_server`): Tornado accepts 100 MB bodies and
keeps a silent connection open for an hour by default, and a process at its file limit
logs "Too many open files" for every accept it retries. Here a body over
``max_body_bytes`` gets 400 before it is read, headers over ``max_header_bytes`` close the
connection, a connection idle (or sending no headers) for ``idle_seconds`` or taking over
``body_seconds`` for its body is closed, and past ``max_connections`` open connections a
new one is closed at once (counted, logged once a minute) instead of starving the process
of file descriptors. At start-up the soft file limit is raised towards the hard one so it
exceeds ``max_connections`` (plus room for MongoDB, IdPs and the spool); when the hard
limit is too low, start-up fails naming ``listen.max_connections``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal

from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.web import Application

if TYPE_CHECKING:
    from gateway.config import Listen

log = logging.getLogger(__name__)

EventLoop = Literal["uvloop", "asyncio"]


def run(main: Coroutine[Any, Any, None], event_loop: EventLoop) -> None:
    """Run ``main`` to completion on a new loop of the chosen kind."""
    if event_loop == "uvloop":
        import uvloop  # a runtime dependency (requirements.txt); imported only when chosen

        uvloop.run(main)
    else:
        asyncio.run(main)


FD_HEADROOM = 256  # descriptors besides client connections: MongoDB, IdPs, spool, logs


class FileLimitTooLow(Exception):
    """The process cannot open as many files as ``listen.max_connections`` needs."""


def ensure_file_limit(max_connections: int) -> int:
    """Raise the soft file limit to fit ``max_connections`` plus headroom; returns it."""
    need = max_connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return need
    if hard != resource.RLIM_INFINITY and hard < need:
        raise FileLimitTooLow(
            f"listen.max_connections: {max_connections} needs a file limit of {need}, "
            f"this process may open {hard} (raise LimitNOFILE / ulimit -n, or lower it)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return need


def make_server(app: Application, listen: Listen) -> DrainingHTTPServer:
    """The gateway's HTTP server with the ``listen.*`` limits."""
    return DrainingHTTPServer(
        app,
        xheaders=False,
        max_body_size=listen.max_body_bytes,
        max_header_size=listen.max_header_bytes,
        idle_connection_timeout=listen.idle_seconds,  # Tornado's header timeout too
        body_timeout=listen.body_seconds,
        max_connections=listen.max_connections,
    )


class DrainingHTTPServer(HTTPServer):
    def initialize(  # type: ignore[override]
        self, *args: Any, max_connections: int | None = None, **kwargs: Any
    ) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        self.refused_connections = 0
        self._refusal_logged = 0.0

    def handle_stream(self, stream: IOStream, address: Any) -> None:
        if self.max_connections is not None and len(self._connections) >= self.max_connections:
            self.refused_connections += 1
            now = time.monotonic()
            if now - self._refusal_logged >= 60:
                self._refusal_logged = now
                log.warning(
                    "%d connections open (listen.max_connections): closing new ones (%d so far)",
                    len(self._connections),
                    self.refused_connections,
                )
            stream.close()
            return
        super().handle_stream(stream, address)

    def stop_accepting(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for fd, sock in self._sockets.items():
            self._handlers.pop(fd)()  # no more accept callbacks from the IOLoop
            while True:
                try:
                    connection, address = sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                self._handle_connection(connection, address)
            sock.close()
