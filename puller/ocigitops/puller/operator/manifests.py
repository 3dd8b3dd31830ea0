"""What the operator makes of a distribution: pure functions, no I/O.

- :func:`choose_version`: the tag to install from the artifact's tags, a semver range
  and the version installed now (no downgrade while the installed one is in range);
- :func:`customize`: the rendered distribution changed for an Instance (its namespace,
  the controller's ``--controllers``, the multitenant lockdown flags, the size profile,
  the cache volume, commonMetadata, the owner labels);
- :func:`sync_objects`: the source and Kustomization of ``spec.sync``;
- :func:`components_status`: ``status.components`` from the rendered Deployment.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ocigitops.errors import OcigitopsError
from ocigitops.puller.api.instance import Instance, InstanceSpec
from ocigitops.puller.api.meta import API_VERSION, GROUP
from ocigitops.puller.api.schema import to_dict
from ocigitops.tags import parse_semver, select_latest, semver_matches

#: The namespace the distribution's manifests name; the operator installs into the
#: Instance's namespace instead.
DIST_NAMESPACE = "ocigitops-system"
CONTROLLER_DEPLOYMENT = "ocigitops-controller"
CONTROLLER_CONTAINER = "controller"
#: Labels naming the Instance that applied an object.
OWNER_NAME_LABEL = f"instance.{GROUP}/name"
OWNER_NAMESPACE_LABEL = f"instance.{GROUP}/namespace"

#: size profile -> (--concurrent, requests, limits).
SIZES: Mapping[str, tuple[int, dict[str, str], dict[str, str]]] = {
    "small": (4, {"cpu": "100m", "memory": "128Mi"}, {"cpu": "1", "memory": "512Mi"}),
    "medium": (10, {"cpu": "250m", "memory": "256Mi"}, {"cpu": "2", "memory": "1Gi"}),
    "large": (20, {"cpu": "500m", "memory": "512Mi"}, {"cpu": "4", "memory": "2Gi"}),
}


class NoVersionError(OcigitopsError):
    """No tag of the artifact matches the Instance's version range."""


@dataclass(frozen=True)
class VersionChoice:
    """The tag to install and, when it is not simply the highest in range, why."""

    tag: str
    note: str = ""


def tag_of(revision: str | None) -> str | None:
    """``v1.2.0`` of ``v1.2.0@sha256:...`` (None for none or a bare digest)."""
    if not revision or "@" not in revision:
        return None
    return revision.split("@", 1)[0] or None


def choose_version(tags: Sequence[str], constraint: str, current: str | None) -> VersionChoice:
    """The highest tag in ``constraint``, except that the installed version ``current`` is
    kept while it is still in range and higher (its tag was deleted, or the range now also
    allows lower versions): no downgrade unless the range allows only lower versions.
    ``NoVersionError`` when nothing matches and ``current`` is not in range."""
    best = select_latest(tags, constraint)
    cur = parse_semver(current) if current else None
    if cur is not None and current is not None and semver_matches(cur, constraint):
        best_v = parse_semver(best) if best else None
        if best_v is None or best_v.compare(cur) < 0:
            return VersionChoice(current, f"kept {current}: the highest published version in"
                                          f" range {constraint!r} is "
                                          f"{best or 'none'} (no downgrade)")
    if best is None:
        raise NoVersionError(f"no tag matches version range {constraint!r}")
    return VersionChoice(best)


