"""Jitsi Meet's own web-client code, run by Node, as the judge of the URLs we deliver.

``tests/op/jitsi-url.mjs`` loads Jitsi's ``parseURLParams`` and ``parseJWTFromURLParams``
(from the pinned ``@jitsi/react-native-sdk`` tarball, see ``tests/op/fetch-jitsi-source.sh``)
and answers what Jitsi reads from a URL: the token, and the hash parameters it applies.
"""

from __future__ import annotations

import functools
import json
import subprocess
from typing import Any

from tests.support.op import NODE, OP_DIR

HARNESS = OP_DIR / "jitsi-url.mjs"


def jitsi_reads(requests: list[dict[str, Any]]) -> list[Any]:
    """Each request ``{"op": "jwt"|"hash"|"search", "url": ...}`` answered by Jitsi's code.
    Answers are pure functions of the request, so they are cached (pages' URLs differ)."""
    return json.loads(_run(json.dumps(requests)))


@functools.lru_cache(maxsize=512)
def _run(payload: str) -> str:
    for attempt in (1, 2):  # a Node start on a machine busy with other tests may stall once
        try:
            done = subprocess.run(
                [str(NODE), "--no-warnings", str(HARNESS)],
                input=payload,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
                cwd=OP_DIR,
            )
            break
        except subprocess.TimeoutExpired:
            if attempt == 2:
                raise
    answers = json.loads(done.stdout)
    errors = [a["error"] for a in answers if "error" in a]
    if errors:
        raise AssertionError(f"Jitsi's code failed: {errors}")
    return json.dumps([a["value"] for a in answers])


def jitsi_token(url: str) -> str | None:
    """The token Jitsi's web client takes from this room URL (hash first, then query)."""
    return jitsi_reads([{"op": "jwt", "url": url}])[0]


def jitsi_hash_params(url: str) -> dict[str, Any]:
    """The hash parameters (``config.*``, ``jwt``...) as Jitsi's web client parses them."""
    return jitsi_reads([{"op": "hash", "url": url}])[0]


def jitsi_token_auth_url(
    token_auth_url: str,
    location: str,
    room: str,
    tenant: str | None = None,
    *,
    platform: str = "web",
    options: dict[str, Any] | None = None,
) -> tuple[str, str | None]:
    """(the URL Jitsi's login button opens, the PKCE verifier it kept) from Jitsi's own
    ``getTokenAuthUrl``: the web build for ``web``/``electron``, the app build for
    ``ios``/``android``."""
    [answer] = jitsi_reads(
        [
            {
                "op": "tokenAuthUrl",
                "platform": platform,
                "tokenAuthUrl": token_auth_url,
                "location": location,
                "room": room,
                "tenant": tenant,
                "options": options or {},
            }
        ]
    )
    return answer["url"], answer["codeVerifier"]
