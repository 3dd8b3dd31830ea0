"""ocigitops.jsonsafe.loads / loads_object: documented to raise MalformedDocumentError only.

The input goes in as bytes and as text (with surrogate escapes, as a str from elsewhere
may hold). A document that loads must be within the depth limit.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ocigitops import jsonsafe
from ocigitops.errors import MalformedDocumentError


def _depth(doc: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in children)
    return deepest


def test_one_input(data: bytes) -> None:
    for source in (data, data.decode("utf-8", "surrogateescape")):
        try:
            doc = jsonsafe.loads(source, "fuzz input", max_depth=8)
        except MalformedDocumentError:
            pass
        else:
            assert _depth(doc) <= 8, "a document deeper than max_depth loaded"
        with contextlib.suppress(MalformedDocumentError):
            jsonsafe.loads_object(source, "fuzz input")
