"""``ocigitops install`` and ``ocigitops uninstall``: the operator's manifests
(``deploy/operator``) and one Instance, applied or removed in one command."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ocigitops.errors import OcigitopsError, UsageError
from ocigitops.puller.api.instance import KIND
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.apply import ObjRef, apply_set
from ocigitops.puller.kube import DynamicClient, UnknownKindError
from ocigitops.render import build_kustomization

OPERATOR_NAMESPACE = "ocigitops-system"
OPERATOR_DEPLOYMENT = "ocigitops-operator"
#: Where a pip install puts deploy/operator (pyproject's data-files), under sys.prefix.
INSTALLED = Path("share") / "ocigitops" / "deploy" / "operator"


def find_operator_dir() -> Path:
    """``deploy/operator``: the checkout's when ocigitops runs from one, else the copy a
    pip install put under ``<prefix>/share/ocigitops``."""
    here = Path(__file__).resolve()
    candidates = [here.parents[4] / "deploy" / "operator", Path(sys.prefix) / INSTALLED]
    for c in candidates:
        if (c / "kustomization.yaml").is_file():
            return c
    raise UsageError("the operator's manifests are not installed here (looked in "
                     f"{', '.join(str(c) for c in candidates)}): pass --manifests DIR")


@dataclass(frozen=True)
class InstallRequest:
    """What ``ocigitops install`` is asked to do; each field is one of its flags."""

    artifact: str
    version: str = "*"
    name: str = "ocigitops"
    namespace: str = OPERATOR_NAMESPACE
    components: tuple[str, ...] = ()
    insecure: bool = False
    #: A cosign public key file: stored in a Secret, the distribution must verify with it.
    verify_key: Path | None = None
    multitenant: bool = False
    sync_url: str | None = None
    sync_kind: str = "OCIRepository"
    sync_ref: str = ""
    sync_path: str = "./"
    #: The operator's image (default: the one deploy/operator names).
    image: str | None = None
    manifests: Path | None = None
    #: Apply only the Instance (the operator runs elsewhere).
    skip_operator: bool = False
    wait: bool = True
    timeout: float = 300.0
    kubeconfig: str | None = None
    context: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class InstallResult:
    """What was applied, and the Instance's status when waited for."""

    operator: str = ""
    revision: str = ""
    ready: bool = False
    message: str = ""


def operator_objects(request: InstallRequest) -> list[dict[str, Any]]:
    """deploy/operator built with kustomize, with ``image`` and ``namespace`` set."""
    src = request.manifests or find_operator_dir()
    objs = [d for d in yaml.safe_load_all(build_kustomization(src, root=src)) if d]
    for o in objs:
        md = o.setdefault("metadata", {})
        if o.get("kind") == "Namespace" and md.get("name") == OPERATOR_NAMESPACE:
            md["name"] = request.namespace
        if md.get("namespace") == OPERATOR_NAMESPACE:
            md["namespace"] = request.namespace
        for s in o.get("subjects") or []:
            if s.get("namespace") == OPERATOR_NAMESPACE:
                s["namespace"] = request.namespace
        if o.get("kind") == "Deployment" and request.image:
            for c in o["spec"]["template"]["spec"]["containers"]:
                c["image"] = request.image
    return objs


def verify_secret_name(name: str) -> str:
    """The Secret holding ``--verify-key`` for Instance ``name``."""
    return f"{name}-verify"


def instance_object(request: InstallRequest) -> dict[str, Any]:
    """The Instance ``ocigitops install`` applies."""
    dist: dict[str, Any] = {"artifact": request.artifact, "version": request.version}
    if request.insecure:
        dist["insecure"] = True
    if request.verify_key is not None:
        dist["verify"] = {"provider": "cosign",
                          "secretRef": {"name": verify_secret_name(request.name)}}
    spec: dict[str, Any] = {"distribution": dist, **request.extra}
    if request.components:
        spec["components"] = list(request.components)
    if request.multitenant:
        spec["cluster"] = {"multitenant": True}
    if request.sync_url:
        spec["sync"] = {"kind": request.sync_kind, "url": request.sync_url,
                        "path": request.sync_path, **({"ref": request.sync_ref}
                                                      if request.sync_ref else {})}
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": request.name, "namespace": request.namespace},
            "spec": spec}


