"""The fuzz targets: one module per parser, each with ``test_one_input(data: bytes) -> None``.

A target feeds the bytes to its parser and lets only the typed errors that parser documents
through; any other exception (a raw ValueError, KeyError, TypeError, IndexError,
UnicodeDecodeError, RecursionError, OverflowError...) or a broken invariant propagates, and
that is the finding. Targets never import atheris, so a reproducer replays under plain pytest.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

#: Target name -> what it fuzzes (the name is also the module under ``fuzz.targets``).
TARGETS: dict[str, str] = {
    "reference": "ocigitops.reference.parse_reference",
    "extract": "ocigitops.extract.extract_stream (gzip of the input, and the raw input)",
    "manifest": "ocigitops.artifact.parse_manifest, registry.Manifest.json,"
                " registry.Descriptor.from_json",
    "jsonsafe": "ocigitops.jsonsafe.loads / loads_object",
    "simplesigning": "ocigitops.verifier.simplesigning payloads and .sig layers,"
                     " ocigitops.verifier.rekor bundles",
    "bundles": "ocigitops.verifier.bundles: sigstore bundles, DSSE statements, Rekor entry bodies",
    "notation": "ocigitops.verifier.notation: JWS and COSE envelopes, payloads, RFC 3161 tokens",
}

TestOneInput = Callable[[bytes], None]


def load(name: str) -> TestOneInput:
    """Import target ``name`` and return its ``test_one_input``."""
    if name not in TARGETS:
        raise KeyError(f"unknown fuzz target {name!r} (known: {', '.join(TARGETS)})")
    module = importlib.import_module(f"fuzz.targets.{name}")
    fn: TestOneInput = module.test_one_input
    return fn


def split_mode(data: bytes, modes: int) -> tuple[int, bytes]:
    """(the first byte modulo ``modes``, the rest): lets one target reach several entry
    points while each reproducer stays a single file."""
    if not data:
        return 0, b""
    return data[0] % modes, data[1:]
