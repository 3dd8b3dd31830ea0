"""A small embedded OCI distribution-spec 1.1 registry.

Why it lives here: a newcomer should be able to run the whole publish, sign, verify and
reconcile pipeline with nothing but this package installed, and local work and unit tests
should not need Docker, zot or any other external registry. The distribution API is a
handful of plain HTTP endpoints over content-addressed files, so the standard library
(``http.server`` with HTTP/1.1 keep-alive, ``hashlib``, ``os.replace``) is enough, and a
development tool should not pull a web framework into every installation.

It passes the OCI distribution-spec conformance suite for pull, push, content discovery
(tags and the referrers API) and content management.

Storage: each repository ``<storage>/<repo/name>/`` is an OCI image layout: an
``oci-layout`` file, an ``index.json`` whose manifest descriptors carry
``org.opencontainers.image.ref.name`` for tags (untagged descriptors keep manifests that are
only reachable by digest), and ``blobs/sha256/<hex>`` holding blobs and manifests alike. Any
repository can therefore be copied out and read by tools that understand OCI layouts. Upload
sessions live under ``<storage>/_uploads/`` (``_`` cannot start a repository name). Every
write is a temporary file followed by ``os.replace``, so readers never see partial content.

Not implemented, on purpose: authentication and TLS (bind to 127.0.0.1), ``/v2/_catalog``,
garbage collection of unreferenced blobs, paging of the referrers list, and repository
names whose second or later path component is ``blobs``, ``index.json`` or ``oci-layout``
(they would land inside the parent repository's layout; refused with ``NAME_INVALID``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, cast
from urllib.parse import quote, unquote

from ocigitops.errors import AddressInUseError, InvalidAddressError, OcigitopsError
from ocigitops.mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from ocigitops.version import __version__

__all__ = ["BackgroundRegistry", "main", "make_server", "parse_address", "serve"]

log = logging.getLogger("ocigitops.regserver")  # stable name also under -m

# Large reads and writes: hashing and disk I/O dominate, not Python call overhead.
CHUNK_SIZE = 1 << 20
# The distribution spec asks registries to accept manifests of at least 4 MiB; refusing
# larger ones here means a push that works locally also works against hosted registries.
MAX_MANIFEST_BYTES = 4 << 20
# Error responses are sent after draining the request body so the connection can be
# reused; beyond this much unread body it is cheaper to close the connection.
MAX_DRAIN_BYTES = 1 << 20
# Upload sessions not touched for this long are removed at start-up.
STALE_UPLOAD_SECONDS = 24 * 3600
# Idle keep-alive connections are closed after this long, so threads do not pile up.
CONNECTION_TIMEOUT_SECONDS = 300

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
REF_NAME = "org.opencontainers.image.ref.name"
UPLOADS_DIR = "_uploads"
# Names of OCI layout entries: a nested repository with one of these as a path component
# would land inside its parent's layout, so such names are refused.
RESERVED_COMPONENTS = frozenset({"blobs", "index.json", "oci-layout"})

IMAGE_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_MANIFEST_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)

# Regular expressions of the distribution spec.
NAME_RE = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
SHA256_HEX_RE = re.compile(r"[a-f0-9]{64}")
UPLOAD_ID_RE = re.compile(r"[a-f0-9]{32}")
CONTENT_RANGE_RE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?")
RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
MAX_NAME_LENGTH = 255

# Non-greedy name: the shortest name followed by a known endpoint wins, which is how
# distribution resolves names that contain words such as "manifests".
ROUTE_RE = re.compile(
    r"/v2/(?P<name>.+?)/(?:"
    r"blobs/uploads/?(?P<upload>[^/]*)"
    r"|blobs/(?P<blob>[^/]+)"
    r"|manifests/(?P<manifest>[^/]+)"
    r"|(?P<tags>tags/list)"
    r"|referrers/(?P<subject>[^/]+)"
    r")"
)


class RegistryAPIError(Exception):
    """An error answered as distribution-spec JSON ``{"errors": [...]}``."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> bytes:
        """The JSON error document."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            err["detail"] = self.detail
        return json.dumps({"errors": [err]}).encode()


def _name_unknown(name: str) -> RegistryAPIError:
    return RegistryAPIError(404, "NAME_UNKNOWN", "repository name not known to registry",
                            {"name": name})


def _blob_unknown(digest: str) -> RegistryAPIError:
    return RegistryAPIError(404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest})


def _manifest_unknown(reference: str) -> RegistryAPIError:
    return RegistryAPIError(404, "MANIFEST_UNKNOWN", "manifest unknown",
                            {"reference": reference})


def _upload_unknown(upload_id: str) -> RegistryAPIError:
    return RegistryAPIError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry",
                            {"uuid": upload_id})


def validate_name(name: str) -> None:
    """Raise ``NAME_INVALID`` unless ``name`` is a valid repository name for this registry."""
    if len(name) > MAX_NAME_LENGTH or not NAME_RE.fullmatch(name):
        raise RegistryAPIError(400, "NAME_INVALID", "invalid repository name", {"name": name})
    if any(part in RESERVED_COMPONENTS for part in name.split("/")[1:]):
        raise RegistryAPIError(
            400, "NAME_INVALID",
            "repository path components after the first may not be blobs, index.json or "
            "oci-layout (they would collide with the parent's OCI layout)", {"name": name})


def parse_digest(value: str) -> str:
    """Return ``value`` if it is a well-formed digest, else raise ``DIGEST_INVALID``."""
    if not DIGEST_RE.fullmatch(value):
        raise RegistryAPIError(400, "DIGEST_INVALID", "invalid digest", {"digest": value})
    algorithm, _, encoded = value.partition(":")
    if algorithm == "sha256" and not SHA256_HEX_RE.fullmatch(encoded):
        raise RegistryAPIError(400, "DIGEST_INVALID", "invalid sha256 digest",
                               {"digest": value})
    return value


def sha256_hex(digest: str) -> str | None:
    """The hex part of a sha256 digest, or None for other algorithms (never stored here)."""
    algorithm, _, encoded = digest.partition(":")
    return encoded if algorithm == "sha256" else None


def require_sha256(digest: str) -> str:
    """The hex part of a sha256 digest; other algorithms are ``UNSUPPORTED`` for writes."""
    hex_ = sha256_hex(parse_digest(digest))
    if hex_ is None:
        raise RegistryAPIError(400, "UNSUPPORTED", "only sha256 digests are supported",
                               {"digest": digest})
    return hex_


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _tag_of(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    if isinstance(annotations, dict):
        tag = annotations.get(REF_NAME)
        if isinstance(tag, str):
            return tag
    return None


def _untagged(entry: dict[str, Any]) -> dict[str, Any]:
    copy = dict(entry)
    annotations = {k: v for k, v in (entry.get("annotations") or {}).items() if k != REF_NAME}
    copy.pop("annotations", None)
    if annotations:
        copy["annotations"] = annotations
    return copy


def _artifact_type(doc: dict[str, Any]) -> str | None:
    """The referrers-API artifact type: ``artifactType``, else the config media type."""
    value = doc.get("artifactType")
    if isinstance(value, str) and value:
        return value
    config = doc.get("config")
    if isinstance(config, dict) and isinstance(config.get("mediaType"), str):
        return cast(str, config["mediaType"])
    return None


def _subject_digest(doc: dict[str, Any]) -> str | None:
    subject = doc.get("subject")
    if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
        return cast(str, subject["digest"])
    return None


def _referrer_descriptor(media_type: str, digest: str, size: int,
                         doc: dict[str, Any]) -> dict[str, Any]:
    desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    artifact_type = _artifact_type(doc)
    if artifact_type:
        desc["artifactType"] = artifact_type
    annotations = doc.get("annotations")
    if isinstance(annotations, dict) and annotations:
        desc["annotations"] = annotations
    return desc


def _check_descriptor(desc: Any, where: str) -> str:
    """Validate a descriptor's shape; return its digest."""
    if not isinstance(desc, dict):
        raise RegistryAPIError(400, "MANIFEST_INVALID", f"{where} is not a descriptor")
    digest = desc.get("digest")
    size = desc.get("size")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise RegistryAPIError(400, "MANIFEST_INVALID", f"{where} has an invalid digest",
                               {"digest": digest})
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryAPIError(400, "MANIFEST_INVALID", f"{where} has an invalid size",
                               {"digest": digest})
    return digest


