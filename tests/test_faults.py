"""Faults an operator's bad day brings, each reproduced against the real parts: an IdP that
accepts connections and never answers, an IdP that answers with huge bodies."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from gateway.devtools.op import TestOP
from tests.support.gateway import GatewayUnderTest, start_gateway

pytestmark = pytest.mark.asyncio


class HungServer:
    """Accepts TCP connections, reads what comes, never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> HungServer:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self.writers.append(writer)
            try:
                while await reader.read(65536):
                    pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:  # the connections it held open
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.server.wait_closed()


@pytest_asyncio.fixture
async def hung() -> AsyncIterator[HungServer]:
    async with HungServer() as server:
        yield server


async def test_a_hung_idp_answers_every_person_within_about_one_timeout(
    op: TestOP, mongo_uri: str, hung: HungServer
) -> None:
    """30 people at once, no discovery document cached, an IdP that never answers: one
    fetch in flight, its failure answers all of them, then a short negative cache."""
    idp = {"issuer": hung.url, "http_timeout_seconds": 1.0}
    async with start_gateway(op, mongo_uri, idp=idp) as gw:
        await asyncio.sleep(5.1)  # let warm-up's failure age out of the negative cache
        before = hung.connections
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=30) as client:
            answers = await asyncio.gather(
                *(client.get(f"{gw.url}/oidc/auth", params={"room": f"room{i}"}) for i in range(30))
            )
        elapsed = time.monotonic() - started
        assert {a.status_code for a in answers} == {502}
        assert elapsed < 3.0, elapsed  # about one timeout, not 30 of them
        assert hung.connections - before == 1  # one fetch for everyone
        # Within the negative cache: answered at once, the IdP is not asked again.
        quick = time.monotonic()
        async with httpx.AsyncClient(timeout=30) as client:
            again = await client.get(f"{gw.url}/oidc/auth", params={"room": "later"})
        assert again.status_code == 502 and time.monotonic() - quick < 0.5
        assert hung.connections - before == 1
        events = [e async for e in gw.store.audit.collection.find({"reason": "idp_unreachable"})]
        assert len(events) >= 31


@pytest.mark.parametrize(
    ("padding", "refused"),
    [(10 * 1024 * 1024, True), (100 * 1024, False)],
    ids=["ten_megabytes_refused", "hundred_kilobytes_fine"],
)
async def test_huge_token_endpoint_answers_are_refused(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient, padding: int, refused: bool
) -> None:
    async with start_gateway(op, mongo_uri) as gw:
        callback = await gw.start_and_login(browser, op)
        await op.pad_next_token_response(padding)
        response = await browser.get(callback)
        if not refused:
            assert response.status_code == 302, response.text
            return
        assert response.status_code == 502
        [event] = [e async for e in gw.store.audit.collection.find({"event": "login_failed"})]
        assert event["reason"] == "code_exchange_failed"
        assert "answer larger than 1048576 bytes" in event["detail"]
        assert await gw.store.sessions.collection.count_documents({}) == 0


async def test_every_outbound_call_is_capped() -> None:
    """Discovery, keys and userinfo go through the same client: a 2 MB document is refused
    after reading at most the cap (plus one chunk), chunked or with a Content-Length."""
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets
    from tornado.web import Application, RequestHandler

    from gateway.http import HttpClient, UpstreamError

    class Big(RequestHandler):
        async def get(self, mode: str) -> None:
            body = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
            if mode == "chunked":
                for start in range(0, len(body), 65536):
                    self.write(body[start : start + 65536])
                    await self.flush()
            else:
                self.write(body)

    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(Application([(r"/(chunked|whole)", Big)]))
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    try:
        client = HttpClient(max_response_bytes=1024 * 1024)
        for mode in ("chunked", "whole"):
            with pytest.raises(UpstreamError, match="answer larger than 1048576 bytes"):
                await client.get_json(f"http://127.0.0.1:{port}/{mode}")
        roomy = HttpClient(max_response_bytes=4 * 1024 * 1024)
        assert len((await roomy.get_json(f"http://127.0.0.1:{port}/whole"))["pad"]) == 2**21
        await client.aclose()
        await roomy.aclose()
    finally:
        server.stop()
        await server.close_all_connections()


