"""ocigitops.reference.parse_reference: documented to raise InvalidReferenceError only.

The input is decoded as the command line decodes arguments (UTF-8, undecodable bytes as
surrogate escapes). A reference that parses must print back to itself: parsing ``str(ref)``
and ``ref.url()`` gives the same reference.
"""

from __future__ import annotations

from ocigitops.errors import InvalidReferenceError
from ocigitops.reference import parse_reference


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    for require_scheme in (False, True):
        try:
            ref = parse_reference(text, require_scheme=require_scheme)
        except InvalidReferenceError:
            continue
        again = parse_reference(str(ref))
        assert again == ref, f"{text!r} parses to {ref!r} but {str(ref)!r} to {again!r}"
        assert parse_reference(ref.url(), require_scheme=True) == ref
        try:
            _ = ref.identifier  # raises when there is neither tag nor digest
        except InvalidReferenceError:
            assert ref.tag is None and ref.digest is None
