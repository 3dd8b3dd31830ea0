"""The Helm engine interface: what the HelmRelease reconciler asks of Helm, engine-neutral.

Two implementations run Helm's own code, never a re-implementation of it:

- :class:`ocigitops.puller.helm.sdk.SdkEngine`: Helm's Go SDK (v4.2) in this process,
  through ``helm-python-sdk`` (ctypes over a bundled shared library);
- :class:`ocigitops.puller.helm.binary.BinaryEngine`: the ``helm`` 4 binary as a
  subprocess, one process per operation.

Both store releases exactly as Helm does (Secrets ``sh.helm.release.v1.<name>.v<N>`` in the
storage namespace), so the helm CLIs (3.19 and 4) see, list and roll back what we did, and
we read what they did. ``docs/helm-engine.md`` compares them and names the default.

Everything here is data: requests and results are frozen dataclasses, errors are
:class:`HelmError` subclasses whose ``str()`` is one line. Values are secrets (they often
hold passwords): they are never logged, never put in an error message and never passed
on a command line. A post-renderer is a Python callable (rendered manifests in, modified
manifests out, see :mod:`ocigitops.puller.helm.postrender`); the engines hand it to Helm
as a Helm 4 ``postrenderer/v1`` plugin, so Helm stores the post-rendered manifest.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ocigitops.errors import OcigitopsError

PostRenderer = Callable[[str], str]
"""Rendered manifests (a multi-document YAML stream) in, post-processed stream out.

