"""An OCIRepository on a registry whose TLS certificate comes from a private CA
(Debian's docker-registry, TLS only), through the controller process:

- without ``certSecretRef`` the fetch fails on the certificate, and the status says so;
- with ``certSecretRef`` naming a Secret that holds ``ca.crt`` it becomes Ready (the CA is
  written to a folder made for that reconcile only: sources without the field make none).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from ocigitops.artifact import Metadata
from ocigitops.publisher.artifacts import push_artifact
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.reference import parse_reference
from ocigitops.registry import RegistryClient
from tests.helpers.kube import OCI, Kube, ready_condition, status_of, wait_source_ready
from tests.helpers.publish import REVISION, SOURCE, configmap, manifest_tree
from tests.helpers.registries import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _push_tls(reg: Registry, repo: str, tree: Path) -> str:
    async def go() -> str:
        async with RegistryClient(ca_file=reg.ca_file) as c:
            pushed = await push_artifact(c, parse_reference(f"{reg.host}/{repo}:v1"), tree,
                                         Metadata(SOURCE, REVISION))
            return str(pushed.digest)

    return asyncio.run(go())


def _source(ns: Kube, name: str, reg: Registry, repo: str, secret: str | None) -> None:
    spec = {"url": f"oci://{reg.host}/{repo}", "interval": "1m", "timeout": "20s",
            "ref": {"tag": "v1"}}
    if secret:
        spec["certSecretRef"] = {"name": secret}  # type: ignore[assignment]
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": name, "namespace": ns.namespace}, "spec": spec})


def test_private_ca_through_cert_secret_ref(ns: Kube, debian_tls: Registry,
                                            tmp_path: Path) -> None:
    assert debian_tls.ca_file
    repo = f"tls/{ns.namespace}"
    digest = _push_tls(debian_tls, repo, manifest_tree(tmp_path, "v1",
                                                       configmap("cm", {"a": "b"})))

    _source(ns, "untrusted", debian_tls, repo, None)
    ns.wait("untrusted source failed", lambda: ready_condition(ns, OCI, "untrusted").get(
        "status") == "False", 60)
    message = str(ready_condition(ns, OCI, "untrusted").get("message"))
    assert "certificate" in message.lower(), message

    ns.apply({"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "registry-ca", "namespace": ns.namespace},
              "data": {"ca.crt": base64.b64encode(
                  Path(debian_tls.ca_file).read_bytes()).decode()}})
    _source(ns, "trusted", debian_tls, repo, "registry-ca")
    wait_source_ready(ns, "trusted", f"v1@{digest}")
    assert status_of(ns, OCI, "trusted")["artifact"]["revision"] == f"v1@{digest}"
