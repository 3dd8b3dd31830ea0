"""Digest rules (ocigitops.digests) and the strict JSON loader (ocigitops.jsonsafe)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ocigitops import jsonsafe
from ocigitops.digests import check_digest, digest_of, hasher, is_digest, matches
from ocigitops.errors import InvalidDigestError, MalformedDocumentError, SizeLimitError
from ocigitops.extract import Limits
from ocigitops.puller.cache import ArtifactCache
from ocigitops.registry import Descriptor

pytestmark = pytest.mark.unit

S256 = "sha256:" + hashlib.sha256(b"x").hexdigest()
S512 = "sha512:" + hashlib.sha512(b"x").hexdigest()


@pytest.mark.parametrize("value", [S256, S512])
def test_canonical_digests(value: str) -> None:
    assert is_digest(value) and check_digest(value) == value
    assert matches(value, b"x") and not matches(value, b"y")
    h = hasher(value)
    h.update(b"x")
    assert value.endswith(h.hexdigest())
    assert digest_of(b"x", value) == value


@pytest.mark.parametrize("value", [
    S256.upper(), "SHA256:" + S256[7:], "sha256:" + S256[7:].upper(), S256[:-1],
    S256 + "0", "sha384:" + hashlib.sha384(b"x").hexdigest(), "md5:" + "0" * 32,
    S256 + "\n", " " + S256, "sha512:" + "0" * 64, 123, None, ""])
def test_non_canonical_digests_are_refused(value: object) -> None:
    assert not is_digest(value)
    with pytest.raises(InvalidDigestError, match="canonical"):
        check_digest(value)


@pytest.mark.parametrize("doc", [
    {"mediaType": "a", "digest": "SHA256:" + S256[7:].upper(), "size": 1},
    {"mediaType": "a", "digest": S256, "size": -1},
    {"mediaType": "a", "digest": S256, "size": 1.5},
    {"mediaType": "a", "digest": S256, "size": "1"},
    {"mediaType": "a", "digest": S256, "size": True},
    {"mediaType": "a", "digest": S256, "size": 2 ** 64},
    {"mediaType": 5, "digest": S256, "size": 1},
])
def test_descriptor_refuses_what_go_would_read_otherwise(doc: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Descriptor.from_json(doc)


def test_descriptor_takes_sha512() -> None:
    assert Descriptor.from_json({"mediaType": "a", "digest": S512, "size": 1}).digest == S512


@pytest.mark.parametrize("text,why", [
    ('{"a": 1, "a": 2}', "twice"),
    ('{"digest": "x", "Digest": "y"}', "twice"),
    ('{"a": {"b": 1, "B": 2}}', "twice"),
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ("[" * 65 + "]" * 65, "nested"),
    ('{"a": NaN}', "not valid JSON"),
    (b'{"a": "\xff"}', "not valid JSON"),
    ("{", "not valid JSON"),
])
def test_strict_json_refuses(text: str | bytes, why: str) -> None:
    with pytest.raises(MalformedDocumentError, match=why):
        jsonsafe.loads(text, "doc")


def test_strict_json_reads_ordinary_documents() -> None:
    assert jsonsafe.loads_object('{"a": [1, {"b": null}], "B2": true}', "doc") == {
        "a": [1, {"b": None}], "B2": True}
    assert jsonsafe.loads("[" * 64 + "]" * 64, "doc") is not None
    with pytest.raises(MalformedDocumentError, match="not a JSON object"):
        jsonsafe.loads_object("[]", "doc")


def test_cache_keys(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    assert cache.path(S512).parent.name == "sha512"
    with pytest.raises(InvalidDigestError):
        cache.path("sha256:" + S256[7:].upper())
    with pytest.raises(InvalidDigestError):
        cache.has("../../etc/passwd")


def test_layer_size_bound_follows_the_limit() -> None:
    small = Limits(max_total=1_000_000)
    assert small.max_stream == 1_000_000 + 1024 * 1024  # the allowance never below 1 MiB
    assert Limits().max_stream == Limits().max_total + 64 * 1024 * 1024
    small.check_layer_size(small.max_stream, "layer")
    with pytest.raises(SizeLimitError, match="over the 2048576-byte limit"):
        small.check_layer_size(small.max_stream + 1, "layer")