Runs in a worker thread of this process while Helm waits; an exception fails the operation
with :class:`PostRenderError` (its message, first line only, is shown)."""

DEFAULT_TIMEOUT = 300.0
"""Seconds an operation may take when the request does not say (Helm's 5m)."""

MAX_MESSAGE = 400
"""Characters of Helm's own error text kept in an error message."""


# ---------------------------------------------------------------------------------------
# Errors


class HelmError(OcigitopsError):
    """A Helm operation failed. ``str()`` is one line; ``release`` names the release."""

    def __init__(self, message: str, *, release: str = "") -> None:
        super().__init__(one_line(message))
        self.release = release


class ChartLoadError(HelmError):
    """The chart archive could not be read as a Helm chart (missing, corrupt, bad Chart.yaml)."""


class RenderError(HelmError):
    """Templates failed to render (syntax, ``fail``, a values schema violation)."""


class PostRenderError(HelmError):
    """The post-renderer failed or returned nothing."""


class InstallError(HelmError):
    """``install`` failed after rendering (the API server refused an object...)."""


class UpgradeError(HelmError):
    """``upgrade`` failed after rendering."""


class RollbackError(HelmError):
    """``rollback`` failed."""


class UninstallError(HelmError):
    """``uninstall`` failed."""


class WaitTimeoutError(HelmError):
    """The operation (or its wait for resources to be ready) exceeded its timeout."""


class TestFailedError(HelmError):
    """A test hook did not succeed. ``result`` holds every hook's outcome when known."""

    __test__ = False  # not a pytest class

    def __init__(self, message: str, *, release: str = "",
                 result: TestResult | None = None) -> None:
        super().__init__(message, release=release)
        self.result = result


class ReleaseNotFoundError(HelmError):
    """No release of that name (or revision) in the storage namespace."""


class ClusterAccessError(HelmError):
    """The API server could not be reached or refused our credentials."""


class UnsupportedOptionError(HelmError):
    """This engine cannot honour an option of the request (the message says which)."""


class EngineUnavailableError(HelmError):
    """The engine cannot run here: the SDK is not installed, the binary is missing."""


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """Collapse ``text`` to one line of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class Impersonation:
    """Who the engine acts as (Flux's ``serviceAccountName``): Kubernetes impersonation
    headers on every request. ``for_service_account`` builds the usual one."""

    user: str
    groups: tuple[str, ...] = ()

    @classmethod
    def for_service_account(cls, namespace: str, name: str) -> Impersonation:
        """``system:serviceaccount:<ns>:<name>`` with its two groups, as kubectl --as does."""
        return cls(user=f"system:serviceaccount:{namespace}:{name}",
                   groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}"))


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the cluster. ``kubeconfig`` is the document's text: a secret (it may
    embed keys and tokens); engines write it only to private 0600 files."""

    kubeconfig: str = field(repr=False)
    context: str | None = None
    impersonate: Impersonation | None = None


@dataclass(frozen=True)
class ReleaseRef:
    """A release: its name, the namespace its objects go to, where Helm stores it."""

    name: str
    namespace: str
    storage_namespace: str | None = None
    """Where the release Secrets live; ``None`` means ``namespace`` (Helm's CLI default)."""

    @property
    def storage(self) -> str:
        """The namespace holding the release's storage Secrets."""
        return self.storage_namespace or self.namespace


class CRDPolicy(enum.Enum):
    """Flux's ``install.crds`` / ``upgrade.crds``."""

    SKIP = "Skip"
    CREATE = "Create"
    CREATE_REPLACE = "CreateReplace"


class DeletionPropagation(enum.Enum):
    """Kubernetes' propagation policy for uninstall (Flux's ``deletionPropagation``)."""

    BACKGROUND = "background"
    FOREGROUND = "foreground"
    ORPHAN = "orphan"


class PostRenderStrategy(enum.Enum):
    """What Helm 4 passes to the post-renderer (``helm.sh/helm/v4/pkg/action``)."""

    COMBINED = "combined"
    """Templates and hooks in one stream: Helm 4's default, the only one its CLI offers."""
    SEPARATE = "separate"
    NOHOOKS = "nohooks"
    """Templates only, as Helm 3 did."""


@dataclass(frozen=True)
class ChartInput:
    """A packaged chart (the ``.tgz`` a HelmChart produces) and the values to use."""

    path: Path
    values: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Common:
    """Options shared by the write operations."""

    timeout: float = DEFAULT_TIMEOUT
    """Seconds for the whole operation, waits included; the engine stops it then."""
    wait: bool = True
    """Wait for the release's resources to be ready (Helm's watcher strategy)."""
    wait_for_jobs: bool = False
    disable_hooks: bool = False
    description: str | None = None


@dataclass(frozen=True)
class InstallRequest:
    """``helm install``. Remediation (retries, rollback on failure) is the controller's job:
    the engine never passes ``--atomic``/``--rollback-on-failure``."""

    ref: ReleaseRef
    chart: ChartInput
    common: Common = Common()
    disable_openapi_validation: bool = False
    skip_schema_validation: bool = False
    crds: CRDPolicy = CRDPolicy.CREATE
    replace: bool = False
    create_namespace: bool = False
    post_renderer: PostRenderer | None = field(default=None, repr=False)
    post_render_strategy: PostRenderStrategy = PostRenderStrategy.COMBINED


@dataclass(frozen=True)
class UpgradeRequest:
    """``helm upgrade`` of an existing release, with exactly ``chart.values`` (Flux's
    semantics: the previous release's values are never reused)."""

    ref: ReleaseRef
    chart: ChartInput
    common: Common = Common()
    disable_openapi_validation: bool = False
    skip_schema_validation: bool = False
    crds: CRDPolicy = CRDPolicy.SKIP
    """Helm upgrades never touch ``crds/``: only SKIP is honoured by the engines; the
    controller applies the chart's CRDs itself for CREATE/CREATE_REPLACE (see
    :func:`check_crd_policy`)."""
    force: bool = False
    """Replace objects that cannot be patched (Helm 4's ``--force-replace``)."""
    force_conflicts: bool = True
    """Take over fields another field manager owns (Helm 4's ``--force-conflicts``, for its
    server-side apply). On by default: the release's desired state wins, and the SDK
    applies as a field manager named after this process (Go's ``os.Args[0]``), not
    ``helm``, so without it an SDK upgrade of a CLI-installed release conflicts with the
    CLI's ``helm`` manager (and the other way round)."""
    max_history: int = 0
    """Release Secrets kept (0: no limit)."""
    cleanup_on_fail: bool = False
    recreate: bool = False
    """Helm 3's ``--recreate-pods``: removed from Helm 4, refused by both engines."""
    post_renderer: PostRenderer | None = field(default=None, repr=False)
    post_render_strategy: PostRenderStrategy = PostRenderStrategy.COMBINED


@dataclass(frozen=True)
class RollbackRequest:
    """``helm rollback`` to ``revision`` (0: the previous one)."""

    ref: ReleaseRef
    revision: int = 0
    common: Common = Common()
    force: bool = False
    force_conflicts: bool = True
    """As :attr:`UpgradeRequest.force_conflicts`."""
    cleanup_on_fail: bool = False
    max_history: int = 0
    recreate: bool = False


@dataclass(frozen=True)
class UninstallRequest:
    """``helm uninstall``."""

    ref: ReleaseRef
    common: Common = Common()
    keep_history: bool = False
    deletion_propagation: DeletionPropagation = DeletionPropagation.BACKGROUND
    ignore_not_found: bool = False


@dataclass(frozen=True)
class TestRequest:
    """``helm test``: run the release's test hooks. Filters are Flux's ``test.filters``."""

    __test__ = False  # not a pytest class

    ref: ReleaseRef
    timeout: float = DEFAULT_TIMEOUT
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Hook:
    """A hook of a release and its last run."""

    name: str
    kind: str
    events: tuple[str, ...]
    phase: str = ""
    """``Succeeded``, ``Failed``, ``Running`` or ``""`` (never run)."""
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def is_test(self) -> bool:
        """A ``helm test`` hook (``test`` or the legacy ``test-success`` event)."""
        return any(e in ("test", "test-success") for e in self.events)


@dataclass(frozen=True)
class Release:
    """A stored release revision, as Helm stored it."""

    name: str
    namespace: str
    revision: int
    status: str
    """Helm's: ``deployed``, ``failed``, ``superseded``, ``uninstalled``, ``pending-*``."""
    chart_name: str
    chart_version: str
    app_version: str
    config_digest: str
    """``sha256:<hex>`` of the user-supplied values (see :func:`values_digest`)."""
    manifest: str = field(default="", repr=False)
    """The rendered (and post-rendered) manifest Helm applied, hooks excluded: what drift
    detection compares with the cluster. Empty in :meth:`HelmEngine.history` entries."""
    hooks: tuple[Hook, ...] = ()
    description: str = ""
    first_deployed: datetime | None = None
    last_deployed: datetime | None = None
    deleted: datetime | None = None

    @property
    def manifest_digest(self) -> str:
        """``sha256:<hex>`` of :attr:`manifest`."""
        return "sha256:" + hashlib.sha256(self.manifest.encode()).hexdigest()


@dataclass(frozen=True)
class TestResult:
    """The outcome of ``helm test``: the release and its test hooks' last runs."""

    __test__ = False  # not a pytest class

    release: Release
    hooks: tuple[Hook, ...]

    @property
    def succeeded(self) -> bool:
        """Every test hook that ran succeeded."""
        return all(h.phase == "Succeeded" for h in self.hooks if h.phase)


@dataclass(frozen=True)
class UninstallResult:
    """What uninstall did: ``release`` is the last stored state (``uninstalled`` and kept
    when ``keep_history``), ``None`` when there was nothing to uninstall."""

    release: Release | None
    info: str = ""


# ---------------------------------------------------------------------------------------
# The interface


class HelmEngine(Protocol):
    """One Helm engine. Every method is a coroutine that runs the blocking work off the
    event loop and is bounded by the request's timeout (or ``timeout`` for reads)."""

    name: str
    """``sdk`` or ``binary``."""

    async def install(self, access: ClusterAccess, req: InstallRequest) -> Release:
        """Install the chart as a new release; the stored revision (1, or the next after an
        uninstalled-with-history release when ``replace``)."""
        ...

    async def upgrade(self, access: ClusterAccess, req: UpgradeRequest) -> Release:
        """Upgrade an existing release; the new stored revision."""
        ...

    async def rollback(self, access: ClusterAccess, req: RollbackRequest) -> Release:
        """Roll back; the new stored revision (rollbacks create one)."""
        ...

    async def uninstall(self, access: ClusterAccess, req: UninstallRequest) -> UninstallResult:
        """Uninstall the release."""
        ...

    async def test(self, access: ClusterAccess, req: TestRequest) -> TestResult:
        """Run the test hooks; raises :class:`TestFailedError` when one fails."""
        ...

    async def get(self, access: ClusterAccess, ref: ReleaseRef, *, revision: int = 0,
                  time_limit: float = 60.0) -> Release:
        """The stored release (its latest revision, or ``revision``), manifest and hooks
        included; :class:`ReleaseNotFoundError` when there is none."""
        ...

    async def history(self, access: ClusterAccess, ref: ReleaseRef, *, max_revisions: int = 0,
                      time_limit: float = 60.0) -> list[Release]:
        """Every stored revision, oldest first, without manifests;
        :class:`ReleaseNotFoundError` when there is none."""
        ...


# ---------------------------------------------------------------------------------------
# Pure helpers shared by the engines


def values_digest(values: Mapping[str, Any] | None) -> str:
    """``sha256:<hex>`` of the canonical JSON (sorted keys, no spaces, UTF-8) of ``values``.

    Engines compute it on the values read back from storage, so a release installed by the
    helm CLI has the same digest as ours for the same values.
    """
    doc = json.dumps(dict(values or {}), sort_keys=True, separators=(",", ":"),
                     ensure_ascii=False, allow_nan=False)
    return "sha256:" + hashlib.sha256(doc.encode()).hexdigest()


def parse_time(value: Any) -> datetime | None:
    """Helm's RFC 3339 timestamps (nanoseconds allowed) to aware datetimes; None when absent
    or Go's zero time."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    if m is None:
        return None
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}")


def hook_from_json(doc: Mapping[str, Any]) -> Hook:
    """A :class:`Hook` from Helm's stored hook JSON (``last_run`` with phase and times)."""
    last = doc.get("last_run") or {}
    return Hook(
        name=str(doc.get("name", "")),
        kind=str(doc.get("kind", "")),
        events=tuple(str(e) for e in doc.get("events") or ()),
        phase=str(last.get("phase", "") or ""),
        started_at=parse_time(last.get("started_at")),
        completed_at=parse_time(last.get("completed_at")),
    )


def check_crd_policy(policy: CRDPolicy, *, upgrade: bool) -> bool:
    """Whether Helm should skip the chart's ``crds/`` (``--skip-crds``).

    Install: SKIP skips, CREATE lets Helm create them (it never updates existing ones).
    CREATE_REPLACE is refused: Helm has no such mode (Flux's helm-controller applies the
    CRDs itself), so the controller applies them and passes SKIP. Upgrade: Helm never
    touches ``crds/`` on upgrade, so only SKIP is meaningful; anything else is refused for
    the same reason.
    """
    if policy is CRDPolicy.SKIP:
        return True
    if upgrade or policy is CRDPolicy.CREATE_REPLACE:
        what = "upgrade" if upgrade else "install"
        raise UnsupportedOptionError(
            f"crds policy {policy.value} on {what}: Helm has no such mode; apply the chart's "
            "CRDs before the operation and pass Skip")
    return False


def check_common(ref: ReleaseRef, *, recreate: bool = False) -> None:
    """Refuse what no Helm 4 engine can do, before any work."""
    if recreate:
        raise UnsupportedOptionError("recreate (--recreate-pods) was removed in Helm 4",
                                     release=ref.name)
    if not _NAME.fullmatch(ref.name) or len(ref.name) > 53:
        raise UnsupportedOptionError(f"invalid release name {ref.name[:80]!r}: a DNS-1123 "
                                     "label of at most 53 characters", release=ref.name)


def check_chart(chart: Path, ref: ReleaseRef) -> None:
    """Refuse a chart archive that is not a regular file, before starting Helm."""
    if not chart.is_file():
        raise ChartLoadError(f"release {ref.name}: chart archive {chart} not found",
                             release=ref.name)


_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


# How Helm's error texts map onto our types; first match wins. Helm's messages are the same
# through the SDK and the binary (the binary prefixes "Error: ").
_CLASSIFY: Sequence[tuple[re.Pattern[str], type[HelmError]]] = (
    (re.compile(r"post-render", re.I), PostRenderError),
    (re.compile(r"release: not found|not found$|has no deployed releases|"
                r"no revision for release", re.I), ReleaseNotFoundError),
    (re.compile(r"context deadline exceeded|timed out waiting|timeout|"
                r"context canceled", re.I), WaitTimeoutError),
    (re.compile(r"parse error|template: |execution error|render error|"
                r"values don't meet the specifications of the schema|"
                r"error converting YAML to JSON|unable to build kubernetes objects|"
                r"error validating data", re.I), RenderError),
    (re.compile(r"chart (?:file|archive)|Chart\.yaml|validation: chart\.|"
                r"chart requires|not a valid chart|gzip: invalid header|"
                r"chart_ref .* is not a local path|load chart", re.I), ChartLoadError),
    (re.compile(r"kubernetes cluster unreachable|connection refused|"
                r"Unauthorized|certificate", re.I), ClusterAccessError),
)


def classify(message: str, fallback: type[HelmError], *, release: str = "") -> HelmError:
    """The typed error for Helm's error text ``message`` (``fallback`` when nothing
    specific matches). The message keeps Helm's first line, bounded."""
    text = message.strip()
    if text.startswith("Error: "):
        text = text[len("Error: "):]
    for pattern, cls in _CLASSIFY:
        if pattern.search(text):
            if cls is ReleaseNotFoundError and fallback is InstallError:
                break  # "not found" during an install names a missing object, not the release
            if cls is WaitTimeoutError and fallback is TestFailedError:
                return TestFailedError(f"release {release}: test timed out: {text}",
                                       release=release)
            return cls(f"release {release}: {text}" if release else text, release=release)
    return fallback(f"release {release}: {text}" if release else text, release=release)
