"""OCIRepository reconciliation, with Flux's semantics.

Per interval: resolve the ref (a semver ref lists tags) and HEAD the manifest, nothing
more when the revision, the ignore rules, the layer selector and the generation are
unchanged and the artifact is still cached. A new digest is verified first when
``spec.verify`` is set, and only the verified digest is fetched: the manifest and layer
are read by digest, never by tag again, and stored in the content-addressed cache. A
failed fetch or verification never replaces the last good artifact; the status says why.

Attestation requirements (``spec.verify.attestations``) are part of the verification: a
revision that fails one is refused exactly like a bad signature (``SourceVerified=False``,
reason ``VerificationError``, the failed requirement and condition in the message). Their
CEL conditions are compiled before any I/O; one that does not compile stalls the object
(only an edit can fix it). ``maxAge`` is judged when a revision is verified (a new digest,
or a new generation of the spec), not again while it stays stored, as signatures are.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ocigitops.artifact import parse_manifest
from ocigitops.auth import CredentialResolver, DockerConfig
from ocigitops.errors import (
    AuthenticationError,
    CredentialsError,
    DigestMismatchError,
    NotFoundError,
    OcigitopsError,
    RegistryError,
)
from ocigitops.extract import DEFAULT_LIMITS
from ocigitops.puller import conditions as cond
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.api.ocirepository import (
    KIND,
    Artifact,
    OCIRepository,
    OCIRepositoryStatus,
    parse_oci_repository,
)
from ocigitops.puller.api.schema import to_dict
from ocigitops.puller.api.verification import (
    attestation_requirements,
    build_signature_policy,
    referenced_secrets,
)
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.kube import DynamicClient
from ocigitops.puller.reconcile import Outcome, prepare
from ocigitops.puller.runtime.reconciler import Deps, Progress, Reconciler, no_progress
from ocigitops.puller.sources.contract import SourceKind
from ocigitops.reference import Reference, parse_reference
from ocigitops.registry import Manifest, RegistryClient
from ocigitops.tags import select_latest
from ocigitops.verifier.errors import PolicyError
from ocigitops.verifier.policy import PolicyResult, SignaturePolicy
from ocigitops.verifier.verify import verify_artifact


@dataclass
class SourceContext:
    """The I/O a source reconcile needs (injected, so tests can use real servers)."""

    kube: DynamicClient
    cache: ArtifactCache
    #: Builds a registry client from (credentials resolver, insecure, ca, cert, key).
    registry: Callable[..., RegistryClient] = RegistryClient
    #: Reconciles talking to one registry host at once. One process serves every tenant:
    #: a stalled or hostile registry may hold this many workers (each until its
    #: ``spec.timeout``), never all of them; the rest are requeued shortly.
    per_host: int = 2
    busy: dict[str, int] = field(default_factory=dict)
    #: Writes the status while a new revision is being fetched (Reconciling=True).
    progress: Progress = no_progress

    @classmethod
    def from_deps(cls, deps: Deps) -> SourceContext:
        """The context the runtime builds for this kind."""
        return cls(kube=deps.kube, cache=deps.cache,
                   per_host=max(1, deps.options.concurrent // 2), progress=deps.progress)


#: How soon a source whose registry host has no free slot is tried again.
HOST_BUSY_RETRY = 5.0


def revision_of(tag: str | None, digest: str) -> str:
    """Flux's revision string: ``<tag>@sha256:<hex>``, or the digest alone."""
    return f"{tag}@{digest}" if tag else digest


async def _credentials(ctx: SourceContext, repo: OCIRepository) -> CredentialResolver:
    ns = repo.metadata.namespace
    configs: list[DockerConfig] = []
    names: list[str] = []
    if repo.spec.secret_ref is not None:
        names.append(repo.spec.secret_ref.name)
    if repo.spec.service_account_name:
        sa = await ctx.kube.get("v1", "ServiceAccount", repo.spec.service_account_name, ns)
        if sa is None:
            raise OcigitopsError(f"ServiceAccount {ns}/{repo.spec.service_account_name} not"
                                 " found")
        names += [s.get("name", "") for s in sa.get("imagePullSecrets") or []]
    for name in names:
        data = await ctx.kube.secret_data(ns, name)
        if data is None:
            raise OcigitopsError(f"Secret {ns}/{name} not found")
        configs.append(DockerConfig.from_secret_data(data, source=f"Secret {ns}/{name}"))
    # In the cluster the controller's own docker config must not leak into tenants.
    return CredentialResolver(configs=configs, use_docker_config=False)


