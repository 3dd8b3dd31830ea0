"""The cluster operations behind ``get``, ``reconcile``, ``suspend`` and ``resume``
(``ocigitops.puller.ops``), over an in-memory stand-in for the Kubernetes API that answers a
reconcile request the way the controller does."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ocigitops.errors import OcigitopsError, UsageError
from ocigitops.puller import ops
from ocigitops.puller.api.meta import API_VERSION, RECONCILE_REQUESTED_AT

pytestmark = pytest.mark.unit

T = TypeVar("T")
Key = tuple[str, str, str]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def obj(kind: str, namespace: str, name: str, *, ready: str = "True", message: str = "ok",
        suspend: bool = False, revision: str = "", source: dict[str, str] | None = None,
        ) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": ready,
                                              "reason": "Succeeded", "message": message}]}
    if kind == "OCIRepository":
        status["artifact"] = {"revision": revision}
    else:
        status["lastAppliedRevision"] = revision
    spec: dict[str, Any] = {"suspend": suspend}
    if source:
        spec["sourceRef"] = source
    return {"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"namespace": namespace, "name": name}, "spec": spec, "status": status}


class FakeKube:
    """The DynamicClient calls ops makes. A reconcile request is handled at once: the
    object's status records the token and its Ready condition becomes ``outcome[key]``."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects: dict[Key, dict[str, Any]] = {
            (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects}
        self.outcome: dict[Key, tuple[str, str]] = {}
        self.requests: list[Key] = []
        self.closed = False

    async def list(self, api_version: str, kind: str, namespace: str | None
                   ) -> list[dict[str, Any]]:
        assert api_version == API_VERSION
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items()
                if k == kind and namespace in (None, ns)]

    async def get(self, api_version: str, kind: str, name: str, namespace: str
                  ) -> dict[str, Any] | None:
        o = self.objects.get((kind, namespace, name))
        return copy.deepcopy(o) if o is not None else None

    async def patch_metadata(self, api_version: str, kind: str, name: str, namespace: str,
                             patch: dict[str, Any]) -> None:
        key = (kind, namespace, name)
        self.requests.append(key)
        o = self.objects[key]
        token = patch["annotations"][RECONCILE_REQUESTED_AT]
        ready, message = self.outcome.get(key, ("True", f"reconciled {name}"))
        o["status"]["lastHandledReconcileAt"] = token
        o["status"]["conditions"] = [{"type": "Ready", "status": ready,
                                      "reason": "Succeeded", "message": message}]

    async def merge_patch(self, api_version: str, kind: str, name: str, namespace: str,
                          patch: dict[str, Any]) -> None:
        self.objects[(kind, namespace, name)]["spec"].update(patch["spec"])

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    fake = FakeKube(
        obj("OCIRepository", "apps", "app", revision="v1@sha256:aa"),
        obj("OCIRepository", "shared", "base", revision="v2@sha256:bb"),
        obj("Kustomization", "apps", "app", revision="v1@sha256:aa",
            source={"kind": "OCIRepository", "name": "app"}),
        obj("Kustomization", "apps", "other", source={"kind": "OCIRepository", "name": "base",
                                                      "namespace": "shared"}),
        obj("Kustomization", "apps", "paused", suspend=True),
        obj("Kustomization", "dev", "app", ready="False", message="build failed"),
    )
    seen: list[str | None] = []

    class Factory:
        @staticmethod
        def from_kubeconfig(path: str | None, **kw: Any) -> FakeKube:
            seen.append(path)
            return fake

    monkeypatch.setattr(ops, "DynamicClient", Factory)
    return fake


def test_parse_target() -> None:
    assert ops.parse_target("source", ("oci", "app")) == ops.Target("OCIRepository", "app")
    assert ops.parse_target("source", ("git", "app")) == ops.Target("GitRepository", "app")
    assert ops.parse_target("kustomization", ["app"]) == ops.Target("Kustomization", "app")
    for kind, args, usage in [("source", ("bucket", "app"), "usage: source oci|git NAME"),
                              ("source", ("oci",), "usage: source oci|git NAME"),
                              ("kustomization", ("a", "b"), "usage: kustomization NAME")]:
        with pytest.raises(UsageError, match=usage):
            ops.parse_target(kind, args)


