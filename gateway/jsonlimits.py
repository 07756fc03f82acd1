"""JSON from outside, parsed with a bound on nesting.

``json.loads`` recurses once per level: a few hundred levels of ``[`` in a ``state``, an
IdP's token or userinfo answer, or a logout token pass its C parser and then blow the
Python stack in whatever walks the value next (a ``RecursionError`` is a 500 with a long
traceback, and a value that deep also kills the BSON encoder of a batch of audit events).
:func:`loads` counts the nesting first, without recursion, and refuses anything deeper
than ``max_depth`` as a plain ``ValueError``: every caller already turns that into its
"not JSON" answer.

JSON may also escape a lone UTF-16 surrogate (``"\\ud800"``), which Python keeps in a ``str``
that no UTF-8 encoder takes (the session insert, an audit batch, a URL): such halves become
U+FFFD here, so whatever the value reaches can encode it.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Everything a JSON string can hold (unrolled: no backtracking per character), so brackets
# inside strings are not counted.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_INNERMOST = re.compile(rb"\[\]|\{\}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
MAX_DEPTH = 32  # claims, discovery documents and userinfo nest a few levels at most


class TooDeep(ValueError):
    """The JSON nests deeper than allowed."""


def _raw(data: str | bytes) -> bytes:
    return data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data


def too_deep(data: str | bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and arrays in ``data`` nest deeper than ``limit``. Each pass strips
    the innermost pairs in C (one level per pass), so the cost is at most ``limit + 1``
    scans of the brackets, whatever their number; unbalanced brackets are left to
    ``json.loads`` to refuse."""
    raw = _raw(data)
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the usual answer: nothing to count
        return False
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    for _ in range(limit):
        stripped = _INNERMOST.sub(b"", brackets)
        if stripped == brackets:  # empty, or unbalanced
            return False
        brackets = stripped
    return bool(_INNERMOST.search(brackets))


def loads(data: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for untrusted input: ``TooDeep`` (a ``ValueError``) past ``max_depth``."""
    if too_deep(data, max_depth):
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    try:
        value = json.loads(data)
    except RecursionError:  # cannot happen below max_depth; kept as a guard
        raise TooDeep("JSON nested too deeply") from None
    return _whole(value) if _SURROGATE_ESCAPE.search(_raw(data)) else value


def whole_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (pairs kept)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _whole(value: Any) -> Any:
    """``value`` with :func:`whole_text` applied to every string (depth already bounded)."""
    if isinstance(value, str):
        return whole_text(value)
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, dict):
        return {whole_text(k): _whole(v) for k, v in value.items()}
    return value
