"""Every field of an audit event, bounded: what anyone may send cannot make an event large.

Refusals are audited with what the request carried (a ``client_id``, a room, a detail
quoting a value), and a request body may be large. Before a bound, one request with a
20 MiB ``client_id`` made an event MongoDB refused (16 MiB documents), which then blocked
the spool replay for good. Sizes (documented in docs/audit.md):

- a text value keeps its first ``MAX_TEXT`` (1,000) characters, then ``…[cut N chars]``;
- a list keeps ``MAX_ITEMS`` (200) items, then one ``…[cut N items]`` string;
- a mapping keeps ``MAX_KEYS`` (100) keys (each cut to ``MAX_KEY`` characters), the rest
  summed up under ``…`` as ``[cut N keys]``;
- values nested deeper than ``MAX_DEPTH`` (6) become ``…[cut: nested too deep]``;
- the whole event holds at most ``MAX_EVENT_TEXT`` (65,536) characters of text: later
  text values become ``…[cut: event too large]``;
- text with a lone UTF-16 surrogate (no encoder takes it) keeps U+FFFD in its place;
- an integer beyond 64 bits (BSON holds no larger) is kept as its decimal text.

Only what a bound touched changes; everything else is stored as it came.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.jsonlimits import whole_text

MAX_TEXT = 1000
MAX_KEY = 100
MAX_ITEMS = 200
MAX_KEYS = 100
MAX_DEPTH = 6
MAX_EVENT_TEXT = 65_536
CUT = "…"
INT64 = (-(2**63), 2**63 - 1)


class _Budget:
    def __init__(self, chars: int) -> None:
        self.left = chars


def _text(value: str, limit: int, budget: _Budget) -> str:
    if len(value) <= limit and len(value) <= budget.left and value.isascii():
        budget.left -= len(value)  # the usual case: short ASCII, nothing to change
        return value
    value = whole_text(value)
    if budget.left <= 0:
        return f"{CUT}[cut: event too large]"
    keep = min(limit, budget.left)
    budget.left -= min(len(value), keep)
    if len(value) <= keep:
        return value
    return f"{value[:keep]}{CUT}[cut {len(value) - keep} chars]"


def _bound(value: Any, depth: int, budget: _Budget) -> Any:
    kind = type(value)
    if kind is str:
        return _text(value, MAX_TEXT, budget)
    if kind is bool or value is None or kind is float or kind is datetime:
        return value
    if isinstance(value, str):
        return _text(value, MAX_TEXT, budget)
    if isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if INT64[0] <= value <= INT64[1] else str(value)
    if isinstance(value, list | tuple | set | frozenset):
        if depth >= MAX_DEPTH:
            return f"{CUT}[cut: nested too deep]"
        items = list(value)
        kept = [_bound(item, depth + 1, budget) for item in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            kept.append(f"{CUT}[cut {len(items) - MAX_ITEMS} items]")
        return kept
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return f"{CUT}[cut: nested too deep]"
        out: dict[str, Any] = {}
        for n, (key, item) in enumerate(value.items()):
            if n >= MAX_KEYS:
                out[CUT] = f"[cut {len(value) - MAX_KEYS} keys]"
                break
            name = _text(str(key), MAX_KEY, budget)
            out[name] = _bound(item, depth + 1, budget)
        return out
    return value  # datetimes, ids: fixed size


def bounded(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of the event with every field within the bounds above."""
    budget = _Budget(MAX_EVENT_TEXT)
    return {key: _bound(value, 1, budget) for key, value in doc.items()}