def _controller(objs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    for o in objs:
        if o.get("kind") == "Deployment" and \
                (o.get("metadata") or {}).get("name") == CONTROLLER_DEPLOYMENT:
            return o
    return None


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    containers = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    for c in containers:
        if c.get("name") == CONTROLLER_CONTAINER:
            return c  # type: ignore[no-any-return]
    raise OcigitopsError(f"the distribution's Deployment {CONTROLLER_DEPLOYMENT} has no"
                         f" container {CONTROLLER_CONTAINER}")


def _set_flag(args: list[str], flag: str, value: str | None) -> list[str]:
    """``args`` without ``flag`` (``--flag=v``, ``--flag v`` or bare) and, unless ``value``
    is None, with ``flag=value`` (``value`` ``""``: the bare flag) added."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == flag:
            if i < len(args) and not args[i].startswith("-"):
                i += 1  # its value
            continue
        if not a.startswith(flag + "="):
            out.append(a)
    if value is not None:
        out.append(f"{flag}={value}" if value else flag)
    return out


def _rename_ns(value: Any, namespace: str) -> Any:
    return namespace if value == DIST_NAMESPACE else value


def customize(objs: Sequence[Mapping[str, Any]], inst: Instance) -> list[dict[str, Any]]:
    """The distribution's objects as this Instance installs them (a deep copy)."""
    spec: InstanceSpec = inst.spec
    ns = inst.metadata.namespace
    out = [copy.deepcopy(dict(o)) for o in objs]
    for o in out:
        md = o.setdefault("metadata", {})
        if o.get("kind") == "Namespace":
            md["name"] = _rename_ns(md.get("name"), ns)
        if "namespace" in md:
            md["namespace"] = _rename_ns(md["namespace"], ns)
        for s in o.get("subjects") or []:
            if isinstance(s, dict) and "namespace" in s:
                s["namespace"] = _rename_ns(s["namespace"], ns)
    dep = _controller(out)
    if dep is None:
        raise OcigitopsError(f"the distribution has no Deployment {CONTROLLER_DEPLOYMENT}: is"
                             " it an ocigitops distribution artifact (ocigitops dist push)?")
    c = _container(dep)
    args = [str(a) for a in c.get("args") or []]
    args = _set_flag(args, "--controllers",
                     ",".join(spec.components) if spec.components else None)
    multitenant = spec.cluster is not None and spec.cluster.multitenant
    args = _set_flag(args, "--no-cross-namespace-refs", "" if multitenant else None)
    args = _set_flag(args, "--default-service-account", "default" if multitenant else None)
    size = spec.cluster.size if spec.cluster is not None else None
    if size:
        concurrent, requests, limits = SIZES[size]
        args = _set_flag(args, "--concurrent", str(concurrent))
        c["resources"] = {"requests": dict(requests), "limits": dict(limits)}
    c["args"] = args
    if spec.storage is not None and spec.storage.size:
        pod = dep["spec"]["template"]["spec"]
        for v in pod.get("volumes") or []:
            if v.get("name") == "cache":
                v.clear()
                v.update({"name": "cache", "emptyDir": {"sizeLimit": spec.storage.size}})
    cm = spec.common_metadata
    for o in out:
        md = o["metadata"]
        if cm is not None:
            if cm.labels:
                md["labels"] = {**(md.get("labels") or {}), **cm.labels}
            if cm.annotations:
                md["annotations"] = {**(md.get("annotations") or {}), **cm.annotations}
    return out


def label_owned(objs: Sequence[dict[str, Any]], inst: Instance) -> None:
    """Label every object with the Instance that applied it (in place)."""
    for o in objs:
        labels = o.setdefault("metadata", {}).setdefault("labels", {})
        labels[OWNER_NAME_LABEL] = inst.metadata.name
        labels[OWNER_NAMESPACE_LABEL] = inst.metadata.namespace


def owner_reference(inst: Instance) -> dict[str, Any]:
    """An ownerReference to the Instance (for the sync objects)."""
    return {"apiVersion": API_VERSION, "kind": "Instance", "name": inst.metadata.name,
            "uid": inst.metadata.uid, "controller": True, "blockOwnerDeletion": False}


def sync_objects(inst: Instance) -> list[dict[str, Any]]:
    """The source and Kustomization ``spec.sync`` asks for (none without it), named after
    the Instance, in its namespace, owned by it."""
    sync = inst.spec.sync
    if sync is None:
        return []
    name, ns = inst.metadata.name, inst.metadata.namespace
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if inst.metadata.uid:
        md["ownerReferences"] = [owner_reference(inst)]
    source: dict[str, Any] = {"url": sync.url, "interval": sync.interval}
    if sync.kind == "OCIRepository":
        ref = sync.ref or "latest"
        source["ref"] = {"digest": ref} if ref.startswith("sha256:") else {"tag": ref}
        if sync.verify is not None:
            source["verify"] = to_dict(sync.verify)
    else:
        source["ref"] = {"branch": sync.ref or "main"}
    if sync.pull_secret:
        source["secretRef"] = {"name": sync.pull_secret}
    ks = {"interval": sync.interval, "path": sync.path, "prune": True,
          "sourceRef": {"kind": sync.kind, "name": name}}
    return [{"apiVersion": API_VERSION, "kind": sync.kind, "metadata": copy.deepcopy(md),
             "spec": source},
            {"apiVersion": API_VERSION, "kind": "Kustomization", "metadata": copy.deepcopy(md),
             "spec": ks}]


def components_status(objs: Sequence[Mapping[str, Any]], components: Sequence[str],
                      all_names: Sequence[str]) -> list[dict[str, str]]:
    """``status.components``: each reconciler that runs, with the controller's image
    (repository and digest)."""
    dep = _controller([dict(o) for o in objs])
    image = str(_container(dep).get("image") or "") if dep is not None else ""
    repo, _, digest = image.partition("@")
    return [{"name": n, "image": repo, "digest": digest}
            for n in (components or all_names)]