async def _proxy(ctx: SourceContext, repo: OCIRepository) -> str | None:
    """The proxy URL from ``proxySecretRef`` (Flux's keys: address, username, password)."""
    ref = repo.spec.proxy_secret_ref
    if ref is None:
        return None
    ns = repo.metadata.namespace
    data = await ctx.kube.secret_data(ns, ref.name)
    if data is None:
        raise OcigitopsError(f"proxy Secret {ns}/{ref.name} not found")
    address = data.get("address", b"").decode().strip()
    if not address:
        raise OcigitopsError(f"proxy Secret {ns}/{ref.name} has no address")
    url = httpx.URL(address)
    user = data.get("username", b"").decode()
    if user:
        url = url.copy_with(username=user, password=data.get("password", b"").decode())
    return str(url)


def _tls_files(data: Mapping[str, bytes], tmp: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {"ca_file": None, "cert_file": None, "key_file": None}
    for key, arg in (("ca.crt", "ca_file"), ("tls.crt", "cert_file"), ("tls.key", "key_file")):
        if key in data:
            p = tmp / key
            p.write_bytes(data[key])
            os.chmod(p, 0o600)
            out[arg] = str(p)
    return out


async def _resolve(client: RegistryClient, base: Reference, repo: OCIRepository,
                   ) -> tuple[Reference, str, int, str]:
    """(pinned reference, digest, manifest size, revision) for the spec's ref."""
    ref = repo.spec.ref
    if ref.kind == "digest" and ref.digest:
        # The spec's digest is the digest: head_manifest refuses an answer naming another.
        desc = await client.head_manifest(base.with_digest(ref.digest))
        return base.with_digest(ref.digest), ref.digest, desc.size, ref.digest
    tag = ref.tag or "latest"
    if ref.kind == "semver" and ref.semver:
        tags = await client.list_tags(base)
        if ref.semver_filter:
            pattern = re.compile(ref.semver_filter)
            tags = [t for t in tags if pattern.search(t)]
        matched = select_latest(tags, ref.semver)
        if matched is None:
            raise NotFoundError(f"no tag of {base.name} matches semver {ref.semver!r}")
        tag = matched
    desc = await client.head_manifest(base.with_tag(tag))
    return base.with_tag(tag).with_digest(desc.digest), desc.digest, desc.size, \
        revision_of(tag, desc.digest)


async def reconcile(obj: Mapping[str, Any], ctx: SourceContext) -> Outcome:
    """Reconcile one OCIRepository object (a dict from the API server)."""
    prep = prepare(obj, OCIRepositoryStatus, parse_oci_repository)
    if isinstance(prep, Outcome):
        return prep
    repo, start = prep.obj, prep.start
    generation, status, conditions = start.generation, start.status, start.conditions
    interval = repo.spec.interval_seconds
    if repo.spec.provider != "generic":
        msg = (f"provider {repo.spec.provider!r} is not supported yet: use a secretRef with"
               " registry credentials")
        cond.mark_failed(conditions, cond.UNSUPPORTED_PROVIDER, msg, generation, stalled=True)
        status["observedGeneration"] = generation
        return Outcome(status, None, [("Warning", cond.UNSUPPORTED_PROVIDER, msg)],
                       failed=True)
    if repo.spec.verify is not None:
        # The spec alone, before any I/O: a CEL condition that does not compile is an
        # invalid spec (Stalled, no retry), not a failed fetch to retry every interval.
        try:
            attestation_requirements(repo.spec.verify)
        except PolicyError as e:
            msg = f"spec.verify: {e}"
            cond.set_condition(conditions, cond.SOURCE_VERIFIED, cond.FALSE,
                               cond.INVALID_SPEC, msg, generation)
            cond.mark_failed(conditions, cond.INVALID_SPEC, msg, generation, stalled=True)
            status["observedGeneration"] = generation
            return Outcome(status, None, [("Warning", cond.INVALID_SPEC, msg)], failed=True)

    host = _host_of(repo.spec.url)
    if ctx.busy.get(host, 0) >= ctx.per_host:
        # Status untouched: this is load, not a verdict on the source.
        return Outcome(dict(obj.get("status") or {}), HOST_BUSY_RETRY * (1 + random.random()))
    ctx.busy[host] = ctx.busy.get(host, 0) + 1
    # A folder for the TLS files of spec.certSecretRef, made only when there is one: a
    # folder made and removed on every reconcile was 4% of the controller's CPU.
    with contextlib.ExitStack() as files:
        def scratch() -> Path:
            return Path(files.enter_context(tempfile.TemporaryDirectory(
                prefix="ocigitops-tls-")))

        try:
            return await _reconcile(obj, repo, ctx, status, conditions, generation,
                                    interval, scratch)
        except (OcigitopsError, PolicyError) as e:
            return _failed(status, conditions, generation, interval, e)
        except Exception as e:  # whatever a registry made us raise
            # Input-driven failures are typed; anything else is still a failed fetch that
            # the status must show (never stale conditions from the last success).
            return _failed(status, conditions, generation, interval, OcigitopsError(
                f"unexpected {type(e).__name__} while fetching: {e}"))
        finally:
            ctx.busy[host] -= 1
            if not ctx.busy[host]:
                del ctx.busy[host]


def _host_of(url: str) -> str:
    try:
        return parse_reference(url, require_scheme=True).api_host
    except OcigitopsError:
        return url


def _failed(status: dict[str, Any], conditions: list[dict[str, Any]], generation: int,
            interval: float, e: Exception) -> Outcome:
    # From the error's type, never from words in its message (a repository or tag named
    # "credentials" is not an authentication failure).
    reason = cond.AUTHENTICATION_FAILED if isinstance(
        e, AuthenticationError | CredentialsError) else cond.OCI_PULL_FAILED
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    cond.set_condition(conditions, cond.FETCH_FAILED, cond.TRUE, reason, message, generation)
    cond.mark_failed(conditions, reason, message, generation)
    status["observedGeneration"] = generation
    return Outcome(status, interval, [("Warning", reason, message)], failed=True)


async def _reconcile(obj: Mapping[str, Any], repo: OCIRepository, ctx: SourceContext,
                     status: dict[str, Any],
                     conditions: list[dict[str, Any]], generation: int, interval: float,
                     scratch: Callable[[], Path]) -> Outcome:
    ns = repo.metadata.namespace
    tls: dict[str, str | None] = {"ca_file": None, "cert_file": None, "key_file": None}
    if repo.spec.cert_secret_ref is not None:
        data = await ctx.kube.secret_data(ns, repo.spec.cert_secret_ref.name)
        if data is None:
            raise OcigitopsError(f"Secret {ns}/{repo.spec.cert_secret_ref.name} not found")
        tls = _tls_files(data, scratch())
    creds = await _credentials(ctx, repo)
    proxy = await _proxy(ctx, repo)
    base = parse_reference(repo.spec.url, require_scheme=True)
    # spec.timeout bounds the whole remote part (Flux: "timeout for remote OCI Repository
    # operations"), not each read: a registry dripping a byte at a time cannot hold a
    # worker past it.
    async with ctx.registry(creds, insecure=repo.spec.insecure,
                            timeout=repo.spec.timeout_seconds,
                            deadline=repo.spec.timeout_seconds, proxy=proxy, **tls) as client:
        pinned, digest, _size, revision = await _resolve(client, base, repo)
        artifact = status.get("artifact") or {}
        selector = _selector_json(repo)
        # With ``verify``, the last verification must be of this digest and have passed:
        # after a refused revision the tag may move back to the stored one (a rollback by
        # re-tagging), and skipping the verification then left SourceVerified=False and
        # the refused digest's outcome in the status of a Ready source.
        verified = repo.spec.verify is None or (
            (status.get("verification") or {}).get("digest") == digest
            and cond.is_true(conditions, cond.SOURCE_VERIFIED))
        unchanged = (artifact.get("revision") == revision
                     and status.get("observedIgnore") == repo.spec.ignore
                     and status.get("observedLayerSelector") == selector
                     and status.get("observedGeneration") == generation
                     and verified
                     and artifact.get("digest") and ctx.cache.has(artifact["digest"]))
        if unchanged:
            cond.remove(conditions, cond.FETCH_FAILED)
            cond.remove(conditions, cond.ARTIFACT_OUTDATED)
            cond.mark_ready(conditions, cond.SUCCEEDED,
                            f"stored artifact for revision '{revision}'", generation)
            return Outcome(status, interval)

        # Work in progress, written before the (possibly long) verification and fetch so
        # `kubectl wait` and kstatus see it, as source-controller does.
        msg = f"building artifact: new revision '{revision}' for '{repo.spec.url}'"
        if artifact.get("revision") not in (None, revision):
            cond.set_condition(conditions, cond.ARTIFACT_OUTDATED, cond.TRUE, "NewRevision",
                               msg, generation)
        cond.mark_reconciling(conditions, cond.PROGRESSING, msg, generation)
        await ctx.progress(obj, status)
        events: list[tuple[str, str, str]] = []
        m: Manifest | None = None
        if repo.spec.verify is not None:
            secrets: dict[str, dict[str, bytes]] = {}
            for name in referenced_secrets(repo.spec.verify):
                data = await ctx.kube.secret_data(ns, name)
                if data is None:
                    raise PolicyError(f"verification Secret {ns}/{name} not found")
                secrets[name] = data
            policy = build_signature_policy(repo.spec.verify, secrets)
            outcome = await verify_artifact(client, pinned, policy)
            status["verification"] = _verification_status(outcome.digest, outcome.result)
            if not outcome.passed or outcome.digest != digest:
                why = (_failures(policy, outcome.result) if not outcome.passed else
                       f"verified digest {outcome.digest} is not the resolved {digest}")
                msg = f"verification of revision {revision} failed: {why}"
                cond.set_condition(conditions, cond.SOURCE_VERIFIED, cond.FALSE,
                                   cond.VERIFICATION_ERROR, msg, generation)
                cond.mark_failed(conditions, cond.VERIFICATION_ERROR, msg, generation)
                status["observedGeneration"] = generation
                return Outcome(status, interval, [("Warning", cond.VERIFICATION_ERROR, msg)],
                               failed=True)
            m = outcome.manifest
            cond.set_condition(conditions, cond.SOURCE_VERIFIED, cond.TRUE, cond.SUCCEEDED,
                               _verified_message(revision, outcome.result), generation)
        else:
            cond.remove(conditions, cond.SOURCE_VERIFIED)
            status.pop("verification", None)

        if m is None:
            m = await client.get_manifest(pinned)  # hashed against the pinned digest
        if m.digest != digest:
            raise DigestMismatchError(f"manifest {m.digest} is not the resolved {digest}")
        manifest = parse_manifest(m.data, m.media_type)
        want = repo.spec.layer_selector.media_type if repo.spec.layer_selector else None
        layer = manifest.select_layer(want) if want else (
            manifest.layers[0] if manifest.layers else manifest.select_layer())
        if not ctx.cache.has(layer.digest):
            DEFAULT_LIMITS.check_layer_size(layer.size, f"layer {layer.digest} of {revision}")
            await ctx.cache.store(layer.digest, client.stream_blob(pinned, layer))
        status["artifact"] = to_dict(Artifact(
            digest=layer.digest,
            path=f"ocirepository/{ns}/{repo.metadata.name}/{layer.digest[7:]}.tar.gz",
            url=ctx.cache.path(layer.digest).as_uri(),
            revision=revision,
            last_update_time=cond.now_iso(),
            size=layer.size,
            metadata=dict(manifest.annotations)))
        status["observedIgnore"] = repo.spec.ignore
        status["observedLayerSelector"] = selector
        status["observedGeneration"] = generation
        cond.remove(conditions, cond.FETCH_FAILED)
        cond.remove(conditions, cond.ARTIFACT_OUTDATED)
        cond.set_condition(conditions, cond.ARTIFACT_IN_STORAGE, cond.TRUE, cond.SUCCEEDED,
                           f"stored artifact for revision '{revision}'", generation)
        cond.mark_ready(conditions, cond.SUCCEEDED,
                        f"stored artifact for revision '{revision}'", generation)
        new = artifact.get("revision") != revision
        if new:
            events.append(("Normal", cond.NEW_ARTIFACT, f"stored artifact with revision"
                                                        f" '{revision}' from '{repo.spec.url}'"))
        return Outcome(status, interval, events, changed=new)


#: Longest reason kept per authority or requirement in ``status.verification`` (the
#: condition message has them in full, up to the API server's 32 KiB).
STATUS_REASON_MAX = 1024


def _verification_status(digest: str, result: PolicyResult) -> dict[str, Any]:
    """``status.verification``: per authority and, when required, per attestation."""
    out: dict[str, Any] = {
        "digest": digest,
        "authorities": [{"name": a.name, "passed": a.passed,
                         "reason": a.reason[:STATUS_REASON_MAX],
                         **({"signer": str(a.signer)} if a.signer else {})}
                        for a in result.authorities]}
    if result.attestations:
        out["attestations"] = [{"name": r.name, "predicateType": r.predicate_type,
                                "passed": r.passed, "reason": r.reason[:STATUS_REASON_MAX],
                                **({"signer": str(r.signer)} if r.signer else {})}
                               for r in result.attestations]
    return out


def _failures(policy: SignaturePolicy, result: PolicyResult) -> str:
    """Why ``result`` did not pass: the failed authorities when the signature rule was not
    met (when it was, they are not the reason), then every failed attestation requirement
    with its failed condition or age (:meth:`PolicyResult.failures`)."""
    failed_auths = sum(not a.passed for a in result.authorities)
    passed = len(result.authorities) - failed_auths
    reasons = result.failures()  # the failed authorities first, then the requirements
    if passed >= max(1, policy.rule.required(len(result.authorities))):
        reasons = reasons[failed_auths:]
    return "; ".join(reasons) or "the policy did not pass"


def _verified_message(revision: str, result: PolicyResult) -> str:
    """``verified signature of revision R by A (signer)[ and attestations x, y]``."""
    signers = ", ".join(f"{a.name} ({a.signer})" for a in result.authorities if a.passed)
    msg = f"verified signature of revision {revision} by {signers}"
    if result.attestations:
        msg += " and attestations " + ", ".join(r.name for r in result.attestations)
    return msg


def _selector_json(repo: OCIRepository) -> dict[str, str] | None:
    sel = repo.spec.layer_selector
    if sel is None:
        return None
    out: dict[str, str] = {}
    if sel.media_type:
        out["mediaType"] = sel.media_type
    if sel.operation:
        out["operation"] = sel.operation
    return out


#: OCIRepository as a source others consume (the source contract).
SOURCE = SourceKind(kind=KIND, api_version=API_VERSION)

#: OCIRepository's place in the controller runtime.
RECONCILER: Reconciler[SourceContext] = Reconciler(
    name="oci", kind=KIND, plural="ocirepositories", status_type=OCIRepositoryStatus,
    context=SourceContext.from_deps, reconcile=reconcile, source=SOURCE,
    aliases=("ocirepository", "ocirepositories", "source"))

__all__ = ["API_VERSION", "KIND", "RECONCILER", "SOURCE", "Outcome", "RegistryError",
           "SourceContext", "reconcile", "revision_of"]
