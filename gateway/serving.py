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
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal

from tornado.httpserver import HTTPServer

EventLoop = Literal["uvloop", "asyncio"]


def run(main: Coroutine[Any, Any, None], event_loop: EventLoop) -> None:
    """Run ``main`` to completion on a new loop of the chosen kind."""
    if event_loop == "uvloop":
        import uvloop  # a runtime dependency (requirements.txt); imported only when chosen

        uvloop.run(main)
    else:
        asyncio.run(main)


class DrainingHTTPServer(HTTPServer):
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
