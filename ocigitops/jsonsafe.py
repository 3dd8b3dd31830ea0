"""Strict JSON for everything that comes off the wire.

Python's :mod:`json` and Go's ``encoding/json`` (which registries, Flux, cosign and
notation use) read some documents differently: Python keeps the last of duplicate keys,
and Go also fills a struct field from a key that differs only in case (``"Digest"``
sets ``Digest`` as ``"digest"`` does). A signed payload an attacker shaped so that each
side reads a different value is refused here instead: a document with duplicate keys,
or keys that are equal ignoring case, is an error. Nesting is bounded too, so a deeply
nested document is a typed error rather than a RecursionError.
"""

from __future__ import annotations

from typing import Any

from ocigitops.errors import MalformedDocumentError

#: Deeper than any manifest, signature or policy document has a reason to be.
MAX_DEPTH = 64


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    folded: set[str] = set()
    for key, value in pairs:
        low = key.casefold()
        if low in folded:
            raise _Duplicate(key)
        folded.add(low)
        out[key] = value
    return out


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _depth_ok(doc: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


def loads(data: bytes | str, what: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` strictly; raise MalformedDocumentError naming ``what`` on any fault.

    Refused: invalid JSON or UTF-8, duplicate keys (also ones that differ only in case),
    nesting deeper than ``max_depth``, and NaN/Infinity (not JSON, though Python takes
    them).
    """
    import json

    try:
        doc = json.loads(data, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except _Duplicate as e:
        raise MalformedDocumentError(
            f"{what} has the key {e.key!r} twice (keys must be unique, ignoring case)") from e
    except RecursionError as e:
        raise MalformedDocumentError(f"{what} is nested too deeply") from e
    except (ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError too
        raise MalformedDocumentError(f"{what} is not valid JSON: {_first_line(e)}") from e
    if not _depth_ok(doc, max_depth):
        raise MalformedDocumentError(f"{what} is nested more than {max_depth} levels deep")
    return doc


def loads_object(data: bytes | str, what: str, *, max_depth: int = MAX_DEPTH,
                 ) -> dict[str, Any]:
    """:func:`loads`, and the document must be a JSON object."""
    doc = loads(data, what, max_depth=max_depth)
    if not isinstance(doc, dict):
        raise MalformedDocumentError(f"{what} is not a JSON object")
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()
    return text[0][:200] if text else type(e).__name__
