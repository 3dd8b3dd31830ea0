"""``deploy/`` is accepted by a real API server: built with the real kustomize, dry-run,
then applied by our own apply engine (CRDs and Namespace first). The controller's Pod
cannot run on kwok nodes; the objects must be valid and the CRDs Established."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from ocigitops.puller.apply import apply_set
from ocigitops.puller.devcluster import Cluster
from ocigitops.puller.kube import DynamicClient
from ocigitops.render import build_kustomization
from tests.helpers.paths import DEPLOY

pytestmark = pytest.mark.e2e


def test_deploy_directory_applies(kube_cluster: Cluster) -> None:
    objs = [d for d in yaml.safe_load_all(build_kustomization(DEPLOY, root=DEPLOY)) if d]
    kinds = {o["kind"] for o in objs}
    assert {"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole",
            "ClusterRoleBinding", "Deployment", "Service"} <= kinds

    async def go() -> tuple[str, dict[str, object] | None]:
        dyn = DynamicClient.from_kubeconfig(str(kube_cluster.kubeconfig))
        try:
            result = await apply_set(dyn, objs, wait_timeout=60)
            dep = await dyn.get("apps/v1", "Deployment", "ocigitops-controller",
                                "ocigitops-system")
            return result.summary(), dep
        finally:
            await dyn.aclose()

    summary, dep = asyncio.run(go())
    assert f"created {len(objs)}" in summary or "unchanged" in summary, summary
    assert dep is not None
    container = dep["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert container["args"][:2] == ["controller", "run"] or "controller" in str(container)
