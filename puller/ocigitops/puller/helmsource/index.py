"""A Helm repository's ``index.yaml``: read it (bounded, strictly), pick a chart version,
resolve a chart's URL.

The index is untrusted: it comes from any HTTP server a tenant names. It is refused when
over :data:`INDEX_MAX_BYTES` (Flux's ``--helm-index-max-size`` default, 50 MiB), read with
the strict safe loader of :mod:`ocigitops.chart` (no aliases, no duplicate keys), and only
the fields used are checked: ``entries.<chart>[].version``, ``urls`` and ``digest``. An
entry whose version is not semver is skipped, as Helm skips it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import semver

from ocigitops import jsonsafe
from ocigitops.chart import ChartError, load_yaml
from ocigitops.digests import digest_of
from ocigitops.errors import NotFoundError, OcigitopsError, SizeLimitError, UsageError
from ocigitops.puller.cache import ArtifactCache, CorruptCacheError
from ocigitops.tags import parse_semver, semver_matches

#: Flux's default ``--helm-index-max-size``.
INDEX_MAX_BYTES = 50 * 1024 * 1024
_HEX64 = re.compile(r"^[a-f0-9]{64}$")


class RepositoryIndexError(ChartError):
    """The repository index is invalid."""


@dataclass(frozen=True)
class ChartVersion:
    """One version of a chart in the index."""

    name: str
    version: str
    urls: tuple[str, ...]
    #: sha256 hex of the archive, when the index gives one (``helm repo index`` does).
    digest: str | None = None


@dataclass(frozen=True)
class RepositoryIndex:
    """The parsed index: chart name -> versions (index order)."""

    entries: Mapping[str, tuple[ChartVersion, ...]]

    def versions(self, chart: str) -> tuple[ChartVersion, ...]:
        """The versions of ``chart`` (NotFoundError when the index has none)."""
        found = self.entries.get(chart)
        if not found:
            raise NotFoundError(f"chart {chart!r} is not in the repository index")
        return found


def _version_entry(chart: str, raw: Any) -> ChartVersion | None:
    if not isinstance(raw, Mapping):
        return None
    version = raw.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(version, str) or parse_semver(version) is None:
        return None  # Helm skips entries it cannot read
    urls = raw.get("urls")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        return None
    digest = raw.get("digest")
    if digest is not None and (not isinstance(digest, str) or not _HEX64.match(digest)):
        raise RepositoryIndexError(f"index entry {chart} {version}: digest"
                                   f" {str(digest)[:80]!r} is not a sha256 hex digest")
    return ChartVersion(name=chart, version=version, urls=tuple(urls), digest=digest)


def parse_index(data: bytes, *, max_bytes: int = INDEX_MAX_BYTES) -> RepositoryIndex:
    """Parse ``index.yaml`` bytes. Raises :class:`~ocigitops.errors.SizeLimitError` over
    ``max_bytes`` and :class:`RepositoryIndexError` for a document that is not an index."""
    try:
        if data.lstrip()[:1] == b"{":
            # A JSON index (``helm repo index --json``): read strictly, and far faster.
            if len(data) > max_bytes:
                raise SizeLimitError(f"repository index is {len(data)} bytes, over the"
                                     f" {max_bytes}-byte limit")
            doc = jsonsafe.loads(data, "repository index")
        else:
            doc = load_yaml(data, "repository index", max_bytes)
    except RepositoryIndexError:
        raise
    except SizeLimitError:
        raise
    except (ChartError, OcigitopsError) as e:
        raise RepositoryIndexError(str(e)) from None
    if not isinstance(doc, Mapping):
        raise RepositoryIndexError("repository index is not a YAML mapping")
    if doc.get("apiVersion") not in (None, "v1"):
        api = str(doc.get("apiVersion"))[:40]
        raise RepositoryIndexError(f"repository index apiVersion {api!r} is not v1")
    raw = doc.get("entries")
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise RepositoryIndexError("repository index 'entries' is not a mapping")
    entries: dict[str, tuple[ChartVersion, ...]] = {}
    for name, versions in raw.items():
        if not isinstance(name, str) or not isinstance(versions, list):
            continue
        found = [v for v in (_version_entry(name, r) for r in versions) if v is not None]
        if found:
            entries[name] = tuple(found)
    return RepositoryIndex(entries)


def _key(v: ChartVersion) -> semver.Version:
    parsed = parse_semver(v.version)
    assert parsed is not None  # only semver entries are kept
    return parsed


def select_version(index: RepositoryIndex, chart: str, constraint: str = "*") -> ChartVersion:
    """The chart version ``constraint`` selects: an exact version when it names one (a
    prerelease included), else the highest version in the range (``*``: the latest
    release), as Helm's ``IndexFile.Get``. Raises NotFoundError naming what exists."""
    versions = index.versions(chart)
    constraint = (constraint or "*").strip()
    exact = [v for v in versions if v.version == constraint
             or v.version == constraint.removeprefix("v")]
    if exact:
        return exact[0]
    try:
        matched = [v for v in versions if semver_matches(_key(v), constraint)]
    except UsageError as e:
        raise UsageError(f"version {constraint!r} is not a semver range: {e}") from None
    if not matched:
        newest = sorted(versions, key=_key, reverse=True)[:5]
        raise NotFoundError(f"no chart version of {chart!r} matches {constraint!r}"
                            f" (latest: {', '.join(v.version for v in newest)})")
    return max(matched, key=_key)


def resolve_url(index_url: str, chart_url: str) -> str:
    """A chart URL of the index, made absolute against the repository URL as Helm does
    (``ResolveReferenceURL``: the repository URL gets a trailing slash, its query is
    kept). Only http and https URLs are accepted."""
    parts = urlsplit(chart_url)
    if parts.scheme and parts.scheme not in ("http", "https"):
        raise RepositoryIndexError(f"chart URL {chart_url[:200]!r}: only http and https are"
                          " supported")
    if parts.scheme:
        return chart_url
    base = urlsplit(index_url)
    path = base.path.removesuffix("index.yaml") if base.path.endswith("/index.yaml") \
        else base.path
    base_url = base._replace(path=path.rstrip("/") + "/", query="", fragment="").geturl()
    resolved = urlsplit(urljoin(base_url, chart_url))
    if base.query and not resolved.query:
        resolved = resolved._replace(query=base.query)
    return resolved.geturl()


def index_url(repository_url: str) -> str:
    """``<url>/index.yaml`` (the URL of a Helm repository names its folder)."""
    parts = urlsplit(repository_url)
    return parts._replace(path=parts.path.rstrip("/") + "/index.yaml").geturl()




def chart_versions(index: RepositoryIndex, chart: str) -> Sequence[str]:
    """The versions of ``chart``, newest first (for messages and tests)."""
    return [v.version for v in sorted(index.versions(chart), key=_key, reverse=True)]


def read_cached(cache: ArtifactCache, digest: str, max_bytes: int = INDEX_MAX_BYTES) -> bytes:
    """A stored index, read from the cache and hashed again (a replaced or corrupt file
    is refused, as every cache read is): :class:`~ocigitops.puller.cache.CorruptCacheError`
    names it, and it is removed so the HelmRepository fetches it again."""
    path = cache.path(digest)
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes or digest_of(data, digest) != digest:
        path.unlink(missing_ok=True)
        raise CorruptCacheError(f"cached index {digest} is corrupt: removed, it will be"
                                " fetched again")
    return data
