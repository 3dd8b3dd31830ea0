"""OCI references: ``oci://host[:port]/repo[:tag][@sha256:hex]``.

Parsing follows the distribution reference grammar closely enough for registries in
practice, with Docker Hub defaults (``nginx`` means ``docker.io/library/nginx``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ocigitops.digests import is_digest
from ocigitops.errors import InvalidReferenceError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# \Z, not $: "$" also matches before a trailing newline, which must not pass.
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?\Z")


@dataclass(frozen=True)
class Reference:
    """A parsed OCI reference. ``tag`` and ``digest`` may both be set; the digest wins."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """Host (and port) to send API requests to (Docker Hub's API lives elsewhere)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to put after ``/manifests/``: the digest if known, else the tag."""
        if self.digest:
            return self.digest
        if self.tag:
            return self.tag
        raise InvalidReferenceError(f"reference {self} has neither a tag nor a digest")

    def with_tag(self, tag: str) -> Reference:
        """Same repository, another tag, no digest."""
        validate_tag(tag)
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """Same repository pinned to ``digest`` (the tag is kept for display)."""
        validate_digest(digest)
        return replace(self, digest=digest)

    def repo_only(self) -> Reference:
        """Same repository with no tag and no digest."""
        return replace(self, tag=None, digest=None)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    def url(self) -> str:
        """``oci://`` form, as Flux prints it."""
        return f"oci://{self}"


def is_loopback(host: str) -> bool:
    """Is the registry ``host`` (``name[:port]``, ``[v6][:port]``) on this machine by its
    literal name: ``localhost``, an address in ``127.0.0.0/8``, or ``::1``?

    Decided on the name as written, never by resolving it: a DNS answer must not be able
    to turn TLS off.
    """
    import ipaddress

    name = host
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def validate_tag(tag: str) -> str:
    """Return ``tag`` or raise InvalidReferenceError."""
    if not _TAG_RE.match(tag):
        raise InvalidReferenceError(
            f"invalid tag {tag!r}: use up to 128 letters, digits, '_', '.' or '-',"
            " not starting with '.' or '-'"
        )
    return tag


def validate_digest(digest: str) -> str:
    """Return ``digest`` or raise InvalidReferenceError."""
    if not is_digest(digest):
        raise InvalidReferenceError(
            f"invalid digest {digest!r}: expected sha256: followed by 64 lowercase hex digits"
        )
    return digest


def _names_a_host(first: str) -> bool:
    """Does a slash-less reference look like a registry host rather than a Docker Hub
    image (``ghcr.io``, ``127.0.0.1:5000``, ``localhost:5000``, ``[::1]:5000``; not
    ``nginx`` or ``redis:7``)?"""
    name = first.partition(":")[0]
    return first.startswith("[") or "." in name or name == "localhost"


def parse_reference(text: str, *, require_scheme: bool = False) -> Reference:
    """Parse ``[oci://]host[:port]/repo[:tag][@digest]``.

    Without a registry host (``nginx``, ``library/nginx``) Docker Hub is assumed. With
    ``require_scheme`` the ``oci://`` prefix is mandatory (as in Flux's CLI).
    """
    raw = text.strip()
    if raw.startswith("oci://"):
        raw = raw[len("oci://"):]
    elif require_scheme:
        raise InvalidReferenceError(f"invalid URL {text!r}: it must start with oci://")
    elif "://" in raw:
        raise InvalidReferenceError(f"invalid reference {text!r}: only oci:// URLs are supported")
    if not raw:
        raise InvalidReferenceError("empty OCI reference")

    digest: str | None = None
    if "@" in raw:
        raw, digest = raw.split("@", 1)
        validate_digest(digest)

    first, _, rest = raw.partition("/")
    if not rest and _names_a_host(first):
        # Without this, oci://127.0.0.1:5000 would read as Docker Hub's library/127.0.0.1
        # at tag 5000: a request to a registry the user never named.
        raise InvalidReferenceError(
            f"{text!r} names the registry {first.rstrip('/')} but no repository: use"
            f" oci://{first.rstrip('/')}/REPOSITORY[:TAG]")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, raw
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if not _HOST_RE.match(registry):
        raise InvalidReferenceError(f"invalid registry host {registry!r} in {text!r}")

    tag: str | None = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1:]
        validate_tag(tag)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _REPO_RE.match(path):
        raise InvalidReferenceError(
            f"invalid repository name {path!r} in {text!r}: use lowercase letters, digits and"
            " separators ('.', '_', '-') between path components"
        )
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)
