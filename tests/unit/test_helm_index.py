"""Helm repository index parsing (ocigitops.puller.helmsource.index): strict and bounded,
Helm's version selection, URL resolution, the cached index re-hashed on read; and the API
types of HelmRepository and HelmChart."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocigitops.digests import digest_of
from ocigitops.errors import NotFoundError, SizeLimitError, UsageError
from ocigitops.puller.api.helmchart import parse_helm_chart
from ocigitops.puller.api.helmrepository import parse_helm_repository
from ocigitops.puller.api.schema import ValidationError
from ocigitops.puller.cache import ArtifactCache, CorruptCacheError
from ocigitops.puller.helmsource.index import (
    RepositoryIndexError,
    chart_versions,
    index_url,
    parse_index,
    read_cached,
    resolve_url,
    select_version,
)
from ocigitops.puller.ops import Target, parse_target
from ocigitops.puller.sources.helmchart import references

INDEX = b"""apiVersion: v1
entries:
  web:
  - name: web
    version: 1.0.0
    urls: [web-1.0.0.tgz]
    digest: %s
  - name: web
    version: 1.2.0
    urls: [https://cdn.example/web-1.2.0.tgz]
  - name: web
    version: 2.0.0-rc.1
    urls: [web-2.0.0-rc.1.tgz]
  - name: web
    version: not-semver
    urls: [web-x.tgz]
  - name: web
    version: 1.5.0
    urls: []
generated: "2026-01-01T00:00:00Z"
""" % (b"a" * 64)


def test_parse_and_select() -> None:
    index = parse_index(INDEX)
    assert chart_versions(index, "web") == ["2.0.0-rc.1", "1.2.0", "1.0.0"]  # invalid skipped
    assert select_version(index, "web").version == "1.2.0"  # '*': the latest release
    assert select_version(index, "web", "~1.0").version == "1.0.0"
    assert select_version(index, "web", "2.0.0-rc.1").version == "2.0.0-rc.1"  # exact
    assert select_version(index, "web", ">=2.0.0-0").version == "2.0.0-rc.1"
    assert select_version(index, "web", "1.0.0").digest == "a" * 64
    with pytest.raises(NotFoundError, match=r"latest: 2\.0\.0-rc\.1, 1\.2\.0"):
        select_version(index, "web", ">=3")
    with pytest.raises(NotFoundError, match="not in the repository index"):
        select_version(index, "db")
    with pytest.raises(UsageError):
        select_version(index, "web", "garbage!")


@pytest.mark.parametrize(("doc", "message"), [
    (b"apiVersion: v2\nentries: {}\n", "apiVersion"),
    (b"entries: [1]\n", "not a mapping"),
    (b"- 1\n", "not a YAML mapping"),
    (b"entries:\n  web:\n  - {version: 1.0.0, urls: [a], digest: nothex}\n", "sha256 hex"),
    (b"entries: {}\nentries: {}\n", "duplicate key"),
    (b"x: &a [1]\nentries: {web: *a}\n", "aliases"),
])
def test_bad_indexes(doc: bytes, message: str) -> None:
    with pytest.raises(RepositoryIndexError, match=message):
        parse_index(doc)


def test_index_size_cap() -> None:
    with pytest.raises(SizeLimitError, match="1000-byte limit"):
        parse_index(b"#" * 1001, max_bytes=1000)
    assert parse_index(b"apiVersion: v1\n").entries == {}


def test_urls() -> None:
    assert index_url("https://h/charts/") == "https://h/charts/index.yaml"
    assert index_url("https://h") == "https://h/index.yaml"
    base = "https://h/charts/index.yaml?token=t"
    assert resolve_url(base, "web-1.0.0.tgz") == "https://h/charts/web-1.0.0.tgz?token=t"
    assert resolve_url(base, "../up/web.tgz") == "https://h/up/web.tgz?token=t"
    assert resolve_url(base, "https://cdn/x.tgz") == "https://cdn/x.tgz"
    for bad in ("file:///etc/passwd", "ftp://h/x.tgz", "javascript:alert(1)"):
        with pytest.raises(RepositoryIndexError, match="only http and https"):
            resolve_url(base, bad)


def test_cached_index_rehashed(tmp_path: Path) -> None:
    import asyncio

    cache = ArtifactCache(tmp_path)
    digest = digest_of(INDEX)

    async def chunks():  # type: ignore[no-untyped-def]
        yield INDEX

    asyncio.run(cache.store(digest, chunks()))
    assert read_cached(cache, digest) == INDEX
    cache.path(digest).write_bytes(INDEX + b"# tampered\n")
    with pytest.raises(CorruptCacheError):
        read_cached(cache, digest)
    assert not cache.has(digest)  # removed, fetched again by the HelmRepository


def test_api_types() -> None:
    repo = parse_helm_repository({"metadata": {"name": "r", "namespace": "a"},
                                  "spec": {"url": "https://charts.example"}})
    assert repo.spec.interval_seconds == 60 and repo.spec.timeout_seconds == 60
    oci = parse_helm_repository({"metadata": {"name": "r"},
                                 "spec": {"url": "oci://ghcr.io/acme", "type": "oci"}})
    assert oci.spec.is_oci
    with pytest.raises(ValidationError, match="needs an oci:// URL"):
        parse_helm_repository({"metadata": {"name": "r"},
                               "spec": {"url": "https://x", "type": "oci"}})
    with pytest.raises(ValidationError, match="http:// or https://"):
        parse_helm_repository({"metadata": {"name": "r"}, "spec": {"url": "oci://x/y"}})
    chart = parse_helm_chart({"metadata": {"name": "c", "namespace": "a"}, "spec": {
        "chart": "web", "interval": "5m",
        "sourceRef": {"kind": "HelmRepository", "name": "r"},
        "verify": {"provider": "cosign", "secretRef": {"name": "k"}}}})
    assert chart.spec.version == "*" and chart.spec.reconcile_strategy == "ChartVersion"
    assert chart.spec.verify is not None
    with pytest.raises(ValidationError, match=r"sourceRef\.kind"):
        parse_helm_chart({"metadata": {"name": "c"}, "spec": {
            "chart": "web", "interval": "5m", "sourceRef": {"kind": "Bucket", "name": "b"}}})
    # Flux's CLI words: `source helm` and `source chart` (`hr` stays HelmRelease's).
    assert parse_target("source", ["helm", "r"]) == Target("HelmRepository", "r")
    assert parse_target("source", ["chart", "c"]) == Target("HelmChart", "c")
    assert parse_target("source", ["chart"], all_=True) == Target("HelmChart", "")
    assert references({"metadata": {"namespace": "a"}, "spec": {
        "sourceRef": {"kind": "HelmRepository", "name": "r"}}}) == [
        ("HelmRepository", "a", "r")]


def test_json_index_and_ampersands() -> None:
    # `helm repo index --json` writes JSON: read by the strict JSON reader (duplicate keys
    # refused there too).
    doc = (b'{"apiVersion":"v1","entries":{"web":[{"name":"web","version":"1.0.0",'
           b'"urls":["web-1.0.0.tgz"]}]}}')
    assert select_version(parse_index(doc), "web").version == "1.0.0"
    with pytest.raises(RepositoryIndexError, match="key 'entries' twice"):
        parse_index(b'{"entries":{},"entries":{}}')
    # An '&' in a value is no anchor: the document is read (with the alias check on).
    yml = b"entries:\n  web:\n  - {version: 1.0.0, urls: ['x.tgz?a=1&b=2']}\n"
    assert parse_index(yml).versions("web")[0].urls == ("x.tgz?a=1&b=2",)
