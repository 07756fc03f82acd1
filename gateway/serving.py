"""The HTTP server ``serve`` runs: Tornado's, with a stop that drops no connection.

``HTTPServer.stop()`` closes the listening socket, and the kernel resets every connection
still waiting in its accept queue: people whose browser had already connected get a
reset instead of an answer. ``stop_accepting`` first takes those connections in, to be
served like any request in flight, and only then closes the socket; a connection that
arrives after that is refused (a browser, or nginx with another instance, tries again).
"""

from __future__ import annotations

from tornado.httpserver import HTTPServer


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