def _ready(obj: Mapping[str, Any] | None) -> tuple[bool, str, bool]:
    """(Ready, message, final) of an Instance."""
    if obj is None:
        return False, "not found", False
    md, st = obj.get("metadata") or {}, obj.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    ready = conds.get("Ready") or {}
    stalled = (conds.get("Stalled") or {}).get("status") == "True"
    current = st.get("observedGeneration") == md.get("generation")
    return (current and ready.get("status") == "True", str(ready.get("message") or ""),
            current and (stalled or ready.get("reason") == "VerificationError"))


async def install(request: InstallRequest) -> InstallResult:
    """Apply the operator's manifests (unless ``skip_operator``), the verification key's
    Secret and the Instance; with ``wait``, wait until the Instance is Ready (an error
    naming its condition when it is refused or does not get there in ``timeout``)."""
    dyn = DynamicClient.from_kubeconfig(request.kubeconfig, context=request.context)
    result = InstallResult()
    try:
        objs: list[dict[str, Any]] = []
        if not request.skip_operator:
            objs += await asyncio.to_thread(operator_objects, request)
        if request.verify_key is not None:
            try:
                key = request.verify_key.read_text()
            except OSError as e:
                raise UsageError(f"--verify-key {request.verify_key}: {e.strerror}") from e
            objs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                         "metadata": {"name": verify_secret_name(request.name),
                                      "namespace": request.namespace},
                         "stringData": {"cosign.pub": key}})
        objs.append(instance_object(request))
        await apply_set(dyn, objs, force=True, wait_timeout=request.timeout)
        result.operator = f"{request.namespace}/{OPERATOR_DEPLOYMENT}"
        if request.wait:
            deadline = time.monotonic() + request.timeout
            while True:
                live = await dyn.get(API_VERSION, KIND, request.name, request.namespace)
                ok, msg, final = _ready(live)
                if ok:
                    result.ready, result.message = True, msg
                    result.revision = str(((live or {}).get("status") or {})
                                          .get("lastAppliedRevision") or "")
                    break
                if final or time.monotonic() > deadline:
                    raise OcigitopsError(f"Instance {request.namespace}/{request.name} is not"
                                         f" Ready: {msg or 'no status yet'}")
                await asyncio.sleep(1.0)
        return result
    finally:
        await dyn.aclose()


@dataclass(frozen=True)
class UninstallRequest:
    """What ``ocigitops uninstall`` is asked to do."""

    namespace: str = OPERATOR_NAMESPACE
    manifests: Path | None = None
    keep_operator: bool = False
    timeout: float = 300.0
    kubeconfig: str | None = None
    context: str | None = None


async def uninstall(request: UninstallRequest) -> list[str]:
    """Delete the namespace's Instances, wait until their finalizers ran (the operator
    removes the controller), then delete the operator's objects (not its Namespace, not
    the Instance CRD).
    Returns what was deleted."""
    dyn = DynamicClient.from_kubeconfig(request.kubeconfig, context=request.context)
    done: list[str] = []
    try:
        try:
            instances = await dyn.list(API_VERSION, KIND, request.namespace)
        except UnknownKindError:
            instances = []
        for inst in instances:
            name = inst["metadata"]["name"]
            await dyn.delete(API_VERSION, KIND, name, request.namespace)
            deadline = time.monotonic() + request.timeout
            while await dyn.get(API_VERSION, KIND, name, request.namespace) is not None:
                if time.monotonic() > deadline:
                    raise OcigitopsError(f"Instance {request.namespace}/{name} still has its"
                                         " finalizer: is the operator running?")
                await asyncio.sleep(1.0)
            done.append(f"{KIND}/{request.namespace}/{name}")
        if not request.keep_operator:
            objs = await asyncio.to_thread(operator_objects, InstallRequest(
                artifact="", namespace=request.namespace, manifests=request.manifests))
            # Its Namespace and the Instance CRD stay, as CRDs and namespaces do on an
            # Instance's deletion: Instances elsewhere, and your objects, are not touched.
            refs: Sequence[ObjRef] = [ObjRef.of(o) for o in objs if o.get("kind") not in
                                      ("Namespace", "CustomResourceDefinition")]
            for ref in refs:
                try:
                    if await dyn.get(ref.api_version, ref.kind, ref.name,
                                     ref.namespace or None) is not None:
                        await dyn.delete(ref.api_version, ref.kind, ref.name,
                                         ref.namespace or None)
                        done.append(str(ref))
                except UnknownKindError:
                    continue
        return done
    finally:
        await dyn.aclose()