def parse_manifest(data: bytes, content_type: str | None) -> tuple[str, dict[str, Any], list[str]]:
    """Validate a pushed manifest.

    Returns its media type, the parsed document and the digests of the blobs it requires
    (config and layers of image manifests; foreign layers with ``urls`` are not required).
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryAPIError(400, "MANIFEST_INVALID", f"manifest is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RegistryAPIError(400, "MANIFEST_INVALID", "manifest is not a JSON object")
    declared = doc.get("mediaType")
    media_type = (content_type or "").split(";")[0].strip() or declared
    if not isinstance(media_type, str) or not media_type:
        raise RegistryAPIError(400, "MANIFEST_INVALID",
                               "no media type: send Content-Type or a mediaType field")
    if declared is not None and declared != media_type:
        raise RegistryAPIError(400, "MANIFEST_INVALID",
                               "mediaType field does not match Content-Type",
                               {"mediaType": declared, "contentType": media_type})
    required: list[str] = []
    if media_type in IMAGE_MANIFEST_TYPES:
        if doc.get("schemaVersion") != 2:
            raise RegistryAPIError(400, "MANIFEST_INVALID", "schemaVersion must be 2")
        required.append(_check_descriptor(doc.get("config"), "config"))
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise RegistryAPIError(400, "MANIFEST_INVALID", "layers must be a list")
        for i, layer in enumerate(layers):
            digest = _check_descriptor(layer, f"layers[{i}]")
            if not layer.get("urls"):
                required.append(digest)
    elif media_type in INDEX_MANIFEST_TYPES:
        if doc.get("schemaVersion") != 2:
            raise RegistryAPIError(400, "MANIFEST_INVALID", "schemaVersion must be 2")
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise RegistryAPIError(400, "MANIFEST_INVALID", "manifests must be a list")
        for i, child in enumerate(manifests):
            _check_descriptor(child, f"manifests[{i}]")
    if "subject" in doc:
        _check_descriptor(doc["subject"], "subject")
    return media_type, doc, required


@dataclass
class _Upload:
    """An upload session; the running hash lets PUT finish without re-reading the data."""

    id: str
    repo: str
    dir: Path
    hasher: hashlib._Hash
    offset: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    @property
    def data(self) -> Path:
        return self.dir / "data"


class Store:
    """Repositories as OCI image layouts under one directory, plus upload sessions."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.uploads_root = self.root / UPLOADS_DIR
        self.uploads_root.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()
        self._repo_locks: dict[str, threading.RLock] = {}
        self._uploads: dict[str, _Upload] = {}
        # repo -> subject digest -> referrer digest -> descriptor
        self._referrers: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}

    # --- repositories -------------------------------------------------------------------

    def repo_dir(self, name: str) -> Path:
        return self.root.joinpath(*name.split("/"))

    def repo_exists(self, name: str) -> bool:
        return (self.repo_dir(name) / "oci-layout").is_file()

    def _lock(self, name: str) -> threading.RLock:
        with self._guard:
            return self._repo_locks.setdefault(name, threading.RLock())

    def ensure_repo(self, name: str) -> Path:
        """Create the repository's OCI layout if it does not exist yet."""
        d = self.repo_dir(name)
        if (d / "oci-layout").is_file():
            return d
        with self._lock(name):
            (d / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            if not (d / "index.json").is_file():
                self._write_index(name, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                         "manifests": []})
            # Written last: its presence is what makes the repository exist.
            if not (d / "oci-layout").is_file():
                _atomic_write(d / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        return d

    def _read_index(self, name: str) -> dict[str, Any]:
        try:
            doc = json.loads((self.repo_dir(name) / "index.json").read_bytes())
        except FileNotFoundError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        doc.setdefault("schemaVersion", 2)
        doc.setdefault("mediaType", OCI_INDEX)
        if not isinstance(doc.get("manifests"), list):
            doc["manifests"] = []
        return doc

    def _write_index(self, name: str, doc: dict[str, Any]) -> None:
        _atomic_write(self.repo_dir(name) / "index.json", json.dumps(doc, indent=2).encode())

    def scan(self) -> None:
        """Rebuild the in-memory referrers index and drop stale upload sessions."""
        referrers: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        for name in self.repositories():
            for entry in self._read_index(name)["manifests"]:
                digest, media_type = entry.get("digest"), entry.get("mediaType")
                if not isinstance(digest, str) or not isinstance(media_type, str):
                    continue
                path = self.blob_path(name, digest)
                if path is None:
                    continue
                try:
                    data = path.read_bytes()
                    doc = json.loads(data)
                except (OSError, ValueError):
                    log.warning("unreadable manifest %s in %s", digest, name)
                    continue
                subject = _subject_digest(doc) if isinstance(doc, dict) else None
                if subject:
                    desc = _referrer_descriptor(media_type, digest, len(data), doc)
                    referrers.setdefault(name, {}).setdefault(subject, {})[digest] = desc
        with self._guard:
            self._referrers = referrers
        cutoff = time.time() - STALE_UPLOAD_SECONDS
        for entry in self.uploads_root.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime >= cutoff:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()  # a mount's temporary link left by a crash

    def repositories(self) -> list[str]:
        """Names of all repositories, sorted."""
        names: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            if rel.parts and rel.parts[0] == UPLOADS_DIR:
                dirnames[:] = []
                continue
            if "oci-layout" in filenames and rel.parts:
                names.append("/".join(rel.parts))
            # A layout's blobs are never nested repositories (such names are refused).
            dirnames[:] = sorted(d for d in dirnames if d != "blobs" and d != UPLOADS_DIR)
        return sorted(names)

    # --- blobs --------------------------------------------------------------------------

    def blob_path(self, name: str, digest: str) -> Path | None:
        """Path of an existing blob (or manifest) in repository ``name``, else None."""
        hex_ = sha256_hex(digest)
        if hex_ is None:
            return None
        path = self.repo_dir(name) / "blobs" / "sha256" / hex_
        return path if path.is_file() else None

    def _blob_target(self, name: str, hex_: str) -> Path:
        return self.ensure_repo(name) / "blobs" / "sha256" / hex_

    def delete_blob(self, name: str, digest: str) -> None:
        """Delete a blob; manifests must be deleted through the manifests endpoint."""
        with self._lock(name):
            path = self.blob_path(name, digest)
            if path is None:
                raise _blob_unknown(digest)
            if any(e.get("digest") == digest for e in self._read_index(name)["manifests"]):
                raise RegistryAPIError(
                    405, "UNSUPPORTED",
                    "this digest is a manifest: delete it with DELETE /v2/<name>/manifests/",
                    {"digest": digest})
            path.unlink(missing_ok=True)

    def mount(self, name: str, source: str, digest: str) -> bool:
        """Make ``source``'s blob available in ``name``; False if ``source`` lacks it."""
        src = self.blob_path(source, digest)
        hex_ = sha256_hex(digest)
        if src is None or hex_ is None:
            return False
        target = self._blob_target(name, hex_)
        tmp = self.uploads_root / f".mount-{uuid.uuid4().hex}"
        try:
            # A hard link costs nothing and deleting either name leaves the other intact.
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, target)
        except FileNotFoundError:
            return False  # deleted from the source meanwhile
        finally:
            tmp.unlink(missing_ok=True)
        return True

    # --- upload sessions ----------------------------------------------------------------

    def new_upload(self, name: str) -> _Upload:
        upload_id = uuid.uuid4().hex
        d = self.uploads_root / upload_id
        d.mkdir()
        (d / "repo").write_text(name)
        (d / "data").touch()
        up = _Upload(upload_id, name, d, hashlib.sha256(), 0)
        with self._guard:
            self._uploads[upload_id] = up
        return up

    def get_upload(self, name: str, upload_id: str) -> _Upload:
        """The session ``upload_id`` of repository ``name``; reloaded from disk if needed."""
        if not UPLOAD_ID_RE.fullmatch(upload_id):
            raise _upload_unknown(upload_id)
        with self._guard:
            up = self._uploads.get(upload_id)
        if up is None:
            # A session started before a restart: its hash state is rebuilt from the data.
            d = self.uploads_root / upload_id
            try:
                repo = (d / "repo").read_text()
                hasher = hashlib.sha256()
                size = 0
                with open(d / "data", "rb") as f:
                    while block := f.read(CHUNK_SIZE):
                        hasher.update(block)
                        size += len(block)
            except OSError:
                raise _upload_unknown(upload_id) from None
            with self._guard:
                up = self._uploads.setdefault(upload_id, _Upload(upload_id, repo, d, hasher, size))
        if up.repo != name or up.closed:
            raise _upload_unknown(upload_id)
        return up

    def append(self, up: _Upload, chunks: Iterable[bytes], start: int | None = None,
               length: int | None = None) -> None:
        """Append a chunk to a session, hashing while writing.

        ``start`` (from ``Content-Range``) must equal the current size, else 416. On any
        failure the session is rolled back to its previous size, so a retry can resend.
        """
        with up.lock:
            if up.closed:
                raise _upload_unknown(up.id)
            if start is not None and start != up.offset:
                raise RegistryAPIError(
                    416, "BLOB_UPLOAD_INVALID", "chunk does not start at the end of the upload",
                    {"expected": up.offset, "start": start})
            saved, begin = up.hasher.copy(), up.offset
            try:
                with open(up.data, "r+b") as f:
                    f.seek(begin)
                    for block in chunks:
                        f.write(block)
                        up.hasher.update(block)
                        up.offset += len(block)
                if length is not None and up.offset - begin != length:
                    raise RegistryAPIError(
                        400, "BLOB_UPLOAD_INVALID", "chunk length does not match Content-Range",
                        {"expected": length, "received": up.offset - begin})
            except BaseException:
                up.hasher, up.offset = saved, begin
                with contextlib.suppress(OSError), open(up.data, "r+b") as f:
                    f.truncate(begin)
                raise

    def finish(self, up: _Upload, digest: str) -> None:
        """Verify the session's digest and move its data into the repository."""
        hex_ = require_sha256(digest)
        with up.lock:
            if up.closed:
                raise _upload_unknown(up.id)
            actual = "sha256:" + up.hasher.hexdigest()
            if actual != digest:
                self._close_upload(up)
                raise RegistryAPIError(400, "DIGEST_INVALID",
                                       "provided digest did not match uploaded content",
                                       {"expected": digest, "actual": actual})
            os.replace(up.data, self._blob_target(up.repo, hex_))
            self._close_upload(up)

    def cancel(self, up: _Upload) -> None:
        with up.lock:
            self._close_upload(up)

    def _close_upload(self, up: _Upload) -> None:
        up.closed = True
        with self._guard:
            self._uploads.pop(up.id, None)
        shutil.rmtree(up.dir, ignore_errors=True)

    def touch_upload(self, up: _Upload) -> None:
        with contextlib.suppress(OSError):
            os.utime(up.dir)

    # --- manifests ----------------------------------------------------------------------

    def find_manifest(self, name: str, reference: str) -> dict[str, Any] | None:
        """The index.json descriptor for a tag or digest, or None."""
        by_digest = ":" in reference
        for entry in self._read_index(name)["manifests"]:
            if not isinstance(entry, dict):
                continue
            if (entry.get("digest") if by_digest else _tag_of(entry)) == reference:
                return cast(dict[str, Any], entry)
        return None

    def put_manifest(self, name: str, tag: str | None, data: bytes, media_type: str,
                     doc: dict[str, Any]) -> str:
        """Store manifest bytes as received and point ``tag`` (if any) at them."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._lock(name):
            target = self._blob_target(name, digest[7:])
            if not target.is_file():
                _atomic_write(target, data)
            index = self._read_index(name)
            entries: list[dict[str, Any]] = index["manifests"]
            new: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(data)}
            artifact_type = doc.get("artifactType")
            if isinstance(artifact_type, str) and artifact_type:
                new["artifactType"] = artifact_type
            for entry in entries:
                if entry.get("digest") == digest:
                    entry["mediaType"] = media_type
            if tag is not None:
                replaced = [e for e in entries if _tag_of(e) == tag]
                entries = [e for e in entries
                           if _tag_of(e) != tag
                           and not (e.get("digest") == digest and _tag_of(e) is None)]
                entries.append({**new, "annotations": {REF_NAME: tag}})
                # A moved tag must not make its old manifest unreachable by digest.
                for old in replaced:
                    if not any(e.get("digest") == old.get("digest") for e in entries):
                        entries.append(_untagged(old))
            elif not any(e.get("digest") == digest for e in entries):
                entries.append(new)
            index["manifests"] = entries
            self._write_index(name, index)
            subject = _subject_digest(doc)
            if subject:
                with self._guard:
                    self._referrers.setdefault(name, {}).setdefault(subject, {})[digest] = (
                        _referrer_descriptor(media_type, digest, len(data), doc))
        return digest

    def delete_tag(self, name: str, tag: str) -> None:
        """Remove a tag; its manifest stays reachable by digest."""
        with self._lock(name):
            index = self._read_index(name)
            entries: list[dict[str, Any]] = index["manifests"]
            removed = [e for e in entries if _tag_of(e) == tag]
            if not removed:
                raise _manifest_unknown(tag)
            entries = [e for e in entries if _tag_of(e) != tag]
            for old in removed:
                if not any(e.get("digest") == old.get("digest") for e in entries):
                    entries.append(_untagged(old))
            index["manifests"] = entries
            self._write_index(name, index)

    def delete_manifest(self, name: str, digest: str) -> None:
        """Delete a manifest and every tag pointing at it."""
        with self._lock(name):
            index = self._read_index(name)
            entries: list[dict[str, Any]] = index["manifests"]
            if not any(e.get("digest") == digest for e in entries):
                raise _manifest_unknown(digest)
            index["manifests"] = [e for e in entries if e.get("digest") != digest]
            path = self.blob_path(name, digest)
            subject = None
            if path is not None:
                with contextlib.suppress(OSError, ValueError):
                    doc = json.loads(path.read_bytes())
                    subject = _subject_digest(doc) if isinstance(doc, dict) else None
            self._write_index(name, index)
            if path is not None:
                path.unlink(missing_ok=True)
            if subject:
                with self._guard:
                    by_subject = self._referrers.get(name, {})
                    refs = by_subject.get(subject)
                    if refs is not None:
                        refs.pop(digest, None)
                        if not refs:
                            del by_subject[subject]

    def tags(self, name: str) -> list[str]:
        """All tags of a repository in lexical order."""
        return sorted({t for e in self._read_index(name)["manifests"]
                       if (t := _tag_of(e)) is not None})

    def referrers(self, name: str, subject: str,
                  artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose ``subject`` is ``subject``."""
        with self._guard:
            found = list(self._referrers.get(name, {}).get(subject, {}).values())
        if artifact_type:
            found = [d for d in found if d.get("artifactType") == artifact_type]
        return found


