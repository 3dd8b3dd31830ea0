"""``push chart`` and the OCI side of HelmChart against the real helm 3.19 and a real registry.

Both directions: what ``ocigitops push chart`` pushes is pulled and rendered by ``helm pull``
and ``helm template oci://...``; what ``helm push`` pushes is read by our HelmChart
reconciler (a HelmRepository of type oci; the cluster reads come from MemKube, a fake: see
its docstring). A chart pushed with ``--sign`` verifies with ``ocigitops verify artifact
--key``, and a HelmChart with ``spec.verify`` accepts it and refuses an unsigned version,
keeping the last chart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.reconcile import Outcome, typed_status
from ocigitops.puller.sources import helmchart as hcsrc
from ocigitops.puller.sources import helmrepository as hrsrc
from ocigitops.verifier.keys import generate_key_pair
from tests.helpers.cli import cli, ocigitops, one_error
from tests.helpers.helmrepo import helm, make_chart
from tests.helpers.memkube import MemKube
from tests.helpers.registries import Registry

pytestmark = pytest.mark.timeout(300)

NS = "apps"
SOURCES = {"HelmRepository": hrsrc.SOURCE, "HelmChart": hcsrc.SOURCE}
ENV = {"COSIGN_PASSWORD": "pw"}


def _manifest(reg: Registry, repo: str, tag: str) -> dict[str, Any]:
    import httpx

    r = httpx.get(f"http://{reg.host}/v2/{repo}/manifests/{tag}",
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


def test_ours_read_by_helm(embedded_registry: Registry, tmp_path: Path) -> None:
    chart = make_chart(tmp_path / "src", "web", "1.2.3+build.7", values="replicas: 3\n")
    url = f"oci://{embedded_registry.host}/charts"
    out = ocigitops("push", "chart", str(chart), url, "-o", "json")
    doc = json.loads(out.stdout)
    assert doc["tag"] == "1.2.3_build.7" and doc["version"] == "1.2.3+build.7"
    assert doc["repository"] == f"{url}/web"
    m = _manifest(embedded_registry, "charts/web", "1.2.3_build.7")
    assert m["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    assert [x["mediaType"] for x in m["layers"]] == [
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip"]
    assert m["annotations"]["org.opencontainers.image.title"] == "web"
    assert m["annotations"]["org.opencontainers.image.version"] == "1.2.3+build.7"

    home = tmp_path / "helm"
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    helm("pull", f"{url}/web", "--version", "1.2.3+build.7", "--plain-http", "-d",
         str(pulled), home=home)
    (tgz,) = pulled.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        assert sorted(tar.getnames()) == ["web/Chart.yaml", "web/templates/cm.yaml",
                                          "web/values.yaml"]
    rendered = helm("template", "rel", str(tgz), home=home)
    assert 'replicas: "3"' in rendered and "rel-cm" in rendered
    # helm install's path: render straight from the registry.
    rendered = helm("template", "rel", f"{url}/web", "--version", "1.2.3+build.7",
                    "--plain-http", home=home)
    assert 'chartVersion: "1.2.3+build.7"' in rendered

    # Packaging is deterministic: the same folder pushes the same layer.
    again = json.loads(ocigitops("push", "chart", str(chart), f"{url}2", "-o",
                                 "json").stdout)
    m2 = _manifest(embedded_registry, "charts2/web", "1.2.3_build.7")
    assert m2["layers"] == m["layers"] and again["name"] == "web"

    # An archive (helm's own package) is taken as is.
    pkg = tmp_path / "pkg"
    helm("package", str(chart), "-d", str(pkg), home=home)
    (helm_tgz,) = pkg.glob("*.tgz")
    ocigitops("push", "chart", str(helm_tgz), f"{url}3")
    m3 = _manifest(embedded_registry, "charts3/web", "1.2.3_build.7")
    assert m3["layers"][0]["digest"] == "sha256:" + hashlib.sha256(
        helm_tgz.read_bytes()).hexdigest()


def test_push_chart_refuses_bad_input(embedded_registry: Registry, tmp_path: Path) -> None:
    url = f"oci://{embedded_registry.host}/charts"
    bad = make_chart(tmp_path / "bad", "bad", "not-a-version")
    one_error(cli("push", "chart", str(bad), url), "not a semantic version")
    tagged = make_chart(tmp_path / "ok", "ok", "1.0.0")
    one_error(cli("push", "chart", str(tagged), f"{url}:v1"), "takes a repository")
    (tagged / "templates" / "link.yaml").symlink_to("/etc/passwd")
    one_error(cli("push", "chart", str(tagged), url), "symbolic link")


class Env:
    """The HelmChart reconciler with the real registry client and the real cache."""

    def __init__(self, tmp: Path, reg: Registry) -> None:
        self.kube = MemKube()
        self.cache = ArtifactCache(tmp / "cache")
        self.ctx = hcsrc.HelmChartContext(kube=self.kube,  # type: ignore[arg-type]
                                          cache=self.cache, sources=SOURCES,
                                          served=frozenset(SOURCES))
        self.kube.put({"apiVersion": API_VERSION, "kind": "HelmRepository",
                       "metadata": {"name": "oci", "namespace": NS, "generation": 1},
                       "spec": {"url": f"oci://{reg.host}/charts", "type": "oci",
                                "insecure": True}})

    def chart(self, obj: dict[str, Any]) -> Outcome:
        out = asyncio.run(hcsrc.reconcile(obj, self.ctx))
        typed_status(hcsrc.RECONCILER.status_type, out.status)
        obj["status"] = out.status
        return out


def _chart_obj(name: str, version: str, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "HelmChart",
            "metadata": {"name": name, "namespace": NS, "generation": generation},
            "spec": {"chart": name, "version": version, "interval": "1m",
                     "sourceRef": {"kind": "HelmRepository", "name": "oci"}, **spec}}


def _cond(out: Outcome, ctype: str) -> dict[str, Any]:
    return next((c for c in out.status.get("conditions", []) if c["type"] == ctype), {})


def test_helm_push_read_by_helm_chart(embedded_registry: Registry, tmp_path: Path) -> None:
    home = tmp_path / "helm"
    pkg = tmp_path / "pkg"
    for v in ("0.1.0", "0.2.0", "1.0.0-rc.1"):
        helm("package", str(make_chart(tmp_path / "src" / v, "api", v)), "-d", str(pkg),
             home=home)
        helm("push", str(pkg / f"api-{v}.tgz"), f"oci://{embedded_registry.host}/charts",
             "--plain-http", home=home)
    env = Env(tmp_path, embedded_registry)
    out = env.chart(_chart_obj("api", "0.x"))
    assert _cond(out, "Ready")["status"] == "True", out.status
    art = out.status["artifact"]
    assert art["revision"] == "0.2.0"
    assert art["digest"] == "sha256:" + hashlib.sha256(
        (pkg / "api-0.2.0.tgz").read_bytes()).hexdigest()  # helm's bytes, as pushed
    assert out.status["observedSourceArtifactRevision"].startswith("0.2.0@sha256:")
    # An exact prerelease version is pulled by its tag; values files repackage it.
    out = env.chart(_chart_obj("api", "1.0.0-rc.1", valuesFiles=["values.yaml"]))
    assert out.status["artifact"]["revision"] == "1.0.0-rc.1+1", out.status
    assert out.status["observedValuesFiles"] == ["values.yaml"]


def test_signed_chart_verifies(embedded_registry: Registry, tmp_path: Path) -> None:
    pair = generate_key_pair(b"pw", scrypt_n=1 << 12)
    key, pub = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    key.write_bytes(pair.private_pem)
    pub.write_bytes(pair.public_pem)
    url = f"oci://{embedded_registry.host}/charts"
    signed = make_chart(tmp_path / "s", "app", "1.0.0")
    out = ocigitops("push", "chart", str(signed), url, "--sign", "--key", str(key), env=ENV)
    digest_url = out.stdout.strip()
    assert "signed sha256:" in out.stderr
    ok = cli("verify", "artifact", f"{url}/app:1.0.0", "--key", str(pub), "-o", "json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    verdict = json.loads(ok.stdout)
    assert verdict["verified"] is True
    assert digest_url == f"{url}/app@{verdict['digest']}"  # the pushed digest verified
    unsigned = make_chart(tmp_path / "u", "app", "1.1.0")
    ocigitops("push", "chart", str(unsigned), url)
    no = cli("verify", "artifact", f"{url}/app:1.1.0", "--key", str(pub))
    assert no.returncode == 1, no.stdout + no.stderr

    # The HelmChart with spec.verify: the signed version passes, the unsigned is refused
    # (SourceVerified=False) and the last chart is kept.
    env = Env(tmp_path, embedded_registry)
    env.kube.secret(NS, "cosign-pub", {"cosign.pub": pair.public_pem})
    verify = {"provider": "cosign", "secretRef": {"name": "cosign-pub"}}
    obj = _chart_obj("app", "1.0.0", verify=verify)
    out = env.chart(obj)
    assert _cond(out, "SourceVerified")["status"] == "True", out.status
    assert _cond(out, "Ready")["status"] == "True"
    first = out.status["artifact"]
    obj = _chart_obj("app", "1.1.0", generation=2, verify=verify)
    obj["status"] = out.status
    out = env.chart(obj)
    assert _cond(out, "SourceVerified")["status"] == "False", out.status
    assert _cond(out, "Ready")["reason"] == "VerificationError"
    assert out.status["artifact"] == first
