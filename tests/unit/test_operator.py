"""The operator's pure logic: the version it installs, what it changes in the
distribution's manifests, the sync objects, the refused fields, the Instance CRD."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ocigitops.puller import crdgen
from ocigitops.puller.api.instance import parse_instance, unsupported_fields
from ocigitops.puller.api.schema import ValidationError
from ocigitops.puller.operator import manifests as m
from ocigitops.puller.operator.install import InstallRequest, instance_object
from tests.helpers.paths import DEPLOY

pytestmark = pytest.mark.unit

TAGS = ["v0.1.0", "v0.1.1", "v0.2.0", "v1.0.0", "latest", "sha256-" + "a" * 64 + ".sig"]


@pytest.mark.parametrize(("constraint", "current", "tag", "kept"), [
    (">=0.1.0 <0.2.0", None, "v0.1.1", False),          # fresh install: highest in range
    (">=0.1.0 <0.2.0", "v0.1.0", "v0.1.1", False),      # upgrade inside the range
    ("*", "v0.2.0", "v1.0.0", False),
    (">=0.1.0 <1.0.0", "v0.2.5", "v0.2.5", True),       # installed is higher, in range: kept
    ("<0.2.0", "v0.2.0", "v0.1.1", False),              # range allows only lower: downgrade
])
def test_version_choice(constraint: str, current: str | None, tag: str, kept: bool) -> None:
    choice = m.choose_version(TAGS, constraint, current)
    assert choice.tag == tag
    assert bool(choice.note) == kept
    if kept:
        assert "no downgrade" in choice.note


def test_no_version_in_range() -> None:
    with pytest.raises(m.NoVersionError, match=r"2\.x"):
        m.choose_version(TAGS, "2.x", None)


def test_tag_of_revision() -> None:
    assert m.tag_of("v1.0.0@sha256:" + "0" * 64) == "v1.0.0"
    assert m.tag_of("sha256:" + "0" * 64) is None and m.tag_of(None) is None


def _instance(**spec: Any) -> Any:
    return parse_instance({
        "apiVersion": "ocigitops.dev/v1", "kind": "Instance",
        "metadata": {"name": "ocigitops", "namespace": "tenant-sys", "uid": "u-1"},
        "spec": {"distribution": {"version": "0.x", "artifact": "oci://r.example/dist"},
                 **spec}})


def _dist() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ocigitops-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "ocigitops-controller"},
         "subjects": [{"kind": "ServiceAccount", "name": "ocigitops-controller",
                       "namespace": "ocigitops-system"}]},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "ocigitops-controller", "namespace": "ocigitops-system"},
         "spec": {"template": {"spec": {
             "containers": [{"name": "controller",
                             "image": "r.example/ocigitops@sha256:" + "1" * 64,
                             "args": ["controller", "run", "--leader-elect",
                                      "--controllers", "oci"]}],
             "volumes": [{"name": "cache", "emptyDir": {}}]}}}},
    ]


def _args(objs: list[dict[str, Any]]) -> list[str]:
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    return list(dep["spec"]["template"]["spec"]["containers"][0]["args"])


def test_defaults_install_into_the_instance_namespace_with_every_reconciler() -> None:
    objs = m.customize(_dist(), _instance())
    assert objs[0]["metadata"]["name"] == "tenant-sys"
    assert objs[1]["subjects"][0]["namespace"] == "tenant-sys"
    assert objs[2]["metadata"]["namespace"] == "tenant-sys"
    # No --controllers: all of them; the other flags are kept as the distribution has them.
    assert _args(objs) == ["controller", "run", "--leader-elect"]
    assert _dist()[2]["metadata"]["namespace"] == "ocigitops-system"  # input not changed


def test_components_multitenant_size_storage_metadata() -> None:
    inst = _instance(components=["oci", "kustomization"],
                     cluster={"multitenant": True, "size": "medium"},
                     storage={"size": "5Gi"},
                     commonMetadata={"labels": {"team": "platform"},
                                     "annotations": {"a": "b"}})
    objs = m.customize(_dist(), inst)
    assert _args(objs) == ["controller", "run", "--leader-elect",
                           "--controllers=oci,kustomization", "--no-cross-namespace-refs",
                           "--default-service-account=default", "--concurrent=10"]
    pod = objs[2]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert pod["volumes"] == [{"name": "cache", "emptyDir": {"sizeLimit": "5Gi"}}]
    assert all(o["metadata"]["labels"]["team"] == "platform" for o in objs)
    assert all(o["metadata"]["annotations"]["a"] == "b" for o in objs)


def test_a_distribution_without_the_controller_is_refused() -> None:
    with pytest.raises(Exception, match="no Deployment ocigitops-controller"):
        m.customize(_dist()[:2], _instance())


def test_components_status() -> None:
    objs = m.customize(_dist(), _instance(components=["oci"]))
    assert m.components_status(objs, ("oci",), ["oci", "git"]) == [
        {"name": "oci", "image": "r.example/ocigitops", "digest": "sha256:" + "1" * 64}]
    assert [c["name"] for c in m.components_status(objs, (), ["oci", "git"])] == ["oci", "git"]


def test_sync_objects_are_owned_by_the_instance() -> None:
    inst = _instance(sync={"url": "oci://r.example/fleet", "ref": "prod", "path": "./clusters/a",
                           "pullSecret": "regcred",
                           "verify": {"provider": "cosign", "secretRef": {"name": "keys"}}})
    src, ks = m.sync_objects(inst)
    assert src["kind"] == "OCIRepository" and src["spec"]["ref"] == {"tag": "prod"}
    assert src["spec"]["secretRef"] == {"name": "regcred"}
    assert src["spec"]["verify"]["secretRef"] == {"name": "keys"}
    assert ks["spec"]["sourceRef"] == {"kind": "OCIRepository", "name": "ocigitops"}
    assert ks["spec"]["path"] == "./clusters/a" and ks["spec"]["prune"] is True
    for o in (src, ks):
        assert o["metadata"]["namespace"] == "tenant-sys"
        assert o["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    git, _ = m.sync_objects(_instance(sync={"kind": "GitRepository",
                                             "url": "https://git.example/fleet"}))
    assert git["spec"]["ref"] == {"branch": "main"}
    assert m.sync_objects(_instance()) == []


def test_unimplemented_fields_are_named() -> None:
    inst = _instance(cluster={"networkPolicy": True, "domain": "corp.local"},
                     storage={"class": "fast"},
                     sync={"kind": "GitRepository", "url": "https://g.example/x",
                           "verify": {"provider": "cosign", "secretRef": {"name": "k"}}})
    assert unsupported_fields(inst.spec) == [
        "spec.cluster.networkPolicy", "spec.cluster.domain", "spec.storage.class",
        "spec.sync.verify (GitRepository)"]
    assert unsupported_fields(_instance().spec) == []


def test_invalid_instance() -> None:
    with pytest.raises(ValidationError, match=r"spec\.distribution\.artifact"):
        parse_instance({"metadata": {"name": "x"},
                        "spec": {"distribution": {"version": "1.x", "artifact": "r/x"}}})


def test_instance_crd_is_up_to_date(tmp_path: Path) -> None:
    assert crdgen.stale_crds(DEPLOY / "operator", "operator") == []
    assert crdgen.main(["--set", "operator", "--check", "--out-dir",
                        str(DEPLOY / "operator")]) == 0
    assert crdgen.main(["--set", "operator", "--check", "--out-dir", str(tmp_path)]) == 1
    crd = crdgen.instance_crd()
    assert crd["metadata"]["name"] == "instances.ocigitops.dev"
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {"distribution", "components", "cluster", "sync", "kustomize", "commonMetadata",
            "wait", "storage", "uninstall"} <= set(spec["properties"])
    assert "removeCRDs" in spec["properties"]["uninstall"]["properties"]


def test_install_builds_the_instance(tmp_path: Path) -> None:
    obj = instance_object(InstallRequest(artifact="oci://r.example/dist", version="0.x",
                                         components=("oci",), verify_key=tmp_path / "k.pub",
                                         multitenant=True, sync_url="oci://r.example/fleet"))
    inst = parse_instance(obj)
    assert inst.spec.components == ("oci",)
    assert inst.spec.distribution.verify is not None
    assert inst.spec.cluster is not None and inst.spec.cluster.multitenant
    assert inst.spec.sync is not None and inst.spec.sync.url == "oci://r.example/fleet"


class _NoKube:
    """A context whose every I/O fails the test: refusals happen before any."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"no I/O expected, got kube.{name}")


def _obj(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "ocigitops.dev/v1", "kind": "Instance",
            "metadata": {"name": "x", "namespace": "t", "generation": 3},
            "spec": {"distribution": {"version": "0.x", "artifact": "oci://r.example/d"},
                     **spec}}


@pytest.mark.parametrize(("spec", "reason", "words"), [
    ({"cluster": {"networkPolicy": True}}, "UnsupportedField", "spec.cluster.networkPolicy"),
    ({"storage": {"class": "fast"}}, "UnsupportedField", "spec.storage.class"),
    ({"components": ["oci", "nope"]}, "InvalidSpec", "unknown controller nope"),
])
def test_refused_before_any_io(spec: dict[str, Any], reason: str, words: str) -> None:
    from ocigitops.puller.operator.instance import InstanceContext, reconcile

    ctx = InstanceContext(kube=_NoKube())  # type: ignore[arg-type]
    out = asyncio.run(reconcile(_obj(**spec), ctx))
    conds = {c["type"]: c for c in out.status["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == reason
    assert words in conds["Ready"]["message"]
    assert conds["Stalled"]["status"] == "True"
    assert out.requeue_after is None and not out.add_finalizer
    assert out.status["observedGeneration"] == 3
