"""The one outbound HTTP client: timeouts on every call, JSON in and out, quiet logs.

Errors carry the URL without its query string, so codes or tokens that might travel in a
query never reach a log line or an audit event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

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


class HttpClient:
    """``max_response_bytes`` caps every answer (discovery, keys, token, userinfo, Graph),
    read chunk by chunk and abandoned past the cap. Connections are kept alive (httpx's
    pool), so a code exchange reuses the connection to the IdP instead of resolving its
    name in a thread and opening a new TCP (and TLS) connection each time. ``timeout``
    bounds each call as a whole, not each read. Close with :meth:`aclose`."""

    def __init__(self, timeout: float = 10.0, max_response_bytes: int = MAX_RESPONSE_BYTES):
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.requests: dict[str, int] = {}
        self._client: httpx.AsyncClient | None = None  # made in the loop that uses it

    def _pool(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,  # no proxy or netrc from the environment
                headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                # Node's (and many IdPs') keep-alive timeout is 5 s: drop ours first.
                limits=httpx.Limits(max_connections=100, keepalive_expiry=4.0),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

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
        cap = self.max_response_bytes
        chunks: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(limit):
                request = self._pool().build_request(
                    method, url, content=body, headers=dict(headers or {})
                )
                response = await self._pool().send(request, stream=True)
                try:
                    async for chunk in response.aiter_raw():
                        received += len(chunk)
                        if received > cap:  # stop reading: the rest is never buffered
                            raise UpstreamError(
                                url, f"answer larger than {cap} bytes (http.max_response_bytes)"
                            )
                        chunks.append(chunk)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise UpstreamError(url, "unreachable (TimeoutError)") from None
        except httpx.HTTPError as exc:  # connect, read or protocol failure
            raise UpstreamError(url, f"unreachable ({type(exc).__name__})") from None
        except OSError as exc:
            raise UpstreamError(url, f"unreachable ({type(exc).__name__})") from None
        try:
            payload = json.loads(b"".join(chunks) or b"null")
        except ValueError:
            payload = None
        if not 200 <= response.status_code < 300:
            raise UpstreamError(url, f"HTTP {response.status_code}", response.status_code, payload)
        if payload is None:
            raise UpstreamError(url, "response is not JSON", response.status_code)
        return payload