async def test_admin_api_answers_tornado_errors_as_json(gw: GatewayUnderTest) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.delete(f"{gw.url}/admin/audit")
    assert response.status_code == 405
    body = response.json()
    assert body["error"] == "method_not_allowed" and body["id"]
    assert response.headers["X-Request-Id"] == body["id"]


async def test_background_audit_writer_logs_carry_no_request_id(
    op: TestOP, mongo_uri: str, browser: httpx.AsyncClient
) -> None:
    """The writer task outlives the request that started it: its log lines must not carry
    that request's id. (MongoDB is unreachable here, so the writer has things to say.)"""
    import logging

    from gateway.logging_setup import REQUEST_ID

    seen: list[tuple[str, str | None]] = []

    class Capture(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            seen.append((record.getMessage(), REQUEST_ID.get()))
            return True

    audit_log = logging.getLogger("gateway.store.audit")
    capture = Capture()
    audit_log.addFilter(capture)
    try:
        dead = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300"
        async with start_gateway(
            op, mongo_uri, store_uri=dead, mongodb={"timeout_seconds": 0.3}
        ) as gw:
            response = await browser.get(f"{gw.url}/oidc/auth", params={"room": "standup"})
            assert response.headers["X-Request-Id"]
            for _ in range(50):
                if seen:
                    break
                await asyncio.sleep(0.1)
    finally:
        audit_log.removeFilter(capture)
    assert seen, "the writer logged nothing"
    assert all(request_id is None for _, request_id in seen), seen


async def test_a_gateway_started_before_mongodb_gets_its_indexes_when_it_arrives(
    op: TestOP, mongo_uri: str, tmp_path: Any
) -> None:
    """Not ready (and saying why) while MongoDB is away; indexes created as soon as it
    answers; ready after that, without a restart."""
    from gateway.devtools.embedded import EmbeddedMongo
    from tests.support.nginx import free_port

    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    async with start_gateway(op, mongo_uri, store_uri=uri, mongodb={"timeout_seconds": 0.5}) as gw:
        async with httpx.AsyncClient(timeout=10) as client:
            before = await client.get(f"{gw.url}/readyz")
            assert before.status_code == 503
            assert before.json()["checks"] == {"mongodb": "unreachable", "indexes": "missing"}
            server = await asyncio.to_thread(EmbeddedMongo(tmp_path / "db", port).start)
            try:
                ready = None
                for _ in range(60):
                    ready = await client.get(f"{gw.url}/readyz")
                    if ready.status_code == 200:
                        break
                    await asyncio.sleep(0.5)
                assert ready is not None and ready.status_code == 200, ready.text
                flows = await gw.store.flows.collection.index_information()
                assert any(i.get("expireAfterSeconds") is not None for i in flows.values())
                metrics = await client.get(f"{gw.url}/metrics")
                assert "jog_store_ready 1.0" in metrics.text
                assert 'jog_idp_up{idp="testop"} 1.0' in metrics.text
            finally:
                await gw.store.client.drop_database(gw.settings.mongodb.database)
                await asyncio.to_thread(server.cleanup)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_store_restarted_empty_gets_its_indexes_back_and_readyz_tells_the_truth(
    op: TestOP, tmp_path: Any
) -> None:
    """The store is killed and an empty one started on the same port faster than the
    maintenance interval, so the loop never sees it unreachable: the indexes come back
    within about one interval, and no ``/readyz`` answer says "indexes: ok" while the
    server lacks them. Then the collections are dropped under a running gateway: same."""
    from gateway.devtools.embedded import EmbeddedMongo
    from gateway.store import MAINTENANCE_INTERVAL_SECONDS

    server = await asyncio.to_thread(EmbeddedMongo(tmp_path / "db1", durable=False).start)
    port = server.port
    try:
        async with start_gateway(op, server.uri, store_uri=server.uri) as gw:
            flows = gw.store.flows.collection

            async def has_ttl() -> bool:
                info = await flows.index_information()
                return any(i.get("expireAfterSeconds") is not None for i in info.values())

            async def until_ready(client: httpx.AsyncClient) -> float:
                """Seconds until /readyz is 200; every answer checked against the server."""
                started = time.monotonic()
                while time.monotonic() - started < MAINTENANCE_INTERVAL_SECONDS * 6:
                    answer = await client.get(f"{gw.url}/readyz")
                    if answer.json()["checks"]["indexes"] == "ok":
                        assert await has_ttl(), "readyz said indexes ok, the store has none"
                    else:
                        assert answer.status_code == 503, answer.text
                    if answer.status_code == 200:
                        return time.monotonic() - started
                    await asyncio.sleep(0.2)
                raise AssertionError("the indexes never came back")

            async with httpx.AsyncClient(timeout=10) as client:
                assert (await client.get(f"{gw.url}/readyz")).status_code == 200
                assert await has_ttl()
                await asyncio.to_thread(server.stop)
                server = await asyncio.to_thread(
                    EmbeddedMongo(tmp_path / "db2", port, durable=False).start
                )
                first = await until_ready(client)
                await gw.store.client.drop_database(gw.settings.mongodb.database)
                second = await until_ready(client)
            expected = set(gw.store.expected_indexes())
            database = gw.store.db
            for name in expected:  # every collection's indexes, not only the flows' TTL
                present = await database[name].index_information()
                assert len(present) > 1, (name, present)
            assert first < MAINTENANCE_INTERVAL_SECONDS * 3 and second < 15, (first, second)
    finally:
        await asyncio.to_thread(server.cleanup)
        gc.collect()


# PyMongo may leave a pooled socket to the killed server for the garbage collector; it is
# collected inside this test (not blamed on a later one) and its warning ignored here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_acknowledged_sign_ins_survive_a_store_crash(op: TestOP, tmp_path: Any) -> None:
    """N sign-ins answered, the store SIGKILLed at once, restarted: all N sessions and all
    N token_minted events are there (journaled, majority writes; the embedded store fsyncs
    at commit)."""
    from pymongo import AsyncMongoClient

    from gateway.devtools.embedded import EmbeddedMongo

    storage = tmp_path / "db"
    server = await asyncio.to_thread(EmbeddedMongo(storage).start)
    port, n = server.port, 6
    try:
        async with start_gateway(op, server.uri) as gw:
            database = gw.settings.mongodb.database
            for _ in range(n):
                async with httpx.AsyncClient(follow_redirects=False, timeout=15) as person:
                    response = await gw.sign_in(person, op)
                    assert response.status_code == 302 and "jwt=" in response.headers["location"]
            assert server.proc is not None
            server.proc.kill()  # right after the last acknowledged write
            await asyncio.to_thread(server.proc.wait)
            server.stop()
            server = await asyncio.to_thread(EmbeddedMongo(storage, port).start)
            check: AsyncMongoClient = AsyncMongoClient(server.uri)
            try:
                db = check[database]
                assert await db["sessions"].count_documents({}) == n
                assert await db["audit"].count_documents({"event": "token_minted"}) == n
            finally:
                await check.close()
    finally:
        await asyncio.to_thread(server.cleanup)
        gc.collect()


async def test_every_spool_file_is_replayed_whatever_the_process_count(
    op: TestOP, mongo_uri: str, tmp_path: Any
) -> None:
    """Two workers spooled while MongoDB was down (one file each); the gateway comes back
    with one process: both files are replayed, each event once, and the files end empty."""
    import uuid
    from datetime import UTC, datetime

    from gateway.store.spool import Spool

    spool_dir = tmp_path / "spool"
    worker0, worker1 = Spool(spool_dir, 1 << 20), Spool(spool_dir, 1 << 20)
    worker0.open()
    worker1.open()
    assert {worker0.path.name, worker1.path.name} == {"audit-0.spool", "audit-1.spool"}  # type: ignore[union-attr]
    ids = []
    for worker, n in ((worker0, 3), (worker1, 4)):
        docs = []
        for _ in range(n):
            ids.append(uuid.uuid4().hex)
            docs.append(
                {
                    "_id": ids[-1],
                    "v": 1,
                    "time": datetime.now(UTC),
                    "event": "flow_started",
                    "outcome": "success",
                    "idp": "testop",
                }
            )
        worker.append(docs)
    worker0.close()
    worker1.close()  # both processes are gone; a restart brings one back
    async with start_gateway(op, mongo_uri, audit={"spool_dir": str(spool_dir)}) as gw:
        for _ in range(100):
            found = await gw.store.audit.collection.count_documents({"_id": {"$in": ids}})
            if found == len(ids) and gw.store.audit.spool_depth == 0:
                break
            await asyncio.sleep(0.1)
        assert found == len(ids)
        assert gw.store.audit.spool_depth == 0
    assert all(p.stat().st_size == 0 for p in spool_dir.glob("audit-*.spool"))


async def test_a_spool_file_left_by_a_worker_that_died_later_is_adopted(
    op: TestOP, mongo_uri: str, tmp_path: Any
) -> None:
    """A worker dies while the gateway runs: its file is taken over by the maintenance loop."""
    import uuid
    from datetime import UTC, datetime

    from gateway.store import Store
    from gateway.store.spool import Spool

    spool_dir = tmp_path / "spool"
    async with start_gateway(op, mongo_uri, audit={"spool_dir": str(spool_dir)}) as gw:
        other = Spool(spool_dir, 1 << 20)
        other.open()  # a second worker, alive
        event_id = uuid.uuid4().hex
        other.append(
            [
                {
                    "_id": event_id,
                    "v": 1,
                    "time": datetime.now(UTC),
                    "event": "flow_started",
                    "outcome": "success",
                }
            ]
        )
        await gw.store.maintain()
        assert await gw.store.audit.collection.count_documents({"_id": event_id}) == 0
        other.close()  # now it is gone
        assert isinstance(gw.store, Store)
        await gw.store.maintain()
        for _ in range(50):
            if await gw.store.audit.collection.count_documents({"_id": event_id}) == 1:
                break
            await asyncio.sleep(0.1)
        assert await gw.store.audit.collection.count_documents({"_id": event_id}) == 1


async def test_a_kept_alive_connection_closed_by_the_server_is_asked_again() -> None:
    """The IdP drops an idle kept-alive connection just as the next request goes out on it
    (its keep-alive timeout): the call is made once more on a new connection instead of
    failing the sign-in. A server that keeps dropping still fails the call."""
    from gateway.http import HttpClient, UpstreamError

    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
        b'Connection: keep-alive\r\n\r\n{"ok":true}'
    )
    connections = 0
    always_drop = False

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        served = 0
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if served == 1 or always_drop:  # the second request on this connection
                    break  # closed without an answer
                writer.write(answer)
                await writer.drain()
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/token"
    client = HttpClient()
    try:
        # POST, as the code exchange: aiohttp repeats only idempotent methods on its own
        assert await client.post_form(url, {"code": "c"}) == {"ok": True}
        assert await client.post_form(url, {"code": "c"}) == {"ok": True}  # dropped, asked again
        assert connections == 2
        always_drop = True
        with pytest.raises(UpstreamError, match="unreachable"):
            await client.post_form(url, {"code": "c"})
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_closing_the_store_ends_maintenance_when_the_driver_swallows_the_cancel(
    op: TestOP, mongo_uri: str
) -> None:
    """A store command cancelled mid-flight can come back as the driver's own error
    (PyMongo turns a cancelled connection into ``AutoReconnect``): the maintenance loop must
    still end, or closing the store (every shutdown, every test's teardown) waits forever.
    Seen as a suite that hung idle at teardown once maintenance checked indexes every round."""
    from pymongo.errors import AutoReconnect

    async def cancel_comes_back_as_a_driver_error() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise AutoReconnect("connection closed while its task was cancelled") from None

    async with start_gateway(op, mongo_uri) as gw:
        store = gw.store
        assert store._maintenance is not None
        store._maintenance.cancel()
        await asyncio.gather(store._maintenance, return_exceptions=True)
        store._maintenance = None
        store.maintain = cancel_comes_back_as_a_driver_error  # type: ignore[method-assign]
        store.start_maintenance(interval=0.01)
        await asyncio.sleep(0.1)  # inside the "driver" call now
        task = store._maintenance
        assert task is not None
        task.cancel()  # what close() does first
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done, "the maintenance loop outlived its cancellation"
        store._maintenance = None
