"""No import is attempted per outbound request. Python keeps no record of a failed import, so
a library that imports an optional module on every call (httpcore did, for ``sniffio``,
several times per request) searches ``sys.path`` again each time: 2-3 ms of CPU per code
exchange, measured. This drives the gateway's own client (gateway/http.py) against a local
server and fails if a request after the first asks the import system for anything."""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from gateway.http import HttpClient


class CountingFinder(MetaPathFinder):
    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        self.asked.append(fullname)
        return None  # let the real finders answer


class Token(RequestHandler):
    def post(self) -> None:
        self.write({"access_token": "a", "token_type": "Bearer"})

    def get(self) -> None:
        self.write({"keys": []})


@pytest.mark.asyncio
async def test_an_outbound_request_searches_for_no_module() -> None:
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(Application([(r"/token", Token)]))
    server.add_sockets(sockets)
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/token"
    client = HttpClient()
    finder = CountingFinder()
    try:
        await client.post_form(url, {"code": "c"})  # first use imports what it needs
        await client.get_json(url)
        sys.meta_path.insert(0, finder)
        try:
            for _ in range(5):
                assert (await client.post_form(url, {"code": "c"}))["token_type"] == "Bearer"
                assert await client.get_json(url) == {"keys": []}
        finally:
            sys.meta_path.remove(finder)
    finally:
        await client.aclose()
        server.stop()
        await server.close_all_connections()
    assert finder.asked == []
