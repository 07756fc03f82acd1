"""No import is attempted per request: httpcore imports ``sniffio`` on every lock it makes
(several per outbound request), and when the module is missing Python searches ``sys.path``
again each time (Python keeps no record of failed imports): 2-3 ms of CPU per code exchange,
measured. requirements.txt pins sniffio for that; this fails if it goes."""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

import pytest
from httpcore._synchronization import current_async_library


class CountingFinder(MetaPathFinder):
    def __init__(self) -> None:
        self.asked: list[str] = []

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        self.asked.append(fullname)
        return None  # let the real finders answer


@pytest.mark.asyncio
async def test_an_outbound_request_searches_for_no_module() -> None:
    current_async_library()  # anything imported once is cached from here on
    finder = CountingFinder()
    sys.meta_path.insert(0, finder)
    try:
        for _ in range(5):
            assert current_async_library() == "asyncio"
    finally:
        sys.meta_path.remove(finder)
    assert finder.asked == []
