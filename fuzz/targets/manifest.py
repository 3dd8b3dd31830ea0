"""The manifest and index parsers, each fed the same bytes.

* ``ocigitops.artifact.parse_manifest``: raises NotAnArtifactError only;
* ``ocigitops.registry.Manifest.json``: raises RegistryError only; an index's ``manifests``
  and a manifest's ``layers`` then go through ``Descriptor.from_json`` as the referrers
  fallback and signature discovery read them;
* ``ocigitops.registry.Descriptor.from_json``: documented to raise ValueError (exactly that
  type: a subclass such as UnicodeDecodeError is a finding) on a malformed descriptor.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ocigitops import jsonsafe
from ocigitops import mediatypes as mt
from ocigitops.artifact import parse_manifest
from ocigitops.errors import MalformedDocumentError, NotAnArtifactError, RegistryError
from ocigitops.registry import Descriptor, Manifest

_DIGEST = "sha256:" + "0" * 64


def _descriptor(doc: Any) -> None:
    try:
        d = Descriptor.from_json(doc)
    except ValueError as e:
        if type(e) is not ValueError:
            raise
        return
    assert isinstance(d.media_type, str) and isinstance(d.size, int) and d.size >= 0
    d.to_json()


def test_one_input(data: bytes) -> None:
    for media_type in ("", mt.OCI_MANIFEST):
        try:
            art = parse_manifest(data, media_type)
        except NotAnArtifactError:
            continue
        _ = art.metadata
        with contextlib.suppress(NotAnArtifactError):
            art.select_layer()

    try:
        doc = Manifest(data=data, media_type=mt.OCI_INDEX, digest=_DIGEST).json()
    except RegistryError:
        pass
    else:
        for key in ("manifests", "layers"):
            items = doc.get(key)
            for item in items if isinstance(items, list) else []:
                _descriptor(item)
        _descriptor(doc.get("config"))

    try:
        parsed = jsonsafe.loads(data, "descriptor")
    except MalformedDocumentError:
        return
    _descriptor(parsed)
