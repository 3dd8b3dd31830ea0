"""``ocigitops scan``: trivy's misconfiguration scan of manifests, and its attestation.

The pipeline, one function each: resolve the input (a directory or file, or ``oci://REF``
pulled by digest with the pull limits into a private temporary directory that is removed
afterwards), render it (``--render kustomize|helm``: :func:`ocigitops.render.render`, what
``push artifact --render`` runs), run trivy (:mod:`ocigitops.publisher.trivy`: a local
binary or the Docker engine), parse its JSON report, select the findings at the asked
severities, format them (``table``, trivy's ``json`` as it wrote it, trivy's own
``sarif`` through ``trivy convert``) and, with ``--attest``, attach the result to the
artifact scanned:

- an in-toto attestation (cosign v3 bundle, :func:`ocigitops.publisher.attest
  .attest_predicate`) whose predicate is trivy's JSON report and whose predicate type is
  :data:`PREDICATE_TYPE`; the report's ``CreatedAt`` is the signed time a policy's
  ``maxAge`` reads when the bundle has no transparency-log entry;
- trivy's SARIF as a plain OCI referrer (``artifactType`` and layer
  ``application/sarif+json``), the form Ratify reads.

The digest scanned is the digest attested: the tag is resolved once, by the pull.
Exit code: ``--exit-code N`` when there are findings at the selected severities (as
trivy's flag), else 0; a failure of the tool is a typed error (exit 3, one line).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from ocigitops import jsonsafe
from ocigitops.artifact import go_json
from ocigitops.errors import MalformedDocumentError, UsageError
from ocigitops.options import RegistryOptions
from ocigitops.publisher.attest import AttestFn, AttestOptions, attest_predicate, load_attester
from ocigitops.publisher.referrers import StoredReferrer, push_referrer
from ocigitops.publisher.signing import PasswordPrompt, cosign_password
from ocigitops.publisher.signresult import SignResult
from ocigitops.publisher.trivy import (
    DEFAULT_IMAGE,
    SEVERITIES,
    BackendName,
    TrivyBackend,
    TrivyError,
    TrivyJob,
    select_backend,
)
from ocigitops.render import RenderMode
from ocigitops.table import format_table
from ocigitops.verifier.errors import OversizedPredicateError
from ocigitops.verifier.intoto import MAX_PREDICATE_BYTES

#: The predicate type of a ``scan --attest`` attestation (trivy's JSON report).
PREDICATE_TYPE = "https://ocigitops.dev/attestations/trivy-config/v1"
#: artifactType and layer media type of the SARIF referrer.
SARIF_MEDIA_TYPE = "application/sarif+json"
#: Severities from the most to the least severe (the table's order).
_RANK = {s: i for i, s in enumerate(reversed(SEVERITIES))}

Format = Literal["table", "json", "sarif"]
#: Receives one human-readable line per step (``pulled ...``, ``attested ...``).
Say = Callable[[str], None]


@dataclass(frozen=True)
class Finding:
    """One failed check: its severity, id (``KSV-0017``), file and title."""

    severity: str
    check_id: str
    target: str
    title: str


@dataclass(frozen=True)
class ScanRequest:
    """What ``scan`` was asked: the target (a path, or ``oci://REF``) and its flags."""

    target: str
    render: RenderMode = "none"
    values: tuple[Path, ...] = ()
    release_name: str | None = None
    namespace: str | None = None
    severities: tuple[str, ...] = SEVERITIES
    exit_code: int = 0
    fmt: Format = "table"
    backend: BackendName = "auto"
    trivy: Path | None = None
    trivy_image: str = DEFAULT_IMAGE
    docker_host: str | None = None
    #: The trivy run's limit (and render's); the registry work has the registry's.
    timeout: float = 300.0
    #: Sign and attach the result (``oci://`` targets only).
    attest: AttestOptions | None = None
    max_size: str | int | None = None
    max_file_size: str | int | None = None


@dataclass(frozen=True)
class ScanResult:
    """What ``scan`` found and did. ``output`` is what goes to stdout."""

    scanned: str
    backend: str
    trivy_version: str
    severities: tuple[str, ...]
    findings: tuple[Finding, ...]
    output: str
    exit_code: int
    seconds: float
    digest: str | None = None
    attestation: SignResult | None = None
    sarif: StoredReferrer | None = None
    #: trivy's last stderr lines (harmless ones dropped), for ``--debug``.
    stderr: tuple[str, ...] = field(default=())
    fmt: Format = "table"

    def summary(self) -> str:
        """One line for stderr: what was scanned, how, and how many findings."""
        n = len(self.findings)
        return (f"scanned {self.scanned} with trivy {self.trivy_version} ({self.backend},"
                f" {self.seconds:.1f}s): {n} misconfiguration{'s' if n != 1 else ''} at"
                f" {','.join(self.severities)}")

    def messages(self, *, debug: bool = False) -> list[str]:
        """The stderr lines: trivy's log (``debug``), the summary (table output only: json
        and sarif keep stderr quiet), and where the results were attached."""
        out = [f"trivy: {line}" for line in self.stderr] if debug else []
        if self.fmt == "table":
            out.append(self.summary())
        return out + self.stored_lines()

    def stored_lines(self) -> list[str]:
        """Where the attestation and the SARIF referrer went (empty without --attest)."""
        out = []
        if self.attestation is not None:
            a = self.attestation
            out.append(f"attested {a.subject} ({PREDICATE_TYPE}, {a.signer}): {a.location}"
                       f" (via {a.stored_via})")
        if self.sarif is not None:
            s = self.sarif
            out.append(f"attached SARIF ({SARIF_MEDIA_TYPE}): {s.location}"
                       f" (via {s.stored_via})")
        return out


# -- report ---------------------------------------------------------------------------------

def parse_severities(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``HIGH,CRITICAL`` (any case, repeatable) as a tuple in trivy's order; all when
    empty. UsageError for a name trivy does not know."""
    if text is None:
        return SEVERITIES
    parts = [text] if isinstance(text, str) else list(text)
    names = {p.strip().upper() for part in parts for p in part.split(",") if p.strip()}
    bad = sorted(names - set(SEVERITIES))
    if bad:
        raise UsageError(f"--severity {','.join(bad)}: use some of {','.join(SEVERITIES)}")
    return tuple(s for s in SEVERITIES if s in names) or SEVERITIES


def parse_report(data: bytes) -> dict[str, Any]:
    """trivy's JSON report, read strictly; TrivyError when it is not one."""
    try:
        doc = jsonsafe.loads_object(data, "trivy's JSON report")
    except MalformedDocumentError as e:
        raise TrivyError(str(e)) from None
    results = doc.get("Results", [])
    if "SchemaVersion" not in doc or not isinstance(results, list):
        raise TrivyError("trivy's output is not a JSON report (no SchemaVersion or Results)")
    return doc


def findings(report: dict[str, Any]) -> list[Finding]:
    """Every misconfiguration in ``report`` (entries of another shape are skipped)."""
    out: list[Finding] = []
    for result in report.get("Results") or []:
        if not isinstance(result, dict):
            continue
        target = str(result.get("Target", ""))
        for m in result.get("Misconfigurations") or []:
            if isinstance(m, dict):
                out.append(Finding(str(m.get("Severity", "UNKNOWN")).upper(),
                                   str(m.get("ID", "")), target, str(m.get("Title", ""))))
    return out


def select(found: Iterable[Finding], severities: Sequence[str]) -> list[Finding]:
    """The findings at ``severities``, most severe first, then by file and check."""
    keep = set(severities)
    return sorted((f for f in found if f.severity in keep),
                  key=lambda f: (_RANK.get(f.severity, len(_RANK)), f.target, f.check_id))


def table(found: Sequence[Finding], severities: Sequence[str]) -> str:
    """The ``-o table`` text: one row per finding, or one line saying there is none."""
    if not found:
        return f"no misconfigurations at {','.join(severities)}"
    rows = [("SEVERITY", "CHECK", "FILE", "TITLE")]
    rows += [(f.severity, f.check_id, f.target, f.title) for f in found]
    return format_table(rows)


def exit_code_for(found: Sequence[Finding], exit_code: int) -> int:
    """``exit_code`` when there are findings (at the selected severities), else 0."""
    return exit_code if found else 0


def trivy_version(report: dict[str, Any]) -> str:
    """The version trivy wrote in its report (``?`` when absent)."""
    t = report.get("Trivy")
    v = t.get("Version") if isinstance(t, dict) else None
    return str(v) if v else "?"


# -- the pipeline ---------------------------------------------------------------------------

def scan_request(target: str, *, severity: str | Sequence[str] | None = None,
                 fmt: str = "table", attest: bool = False, key: Path | None = None,
                 keyless: bool = False, identity_token: str | None = None,
                 trivy_image: str | None = None, values: Iterable[Path] = (),
                 **flags: Any) -> ScanRequest:
    """A :class:`ScanRequest` from the command line's flags (``--attest`` with the signing
    flags of ``attest artifact``); UsageError for signing flags without ``--attest``."""
    if (key is not None or keyless) and not attest:
        raise UsageError("--key and --keyless sign the result of --attest: add --attest")
    if fmt not in ("table", "json", "sarif"):
        raise UsageError(f"-o {fmt}: use table, json or sarif")
    signing = (AttestOptions(key=key, keyless=keyless, identity_token=identity_token)
               if attest else None)
    return ScanRequest(target=target, severities=parse_severities(severity),
                       fmt=cast(Format, fmt), attest=signing, values=tuple(values),
                       trivy_image=trivy_image or DEFAULT_IMAGE, **flags)


def _check(request: ScanRequest) -> None:
    """Refuse what cannot work before anything is pulled or run."""
    oci = request.target.startswith("oci://")
    if request.attest is not None and not oci:
        raise UsageError("--attest needs an oci:// target: it attaches the result to the"
                         " artifact scanned")
    if request.exit_code < 0 or request.exit_code > 255:
        raise UsageError(f"--exit-code {request.exit_code}: use 0 to 255")
    if request.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if request.render != "helm" and (request.values or request.release_name
                                     or request.namespace):
        raise UsageError("--values, --release-name and --namespace need --render helm")
    if not oci and not Path(request.target).exists():
        raise UsageError(f"{request.target}: no such file or directory")
    if request.render != "none" and not oci and not Path(request.target).is_dir():
        raise UsageError("--render needs a directory")


def _render(src: Path, request: ScanRequest, work: Path, root: Path | None) -> Path:
    """``src`` rendered into ``work/rendered`` as ``push artifact --render`` does, or
    ``src`` itself for ``--render none``."""
    if request.render == "none":
        return src
    from ocigitops.render import render  # runs kustomize/helm: only when asked

    out = work / "rendered"
    render(src, request.render, out, values=list(request.values),
           release_name=request.release_name, namespace=request.namespace,
           timeout=request.timeout, root=root)
    return out


def run_trivy(backend: TrivyBackend, target: Path, severities: tuple[str, ...],
              timeout: float) -> tuple[bytes, dict[str, Any], tuple[str, ...]]:
    """Scan ``target``: (trivy's JSON bytes, the parsed report, stderr tail)."""
    out = backend.run(TrivyJob("config", target, "json", severities, timeout))
    return out.stdout, parse_report(out.stdout), out.stderr


def to_sarif(backend: TrivyBackend, report: bytes, severities: tuple[str, ...],
             timeout: float, work: Path) -> bytes:
    """trivy's own SARIF for ``report`` (``trivy convert --format sarif``)."""
    conv = work / "report"
    conv.mkdir(exist_ok=True)
    path = conv / "report.json"
    path.write_bytes(report)
    out = backend.run(TrivyJob("convert", path, "sarif", severities, timeout))
    jsonsafe.loads_object(out.stdout, "trivy's SARIF")  # a document, or a typed error
    return out.stdout


async def _pull(url: str, request: ScanRequest, registry: RegistryOptions, dest: Path,
                ) -> tuple[str, str]:
    """Pull ``url`` into ``dest`` (the pull limits); (repository URL, digest)."""
    from ocigitops.extract import limits_from
    from ocigitops.pull import pull_artifact
    from ocigitops.reference import parse_reference

    ref = parse_reference(url, require_scheme=True)
    if not ref.tag and not ref.digest:
        ref = ref.with_tag("latest")  # as pull: a bare repository means its latest tag
    limits = limits_from(request.max_size, request.max_file_size)
    async with registry.client() as client:
        pulled = await pull_artifact(client, ref, dest, limits=limits)
    return ref.repo_only().url(), pulled.digest


async def _attach(repo_url: str, digest: str, report: dict[str, Any], sarif: bytes,
                  registry: RegistryOptions, attester: AttestFn,
                  ) -> tuple[SignResult, StoredReferrer]:
    from ocigitops.reference import parse_reference

    size = len(go_json(report))
    if size > MAX_PREDICATE_BYTES:  # refused before anything is written
        raise OversizedPredicateError(
            f"trivy's report is {size} bytes, over the {MAX_PREDICATE_BYTES}-byte cap of an"
            " attestation's predicate: attest a narrower --severity (HIGH,CRITICAL), or"
            " scan smaller artifacts")
    repo = parse_reference(repo_url, require_scheme=True).repo_only()
    async with registry.client() as client:
        signed = await attest_predicate(client, repo, digest, PREDICATE_TYPE, report,
                                        attester)
        subject = await client.head_manifest(repo.with_digest(digest))
        stored = await push_referrer(client, repo, subject, SARIF_MEDIA_TYPE, sarif)
    return signed, stored


async def scan(request: ScanRequest, registry: RegistryOptions | None = None, *,
               prompt: PasswordPrompt | None = None, say: Say | None = None,
               backend: TrivyBackend | None = None) -> ScanResult:
    """The whole ``scan`` command; ``backend`` overrides the selection (tests)."""
    _check(request)
    registry = registry or RegistryOptions(timeout=request.timeout)
    attester: AttestFn | None = None
    if request.attest is not None:  # the key first: no registry traffic with a bad one
        attester = load_attester(request.attest, password=lambda: cosign_password(prompt))
    trivy = backend or select_backend(request.backend, trivy=request.trivy,
                                      image=request.trivy_image,
                                      docker_host=request.docker_host)
    with tempfile.TemporaryDirectory(prefix="ocigitops-scan-") as tmp:
        work = Path(tmp)
        repo_url = digest = None
        if request.target.startswith("oci://"):
            src = work / "artifact"
            repo_url, digest = await _pull(request.target, request, registry, src)
            scanned = f"{repo_url}@{digest}"
            if say:
                say(f"pulled {scanned}")
            root: Path | None = src
        else:
            src = Path(request.target)
            scanned, root = str(src), None
        target = await asyncio.to_thread(_render, src, request, work, root)
        started = time.monotonic()
        raw, report, stderr = await asyncio.to_thread(run_trivy, trivy, target,
                                                      request.severities, request.timeout)
        sarif = b""
        if request.fmt == "sarif" or attester is not None:
            sarif = await asyncio.to_thread(to_sarif, trivy, raw, request.severities,
                                            request.timeout, work)
        seconds = time.monotonic() - started
    found = select(findings(report), request.severities)
    signed = stored = None
    if repo_url is not None and isinstance(report, dict):
        # trivy names the directory it scanned: a private temp path of this machine. The
        # attested report names what was scanned instead, the artifact by digest.
        report["ArtifactName"] = scanned
    if attester is not None and repo_url is not None and digest is not None:
        signed, stored = await _attach(repo_url, digest, report, sarif, registry, attester)
    output = (raw.decode("utf-8") if request.fmt == "json" else
              sarif.decode("utf-8") if request.fmt == "sarif" else
              table(found, request.severities))
    return ScanResult(scanned=scanned, backend=f"{trivy.name}: {trivy.where}",
                      trivy_version=trivy_version(report), severities=request.severities,
                      findings=tuple(found), output=output.rstrip("\n"),
                      exit_code=exit_code_for(found, request.exit_code), seconds=seconds,
                      digest=digest, attestation=signed, sarif=stored, stderr=stderr,
                      fmt=request.fmt)
