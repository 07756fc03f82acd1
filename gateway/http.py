"""The one outbound HTTP client: timeouts on every call, JSON in and out, quiet logs.

Errors carry the URL without its query string, so codes or tokens that might travel in a
query never reach a log line or an audit event.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

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


class _TooLarge(Exception):
    pass


class HttpClient:
    """``max_response_bytes`` caps every answer (discovery, keys, token, userinfo, Graph):
    Tornado's own default is 100 MB, read into memory before anyone looks at it."""

    def __init__(self, timeout: float = 10.0, max_response_bytes: int = MAX_RESPONSE_BYTES):
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        # Requests sent, by method: ``jog_idp_requests_total`` (the HTTP hops a sign-in
        # costs the gateway on the back channel; benchmarks count them per sign-in).
        self.requests: dict[str, int] = {}

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

        def on_chunk(chunk: bytes) -> None:
            nonlocal received
            received += len(chunk)
            if received > cap:
                raise _TooLarge()  # aborts the transfer; nothing more is read
            chunks.append(chunk)

        request = HTTPRequest(
            url,
            method=method,
            body=body,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})},
            connect_timeout=limit,
            request_timeout=limit,
            follow_redirects=False,
            streaming_callback=on_chunk,
        )
        too_large = UpstreamError(url, f"answer larger than {cap} bytes (http.max_response_bytes)")
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except _TooLarge:
            raise too_large from None
        except HTTPClientError as exc:  # the transfer aborted (by on_chunk, or the network)
            if received > cap:
                raise too_large from None
            raise UpstreamError(url, f"HTTP error {exc.code}") from None
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(url, f"unreachable ({type(exc).__name__})") from None
        if received > cap or isinstance(response.error, _TooLarge):
            raise too_large
        if response.code == 599:
            raise UpstreamError(url, f"unreachable ({type(response.error).__name__})")
        try:
            payload = json.loads(b"".join(chunks) or b"null")
        except ValueError:
            payload = None
        if not 200 <= response.code < 300:
            raise UpstreamError(url, f"HTTP {response.code}", response.code, payload)
        if payload is None:
            raise UpstreamError(url, "response is not JSON", response.code)
        return payload
