"""The one outbound HTTP client: timeouts on every call, JSON in and out, quiet logs.

Errors carry the URL without its query string, so codes or tokens that might travel in a
query never reach a log line or an audit event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

from gateway import jsonlimits

USER_AGENT = "jitsi-oidc-gateway"


class UpstreamError(Exception):
    """An outbound call failed: unreachable, timed out, non-2xx or not JSON."""

    def __init__(self, url: str, problem: str, status: int | None = None, body: Any = None):
        super().__init__(f"{safe_url(url)}: {problem}")
        self.status = status
        self.body = body


def safe_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


MAX_RESPONSE_BYTES = 1024 * 1024
# The server closed the connection before any answer (aiohttp reuses a pooled connection
# whose close it has not seen yet: aio-libs/aiohttp#3609, #9138).
STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError)


class HttpClient:
    """``max_response_bytes`` caps every answer (discovery, keys, token, userinfo, Graph),
    counted after decompression, read chunk by chunk and abandoned past the cap.
    Connections are kept alive (aiohttp's pool), so a code exchange reuses the connection to
    the IdP instead of resolving its name in a thread and opening a new TCP (and TLS)
    connection each time. ``timeout`` bounds each call as a whole, not each read. Close with
    :meth:`aclose`.

    aiohttp rather than httpx: on the code exchange (one POST, a 1 kB JSON answer) httpx cost
    0.85-1.3 ms of client CPU per request here, aiohttp 0.12-0.22 ms (its parser is C)."""

    def __init__(self, timeout: float = 10.0, max_response_bytes: int = MAX_RESPONSE_BYTES):
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.requests: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None  # made in the loop that uses it

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                trust_env=False,  # no proxy or netrc from the environment
                headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                # Node's (and many IdPs') keep-alive timeout is 5 s: drop ours first.
                connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=4.0),
                cookie_jar=aiohttp.DummyCookieJar(),  # no IdP cookie follows a later call
                timeout=aiohttp.ClientTimeout(total=None),  # asyncio.timeout bounds each call
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_json(
        self, url: str, headers: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> Any:
        return await self._fetch("GET", url, None, headers, timeout)

    async def post_form(
        self,
        url: str,
        form: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return await self._fetch("POST", url, urlencode(form), hdrs, timeout)

    async def _fetch(
        self,
        method: str,
        url: str,
        body: str | None,
        headers: Mapping[str, str] | None,
        timeout: float | None,
    ) -> Any:
        self.requests[method] = self.requests.get(method, 0) + 1
        limit = timeout or self.timeout
        try:
            async with asyncio.timeout(limit):
                try:
                    status, data = await self._once(method, url, body, headers)
                except STALE_CONNECTION:
                    # A kept-alive connection the server had closed as the request went out
                    # (its idle timeout): nothing was answered, so ask once more on a new one.
                    # A code sent twice is refused by the IdP: single use is its to enforce.
                    status, data = await self._once(method, url, body, headers)
        except TimeoutError:
            raise UpstreamError(url, "unreachable (TimeoutError)") from None
        except aiohttp.ClientError as exc:  # connect, read or protocol failure, bad URL
            raise UpstreamError(url, f"unreachable ({type(exc).__name__})") from None
        except OSError as exc:
            raise UpstreamError(url, f"unreachable ({type(exc).__name__})") from None
        try:  # nesting bounded: an IdP's answer nested thousands deep is "not JSON"
            payload = jsonlimits.loads(data or b"null")
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not 200 <= status < 300:
            raise UpstreamError(url, f"HTTP {status}", status, payload)
        if payload is None:
            raise UpstreamError(url, "response is not JSON", status)
        return payload

    async def _once(
        self, method: str, url: str, body: str | None, headers: Mapping[str, str] | None
    ) -> tuple[int, bytes]:
        cap = self.max_response_bytes
        chunks: list[bytes] = []
        received = 0
        async with self._pool().request(
            method, url, data=body, headers=headers, allow_redirects=False
        ) as response:
            async for chunk in response.content.iter_any():
                received += len(chunk)
                if received > cap:  # stop reading: the rest is never buffered
                    raise UpstreamError(
                        url, f"answer larger than {cap} bytes (http.max_response_bytes)"
                    )
                chunks.append(chunk)
            return response.status, b"".join(chunks)
