"""The baseline: a bare Tornado handler that answers every GET with a 302.

``python -m benchmarks.bare [--port 0]`` prints ``{"port": N}`` once it listens. It runs in
its own process, like the gateway, so its CPU per request is measured the same way; every
gateway figure is also given as a ratio to this one (what Tornado itself costs here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

TARGET = "http://127.0.0.1:9/meet/room?jwt=x"


class RedirectHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.redirect(TARGET)


def make_app() -> tornado.web.Application:
    return tornado.web.Application([(r"/.*", RedirectHandler)], log_function=lambda _h: None)


async def serve(port: int) -> None:
    sockets = bind_sockets(port, "127.0.0.1", family=socket.AF_INET)
    HTTPServer(make_app()).add_sockets(sockets)
    print(json.dumps({"port": sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