def test_get_objects_and_table(kube: FakeKube) -> None:
    rows = run(ops.get_objects("kc", "Kustomization", "apps"))
    assert [r.name for r in rows] == ["app", "other", "paused"]
    assert rows[0].revision == "v1@sha256:aa" and rows[2].suspended
    assert kube.closed
    lines = ops.objects_table(rows, all_namespaces=False).splitlines()
    assert lines[0].split() == ["NAME", "REVISION", "SUSPENDED", "READY", "MESSAGE"]
    assert lines[1].split() == ["app", "v1@sha256:aa", "False", "True", "ok"]
    assert lines[1].index("False") == lines[0].index("SUSPENDED")
    everywhere = run(ops.get_objects(None, "OCIRepository", None))
    assert [(r.namespace, r.name) for r in everywhere] == [("apps", "app"), ("shared", "base")]
    table = ops.objects_table(everywhere, all_namespaces=True).splitlines()
    assert table[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert table[2].split()[:3] == ["shared", "base", "v2@sha256:bb"]
    assert ops.objects_table([], all_namespaces=False) == \
        "NAME  REVISION  SUSPENDED  READY  MESSAGE"


def test_reconcile(kube: FakeKube) -> None:
    result = run(ops.reconcile("kc", ops.Target("Kustomization", "app"), "apps", wait=5))
    assert kube.requests == [("Kustomization", "apps", "app")]
    assert result.source is None and result.row.ready == "True"
    assert result.summary() == "Kustomization apps/app reconciled: reconciled app"
    assert kube.closed


def test_reconcile_with_source_goes_to_the_source_first(kube: FakeKube) -> None:
    result = run(ops.reconcile("kc", ops.Target("Kustomization", "other"), "apps",
                               with_source=True, wait=5))
    # The source in its own namespace, then the Kustomization.
    assert kube.requests == [("OCIRepository", "shared", "base"),
                             ("Kustomization", "apps", "other")]
    assert result.source is not None and result.source.name == "base"
    kube.requests.clear()
    run(ops.reconcile("kc", ops.Target("Kustomization", "app"), "apps", with_source=True,
                      wait=5))
    assert kube.requests == [("OCIRepository", "apps", "app"), ("Kustomization", "apps", "app")]
    kube.requests.clear()
    # --with-source means nothing for a source itself.
    run(ops.reconcile("kc", ops.Target("OCIRepository", "app"), "apps", with_source=True,
                      wait=5))
    assert kube.requests == [("OCIRepository", "apps", "app")]


def test_reconcile_failures(kube: FakeKube) -> None:
    with pytest.raises(OcigitopsError, match="Kustomization apps/paused is suspended"):
        run(ops.reconcile("kc", ops.Target("Kustomization", "paused"), "apps", wait=5))
    with pytest.raises(OcigitopsError, match="Kustomization apps/missing not found"):
        run(ops.reconcile("kc", ops.Target("Kustomization", "missing"), "apps", wait=5))
    kube.outcome[("Kustomization", "dev", "app")] = ("False", "apply failed: denied")
    with pytest.raises(OcigitopsError, match="reconciliation failed: apply failed: denied"):
        run(ops.reconcile("kc", ops.Target("Kustomization", "app"), "dev", wait=5))
    # A failing source stops --with-source before the Kustomization is asked.
    kube.requests.clear()
    kube.outcome[("OCIRepository", "apps", "app")] = ("False", "pull failed")
    with pytest.raises(OcigitopsError, match="OCIRepository apps/app reconciliation failed"):
        run(ops.reconcile("kc", ops.Target("Kustomization", "app"), "apps",
                          with_source=True, wait=5))
    assert kube.requests == [("OCIRepository", "apps", "app")]
    assert kube.closed


def test_suspend_and_resume(kube: FakeKube) -> None:
    target = ops.Target("Kustomization", "app")
    done = run(ops.suspend("kc", target, "apps"))
    assert kube.objects[("Kustomization", "apps", "app")]["spec"]["suspend"] is True
    assert done.summary() == "Kustomization apps/app suspended"
    back = run(ops.suspend("kc", target, "apps", suspended=False))
    assert kube.objects[("Kustomization", "apps", "app")]["spec"]["suspend"] is False
    assert back.summary() == "Kustomization apps/app resumed"
    with pytest.raises(OcigitopsError, match="OCIRepository apps/nope not found"):
        run(ops.suspend("kc", ops.Target("OCIRepository", "nope"), "apps"))


def test_connect_turns_a_bad_kubeconfig_into_one_line(tmp_path: Path) -> None:
    with pytest.raises(OcigitopsError, match=r"kubeconfig: .*not found"):
        run(ops.get_objects(str(tmp_path / "missing"), "Kustomization", None))


def test_connect_turns_an_unreachable_api_server_into_one_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n")
    with pytest.raises(OcigitopsError, match="cannot reach the Kubernetes API server"):
        run(ops.get_objects(str(kubeconfig), "Kustomization", None))