class _RegistryServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its store and can cut open keep-alive connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: Store) -> None:
        self.store = store
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        # Without this, idle keep-alive connections would keep being served after stop().
        with self._connections_lock:
            open_connections = list(self._connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _RegistryServer6(_RegistryServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"ocigitops-regserver/{__version__}"
    sys_version = ""
    timeout = CONNECTION_TIMEOUT_SECONDS
    # Headers and body go out in separate writes; with Nagle's algorithm and delayed ACKs
    # every small response would wait ~40 ms.
    disable_nagle_algorithm = True

    # Per-request state, reset by _dispatch.
    _status = 0
    _bytes_in = 0
    _bytes_out = 0
    _body_left = 0
    _chunked = False
    _chunk_left = 0
    _chunk_done = False

    @property
    def store(self) -> Store:
        return cast(_RegistryServer, self.server).store

    # --- plumbing -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request is logged by _dispatch, with timings

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        started = time.monotonic()
        self._status = self._bytes_in = self._bytes_out = 0
        self._chunk_left, self._chunk_done = 0, False
        self._chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        try:
            self._body_left = 0 if self._chunked else int(self.headers.get("Content-Length", 0))
            if self._body_left < 0:
                raise ValueError("negative Content-Length")
        except ValueError:
            self._body_left = 0
            self.close_connection = True
            self._send_error(RegistryAPIError(400, "SIZE_INVALID", "invalid Content-Length"))
            return
        try:
            self._route()
        except RegistryAPIError as exc:
            self._send_error(exc)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, EOFError):
            self.close_connection = True
        except Exception as exc:
            log.exception("internal error on %s %s", self.command, self.path)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send_error(RegistryAPIError(500, "UNKNOWN", f"internal error: {exc}"))
        finally:
            self._discard_body()
            log.debug("method=%s path=%s status=%d in=%d out=%d ms=%.1f client=%s",
                      self.command, self.path, self._status, self._bytes_in, self._bytes_out,
                      (time.monotonic() - started) * 1000, self.client_address[0])

    def _body(self) -> Iterator[bytes]:
        """The request body in chunks of up to CHUNK_SIZE, never all in memory."""
        if self._chunked:
            yield from self._chunked_body()
            return
        while self._body_left > 0:
            block = self.rfile.read(min(CHUNK_SIZE, self._body_left))
            if not block:
                self._body_left = 0
                self.close_connection = True
                raise EOFError("client closed the connection mid-body")
            self._body_left -= len(block)
            self._bytes_in += len(block)
            yield block

    def _chunked_body(self) -> Iterator[bytes]:
        while not self._chunk_done:
            if self._chunk_left == 0:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self._chunk_done = True
                    self.close_connection = True
                    raise RegistryAPIError(400, "SIZE_INVALID", "malformed chunked body") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers are of no interest
                    self._chunk_done = True
                    return
                self._chunk_left = size
            block = self.rfile.read(min(CHUNK_SIZE, self._chunk_left))
            if not block:
                self._chunk_done = True
                self.close_connection = True
                raise EOFError("client closed the connection mid-body")
            self._chunk_left -= len(block)
            self._bytes_in += len(block)
            if self._chunk_left == 0:
                self.rfile.readline(1024)
            yield block

    def _read_body(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        for block in self._body():
            total += len(block)
            if total > limit:
                raise RegistryAPIError(413, "SIZE_INVALID", f"body larger than {limit} bytes")
            parts.append(block)
        return b"".join(parts)

    def _body_pending(self) -> bool:
        return self._body_left > 0 or (self._chunked and not self._chunk_done)

    def _discard_body(self) -> None:
        """Consume an unread body so the connection can serve the next request."""
        if not self._body_pending() or self.close_connection:
            return
        if not self._chunked and self._body_left > MAX_DRAIN_BYTES:
            self.close_connection = True
            return
        try:
            drained = 0
            for block in self._body():
                drained += len(block)
                if drained > MAX_DRAIN_BYTES:
                    self.close_connection = True
                    return
        except (OSError, EOFError, RegistryAPIError):
            self.close_connection = True

    def _respond(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                 content_type: str | None = None) -> None:
        self._discard_body()
        self._status = status
        self.send_response(status)
        self.send_header(*API_VERSION_HEADER)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
            self._bytes_out += len(body)

    def _send_json(self, status: int, doc: Any, content_type: str = "application/json",
                   headers: dict[str, str] | None = None) -> None:
        self._respond(status, json.dumps(doc).encode(), headers, content_type)

    def _send_error(self, exc: RegistryAPIError) -> None:
        self._respond(exc.status, exc.body(), exc.headers, "application/json")

    def _query(self) -> dict[str, str]:
        # Values are percent-decoded but '+' is kept: media types such as "...+json" are
        # common in artifactType and are sometimes sent unescaped.
        query = self.path.partition("?")[2]
        out: dict[str, str] = {}
        for pair in query.split("&"):
            if pair:
                key, _, value = pair.partition("=")
                out.setdefault(unquote(key), unquote(value))
        return out

    # --- routing ------------------------------------------------------------------------

    def _route(self) -> None:
        path = unquote(self.path.partition("?")[0])
        method = self.command
        if path in ("/v2", "/v2/"):
            self._allow(method, "GET", "HEAD")
            self._send_json(200, {})
            return
        m = ROUTE_RE.fullmatch(path)
        if m is None:
            raise RegistryAPIError(404, "UNSUPPORTED", "unknown endpoint", {"path": path})
        name = m["name"]
        validate_name(name)
        if m["upload"] is not None:
            upload_id = m["upload"]
            if not upload_id:
                self._allow(method, "POST")
                self._start_upload(name)
                return
            self._allow(method, "GET", "PATCH", "PUT", "DELETE")
            if method == "PATCH":
                self._upload_patch(name, upload_id)
            elif method == "PUT":
                self._upload_put(name, upload_id)
            elif method == "GET":
                self._upload_get(name, upload_id)
            else:
                self._upload_delete(name, upload_id)
        elif m["blob"] is not None:
            self._allow(method, "GET", "HEAD", "DELETE")
            digest = parse_digest(m["blob"])
            if method == "DELETE":
                self._require_repo(name)
                self.store.delete_blob(name, digest)
                self._respond(202)
            else:
                self._get_blob(name, digest)
        elif m["manifest"] is not None:
            self._allow(method, "GET", "HEAD", "PUT", "DELETE")
            reference = m["manifest"]
            if method == "PUT":
                self._put_manifest(name, reference)
            elif method == "DELETE":
                self._delete_manifest(name, reference)
            else:
                self._get_manifest(name, reference)
        elif m["tags"] is not None:
            self._allow(method, "GET", "HEAD")
            self._list_tags(name)
        else:
            self._allow(method, "GET", "HEAD")
            self._list_referrers(name, m["subject"])

    def _allow(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            raise RegistryAPIError(405, "UNSUPPORTED", f"{method} is not supported here",
                                   headers={"Allow": ", ".join(allowed)})

    def _require_repo(self, name: str) -> None:
        if not self.store.repo_exists(name):
            raise _name_unknown(name)

    # --- blobs --------------------------------------------------------------------------

    def _get_blob(self, name: str, digest: str) -> None:
        self._require_repo(name)
        path = self.store.blob_path(name, digest)
        if path is None:
            raise _blob_unknown(digest)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below after streaming
        except FileNotFoundError:
            raise _blob_unknown(digest) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            headers = {"Docker-Content-Digest": digest, "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            start, length, status = 0, size, 200
            byte_range = self._parse_range(size)
            if byte_range is not None:
                start, end = byte_range
                length, status = end - start + 1, 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            self._discard_body()
            self._status = status
            self.send_response(status)
            self.send_header(*API_VERSION_HEADER)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command == "HEAD" or length == 0:
                return
            self._send_file(f, start, length)

    def _parse_range(self, size: int) -> tuple[int, int] | None:
        """The single byte range requested, or None for the whole blob (RFC 9110 14.2)."""
        header = self.headers.get("Range")
        if not header:
            return None
        m = RANGE_RE.fullmatch(header.strip())
        if m is None or (not m[1] and not m[2]):
            return None  # unsupported or multi-range requests are answered in full
        if m[1]:
            start = int(m[1])
            if m[2] and int(m[2]) < start:
                return None  # syntactically invalid: ignored, as RFC 9110 asks
            end = min(int(m[2]), size - 1) if m[2] else size - 1
        else:
            suffix = int(m[2])
            start, end = (max(size - suffix, 0) if suffix else size), size - 1
        if start >= size:
            raise RegistryAPIError(416, "SIZE_INVALID", "requested range not satisfiable",
                                   {"size": size}, headers={"Content-Range": f"bytes */{size}"})
        return start, end

    def _send_file(self, f: BinaryIO, offset: int, count: int) -> None:
        # socket.sendfile uses os.sendfile where possible: the data never enters Python.
        sent = self.connection.sendfile(f, offset, count)
        self._bytes_out += sent
        if sent != count:
            self.close_connection = True

    # --- uploads ------------------------------------------------------------------------

    def _upload_headers(self, name: str, up: _Upload) -> dict[str, str]:
        return {"Location": f"/v2/{name}/blobs/uploads/{up.id}",
                "Range": f"0-{max(up.offset - 1, 0)}",
                "Docker-Upload-UUID": up.id}

    def _created_blob(self, name: str, digest: str) -> None:
        self._respond(201, headers={"Location": f"/v2/{name}/blobs/{digest}",
                                    "Docker-Content-Digest": digest})

    def _start_upload(self, name: str) -> None:
        query = self._query()
        mount, source, digest = query.get("mount"), query.get("from"), query.get("digest")
        if mount:
            parse_digest(mount)
            if source:
                with contextlib.suppress(RegistryAPIError):
                    validate_name(source)
                    if self.store.mount(name, source, mount):
                        self._created_blob(name, mount)
                        return
            # Without "from" (or when mounting fails) the spec asks for a normal session.
        if digest:
            require_sha256(digest)
            up = self.store.new_upload(name)
            try:
                self.store.append(up, self._body())
                self.store.finish(up, digest)
            finally:
                if not up.closed:
                    self.store.cancel(up)
            self._created_blob(name, digest)
            return
        up = self.store.new_upload(name)
        self._respond(202, headers=self._upload_headers(name, up))

    def _chunk_range(self) -> tuple[int | None, int | None]:
        header = self.headers.get("Content-Range")
        if not header:
            return None, None
        m = CONTENT_RANGE_RE.fullmatch(header.strip())
        if m is None:
            raise RegistryAPIError(416, "BLOB_UPLOAD_INVALID", "malformed Content-Range",
                                   {"Content-Range": header})
        start, end = int(m[1]), int(m[2])
        if end < start:
            raise RegistryAPIError(416, "BLOB_UPLOAD_INVALID", "empty Content-Range",
                                   {"Content-Range": header})
        return start, end - start + 1

    def _upload_patch(self, name: str, upload_id: str) -> None:
        up = self.store.get_upload(name, upload_id)
        start, length = self._chunk_range()
        try:
            self.store.append(up, self._body(), start, length)
        except RegistryAPIError as exc:
            if exc.status == 416:
                exc.headers.update(self._upload_headers(name, up))
            raise
        self.store.touch_upload(up)
        self._respond(202, headers=self._upload_headers(name, up))

    def _upload_put(self, name: str, upload_id: str) -> None:
        digest = self._query().get("digest")
        if not digest:
            raise RegistryAPIError(400, "DIGEST_INVALID", "digest query parameter is required")
        require_sha256(digest)
        up = self.store.get_upload(name, upload_id)
        start, length = self._chunk_range()
        if self._body_pending():
            try:
                self.store.append(up, self._body(), start, length)
            except RegistryAPIError as exc:
                if exc.status == 416:
                    exc.headers.update(self._upload_headers(name, up))
                raise
        self.store.finish(up, digest)
        self._created_blob(name, digest)

    def _upload_get(self, name: str, upload_id: str) -> None:
        up = self.store.get_upload(name, upload_id)
        self._respond(204, headers=self._upload_headers(name, up))

    def _upload_delete(self, name: str, upload_id: str) -> None:
        self.store.cancel(self.store.get_upload(name, upload_id))
        self._respond(204)

    # --- manifests ----------------------------------------------------------------------

    def _get_manifest(self, name: str, reference: str) -> None:
        self._require_repo(name)
        if ":" in reference:
            parse_digest(reference)
        entry = self.store.find_manifest(name, reference)
        digest = entry.get("digest") if entry else None
        path = self.store.blob_path(name, digest) if isinstance(digest, str) else None
        if entry is None or path is None or not isinstance(digest, str):
            raise _manifest_unknown(reference)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _manifest_unknown(reference) from None
        self._respond(200, data, {"Docker-Content-Digest": digest},
                      str(entry.get("mediaType") or OCI_MANIFEST))

    def _put_manifest(self, name: str, reference: str) -> None:
        tag: str | None = None
        if ":" in reference:
            require_sha256(reference)
        elif TAG_RE.fullmatch(reference):
            tag = reference
        else:
            raise RegistryAPIError(400, "TAG_INVALID", "invalid tag", {"tag": reference})
        data = self._read_body(MAX_MANIFEST_BYTES)
        media_type, doc, required = parse_manifest(data, self.headers.get("Content-Type"))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if tag is None and digest != reference:
            raise RegistryAPIError(400, "DIGEST_INVALID",
                                   "manifest digest does not match the reference",
                                   {"expected": reference, "actual": digest})
        missing = sorted({d for d in required if self.store.blob_path(name, d) is None})
        if missing:
            raise RegistryAPIError(400, "MANIFEST_BLOB_UNKNOWN",
                                   "manifest references blobs unknown to this repository",
                                   {"digests": missing})
        self.store.put_manifest(name, tag, data, media_type, doc)
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        subject = _subject_digest(doc)
        if subject:
            headers["OCI-Subject"] = subject
        self._respond(201, headers=headers)

    def _delete_manifest(self, name: str, reference: str) -> None:
        self._require_repo(name)
        if ":" in reference:
            self.store.delete_manifest(name, parse_digest(reference))
        elif TAG_RE.fullmatch(reference):
            self.store.delete_tag(name, reference)
        else:
            raise _manifest_unknown(reference)
        self._respond(202)

    # --- discovery ----------------------------------------------------------------------

    def _list_tags(self, name: str) -> None:
        self._require_repo(name)
        query = self._query()
        tags = self.store.tags(name)
        last = query.get("last")
        if last:
            tags = [t for t in tags if t > last]
        headers: dict[str, str] = {}
        if "n" in query:
            try:
                n = int(query["n"])
                if n < 0:
                    raise ValueError(n)
            except ValueError:
                raise RegistryAPIError(400, "PAGINATION_NUMBER_INVALID",
                                       "n must be a non-negative integer",
                                       {"n": query["n"]}) from None
            if len(tags) > n:
                tags = tags[:n]
                if tags:
                    headers["Link"] = (f'</v2/{name}/tags/list?n={n}&last={quote(tags[-1])}>; '
                                       'rel="next"')
        self._send_json(200, {"name": name, "tags": tags}, headers=headers)

    def _list_referrers(self, name: str, subject: str) -> None:
        parse_digest(subject)
        artifact_type = self._query().get("artifactType") or None
        # An unknown repository has no referrers; a 404 here would read as "API unsupported".
        found = self.store.referrers(name, subject, artifact_type)
        headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
        self._send_json(200, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found},
                        OCI_INDEX, headers)


def make_server(storage: Path, host: str = "127.0.0.1", port: int = 5000) -> ThreadingHTTPServer:
    """Create (but do not start) a registry serving ``storage`` on ``host:port``.

    ``port`` 0 picks a free port (read it from ``server.server_address``). Call
    ``serve_forever()`` to run it and ``shutdown()``/``server_close()`` to stop it.
    """
    store = Store(Path(storage))
    store.scan()
    cls = _RegistryServer6 if ":" in host else _RegistryServer
    return cls((host, port), store)


def _url_host(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(address: str, flag: str = "--address") -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into host and port.

    Raises InvalidAddressError (a usage error, which is a ValueError too) naming ``flag``.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InvalidAddressError(f"{flag} {address!r}: use HOST:PORT with a port from 0 to"
                                  " 65535, e.g. 127.0.0.1:5000")
    return host.strip("[]") or "127.0.0.1", int(port)


def listen_error(address: str, e: OSError) -> OcigitopsError:
    """The one-line error for a server that could not listen on ``address``."""
    import errno

    if e.errno == errno.EADDRINUSE:
        return AddressInUseError(f"cannot listen on {address}: the address is already in use"
                                 " (stop what listens there, or pick another address)")
    return OcigitopsError(f"cannot listen on {address}: {e.strerror or e}")


def serve(storage: Path, address: str = "127.0.0.1:5000") -> None:
    """Run the registry in the foreground until interrupted (Ctrl-C).

    Logs one info line with the URL at start, and one debug line per request.
    """
    host, port = parse_address(address)
    try:
        server = make_server(storage, host, port)
    except OSError as e:
        raise listen_error(address, e) from e
    bound_port = server.server_address[1]
    log.info("OCI registry listening on http://%s (storage %s)", _url_host(host, bound_port),
             Path(storage).resolve())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()


class BackgroundRegistry:
    """A registry running on a background thread, for tests and one-shot local runs.

    Starts on construction; use it as a context manager or call :meth:`stop`. ``port`` 0
    picks a free port. Attributes: ``url`` (``http://127.0.0.1:PORT``), ``host``
    (``127.0.0.1:PORT``, for image references), ``port`` and ``storage``.
    """

    def __init__(self, storage: Path, port: int = 0, bind: str = "127.0.0.1") -> None:
        self.storage = Path(storage)
        self.server = make_server(self.storage, bind, port)
        self.port: int = self.server.server_address[1]
        self.host = _url_host(bind, self.port)
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"regserver-{self.port}", daemon=True)
        self._thread.start()
        self._stopped = False

    def stop(self) -> None:
        """Stop serving and close every connection; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundRegistry:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m ocigitops.regserver --storage DIR --address HOST:PORT``."""
    parser = argparse.ArgumentParser(
        prog="python -m ocigitops.regserver",
        description="Embedded OCI distribution-spec 1.1 registry (no authentication, no TLS).")
    parser.add_argument("--storage", type=Path, default=Path("registry-data"),
                        help="directory holding one OCI image layout per repository "
                             "(default: ./registry-data)")
    parser.add_argument("--address", default="127.0.0.1:5000",
                        help="HOST:PORT to listen on (default: 127.0.0.1:5000)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(args.storage, args.address)
    except (ValueError, OSError) as exc:
        parser.exit(1, f"error: {exc}\n")


if __name__ == "__main__":
    main()
