"""The attestation gate on a real kube-apiserver (issue 13, deploy time): an OCIRepository
whose ``spec.verify`` policy requires an attestation refuses a revision that fails it,
exactly like a bad signature, and nothing downstream changes.

Real pieces: the dev cluster's kube-apiserver with our CRDs, the controller as a process
(one per module, the shared fixture), the embedded registry on 127.0.0.1, artifacts pushed
and signed with a cosign key, and attestations made by the real ``ocigitops attest artifact``
command (a trivy-like config-scan report, as ``scan --attest`` will publish).

1. a signed revision whose scan has a CRITICAL finding: ``SourceVerified=False`` naming the
   requirement and its failed condition, Ready=False, no artifact, the Kustomization applies
   nothing;
2. a fixed revision with a clean scan: verified (signature and attestation), stored, applied;
3. a later revision whose clean scan is older than ``maxAge``: refused; the last good
   artifact stays and the cluster keeps it;
4. a condition that does not compile: Stalled with the position, no retry; the Flux form
   with attestations is refused by the API server itself.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.kube import KubeError
from ocigitops.verifier.keys import generate_key_pair
from tests.helpers.cli import ocigitops
from tests.helpers.kube import (
    KS,
    OCI,
    ControllerProcess,
    Kube,
    apply_kustomization,
    condition,
    configmap_data,
    status_of,
    wait_applied,
    wait_source_ready,
)
from tests.helpers.publish import configmap, manifest_tree, publish
from tests.helpers.registries import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

TRIVY = "https://ocigitops.dev/attestations/trivy-config/v1"
NO_CRITICAL = ("!predicate.Results.exists(r, has(r.Misconfigurations) && "
               "r.Misconfigurations.exists(m, m.Severity == 'CRITICAL'))")
WAIT = 60.0


class CI:
    """What a pipeline holds: a cosign key pair (password ``pw``); it pushes, signs and
    attests with it."""

    def __init__(self, tmp: Path, registry: Registry, repo: str) -> None:
        self.tmp, self.registry, self.repo = tmp, registry, repo
        self.host = registry.host
        self.pair = generate_key_pair(b"pw", scrypt_n=1 << 12)
        self.key = tmp / "cosign.key"
        self.key.write_bytes(self.pair.private_pem)

    def release(self, label: str) -> str:
        """Push and sign a one-ConfigMap revision as ``latest``; its revision."""
        tree = manifest_tree(self.tmp, label, configmap(f"cm-{label}", {"v": label}))
        return publish(self.host, self.repo, tree, "latest", key_pem=self.pair.private_pem)

    def attest_scan(self, revision: str, *severities: str,
                    age: timedelta = timedelta(minutes=2)) -> None:
        """``ocigitops attest artifact`` a config-scan report about ``revision``'s digest."""
        created = (datetime.now(UTC) - age).replace(microsecond=0)
        report = {"SchemaVersion": 2, "ArtifactName": "deploy",
                  "CreatedAt": created.isoformat().replace("+00:00", "Z"),
                  "Results": [{"Target": "cm.yaml", "Class": "config", "Misconfigurations": [
                      {"ID": f"KSV{i:03d}", "Severity": s, "Status": "FAIL"}
                      for i, s in enumerate(severities)]}]}
        path = self.tmp / f"scan-{revision.partition('@')[2][7:19]}-{len(severities)}.json"
        path.write_text(json.dumps(report))
        out = ocigitops("attest", "artifact",
                        f"oci://{self.host}/{self.repo}@{revision.partition('@')[2]}",
                        "--key", str(self.key), "--predicate", str(path), "--type", TRIVY,
                        *self.registry.cli_flags(), "-o", "json",
                        env={"COSIGN_PASSWORD": "pw"})
        assert json.loads(out.stdout)["predicateType"] == TRIVY, out.stdout


def _source(ns: Kube, name: str, host: str, repo: str,
            **requirement: Any) -> None:
    req: dict[str, Any] = {"name": "no-critical", "predicateType": TRIVY,
                           "authorities": ["release-key"], "maxAge": "1h",
                           "conditions": [NO_CRITICAL], **requirement}
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": name, "namespace": ns.namespace},
              "spec": {"url": f"oci://{host}/{repo}", "insecure": True, "interval": "5s",
                       "ref": {"tag": "latest"}, "verify": {
                           "authorities": [{"name": "release-key", "cosign": {
                               "secretRef": {"name": "cosign-pub"}}}],
                           "attestations": [req]}}})


def _sv(ns: Kube, name: str) -> dict[str, Any]:
    return condition(ns.get(API_VERSION, OCI, name), "SourceVerified")


def _refused(ns: Kube, name: str, revision: str) -> dict[str, Any]:
    """Wait until ``revision`` was verified and refused; its SourceVerified condition."""
    digest = revision.partition("@")[2]
    ns.wait(f"{revision} refused", lambda: (
        _sv(ns, name).get("status") == "False"
        and (status_of(ns, OCI, name).get("verification") or {}).get("digest") == digest),
        WAIT)
    return _sv(ns, name)


def test_attestation_gate(ns: Kube, controller: ControllerProcess,
                          embedded_registry: Registry, tmp_path: Path) -> None:
    started = time.monotonic()
    ci = CI(tmp_path, embedded_registry, f"gate/{ns.namespace}")
    ns.apply({"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "cosign-pub", "namespace": ns.namespace},
              "stringData": {"cosign.pub": ci.pair.public_pem.decode()}})

    # 1. signed, but its scan has a CRITICAL finding: refused, nothing applied.
    bad = ci.release("bad")
    ci.attest_scan(bad, "LOW", "CRITICAL")
    _source(ns, "app", ci.host, ci.repo)
    apply_kustomization(ns, "app", "app", interval="5s")
    sv = _refused(ns, "app", bad)
    assert sv["reason"] == "VerificationError", sv
    assert sv["message"].startswith(f"verification of revision {bad} failed: attestation "
                                    "no-critical: "), sv
    assert f'condition "{NO_CRITICAL}" is false' in sv["message"], sv
    src = ns.get(API_VERSION, OCI, "app") or {}
    ready = condition(src, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "VerificationError")
    assert condition(src, "Stalled") == {}  # a new revision or attestation may fix it
    assert "artifact" not in src["status"]
    (auth,) = src["status"]["verification"]["authorities"]
    (att,) = src["status"]["verification"]["attestations"]
    assert auth["passed"] and auth["signer"].startswith("key sha256:")
    assert att == {"name": "no-critical", "predicateType": TRIVY, "passed": False,
                   "reason": att["reason"], "signer": auth["signer"]}
    assert NO_CRITICAL in att["reason"]
    time.sleep(3)  # the Kustomization had time to act, and did not
    assert configmap_data(ns, "cm-bad") is None
    ks = status_of(ns, KS, "app")
    assert "lastAppliedRevision" not in ks, ks
    assert condition(ns.get(API_VERSION, KS, "app"), "Ready").get("status") != "True"

    # 2. the fixed revision, clean scan: verified, stored, applied.
    good = ci.release("good")
    ci.attest_scan(good, "LOW", "MEDIUM")
    wait_source_ready(ns, "app", good)
    sv = _sv(ns, "app")
    assert (sv["status"], sv["reason"]) == ("True", "Succeeded")
    assert sv["message"].startswith(f"verified signature of revision {good} by release-key ")
    assert sv["message"].endswith(" and attestations no-critical"), sv
    (att,) = status_of(ns, OCI, "app")["verification"]["attestations"]
    assert att["passed"] and "1 condition passed" in att["reason"]
    wait_applied(ns, "app", good)
    assert configmap_data(ns, "cm-good") == {"v": "good"}

    # 3. a newer revision whose (clean) scan is older than maxAge: refused; the last good
    # artifact stays and so does the cluster.
    stale = ci.release("stale")
    ci.attest_scan(stale, "LOW", age=timedelta(hours=3))
    sv = _refused(ns, "app", stale)
    assert "older than maxAge 1h" in sv["message"] and "attestation no-critical:" in sv[
        "message"], sv
    assert status_of(ns, OCI, "app")["artifact"]["revision"] == good
    time.sleep(3)
    assert configmap_data(ns, "cm-stale") is None
    assert configmap_data(ns, "cm-good") == {"v": "good"}
    assert status_of(ns, KS, "app")["lastAppliedRevision"] == good
    reasons = {e.get("reason") for e in ns.list("v1", "Event")}
    assert {"VerificationError", "NewArtifact"} <= reasons, reasons
    print(f"\nattestation gate flow took {time.monotonic() - started:.1f}s")


def test_a_condition_that_does_not_compile_stalls(ns: Kube, controller: ControllerProcess,
                                                  embedded_registry: Registry) -> None:
    host = embedded_registry.host
    _source(ns, "broken", host, f"gate/{ns.namespace}",
            conditions=["predicate.Results.size() > 0 &&", NO_CRITICAL])
    ns.wait("broken Stalled", lambda: condition(ns.get(API_VERSION, OCI, "broken"),
                                                "Stalled").get("status") == "True", WAIT)
    src = ns.get(API_VERSION, OCI, "broken") or {}
    stalled, ready = condition(src, "Stalled"), condition(src, "Ready")
    assert stalled["reason"] == ready["reason"] == "InvalidSpec"
    assert ready["status"] == "False" and condition(src, "Reconciling") == {}
    assert ready["message"].startswith("spec.verify: attestation 'no-critical' condition 1: "
                                       "CEL does not compile at line 1, column "), ready
    assert condition(src, "SourceVerified")["status"] == "False"
    assert src["status"]["observedGeneration"] == src["metadata"]["generation"]

    # An edit fixes it: the same object reconciles again (the registry has no such
    # repository, so it now fails to fetch, retried: no longer Stalled).
    _source(ns, "broken", host, f"gate/{ns.namespace}", conditions=[NO_CRITICAL])
    ns.wait("broken no longer Stalled", lambda: (
        condition(ns.get(API_VERSION, OCI, "broken"), "Stalled") == {}
        and condition(ns.get(API_VERSION, OCI, "broken"), "Ready").get("reason")
        == "OCIArtifactPullFailed"), WAIT)

    # The Flux form has no authorities to name: the API server refuses it outright.
    with pytest.raises(KubeError) as info:
        ns.apply({"apiVersion": API_VERSION, "kind": OCI,
                  "metadata": {"name": "flux-form", "namespace": ns.namespace},
                  "spec": {"url": f"oci://{host}/gate/x", "interval": "5m", "verify": {
                      "provider": "cosign", "secretRef": {"name": "cosign-pub"},
                      "attestations": [{"name": "a", "predicateType": TRIVY,
                                        "authorities": ["cosign"]}]}}})
    assert info.value.status == 422, info.value
    # So does a maxAge that is not a duration.
    with pytest.raises(KubeError) as info:
        _source(ns, "bad-age", host, "gate/x", maxAge="7d")
    assert info.value.status == 422 and "maxAge" in str(info.value), info.value


NO_HIGH = ("!predicate.Results.exists(r, has(r.Misconfigurations) && "
           "r.Misconfigurations.exists(m, m.Severity in ['HIGH', 'CRITICAL']))")


def _deployment(privileged: bool) -> dict[str, Any]:
    """A Deployment trivy finds nothing HIGH in, unless it is ``privileged`` (KSV-0017)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                             "runAsGroup": 10001,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [{
                             "name": "web", "image": "registry.example/web:1.0",
                             "securityContext": {
                                 "privileged": privileged, "allowPrivilegeEscalation": False,
                                 "readOnlyRootFilesystem": True,
                                 "capabilities": {"drop": ["ALL"]}},
                             "resources": {"limits": {"cpu": "100m", "memory": "64Mi"},
                                           "requests": {"cpu": "50m", "memory": "32Mi"}}}]}}}}


def test_ci_to_cluster_scan_gate(ns: Kube, controller: ControllerProcess,
                                 embedded_registry: Registry, tmp_path: Path) -> None:
    """The whole flow with the real commands a pipeline runs: ``push artifact --sign``,
    ``scan oci://... --attest --exit-code 1`` (the real trivy), and the controller; a
    privileged Deployment is refused, the fixed one is applied."""
    started = time.monotonic()
    ci = CI(tmp_path, embedded_registry, f"scan-gate/{ns.namespace}")
    flags = [*embedded_registry.cli_flags()]
    env = {"COSIGN_PASSWORD": "pw"}
    ns.apply({"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "cosign-pub", "namespace": ns.namespace},
              "stringData": {"cosign.pub": ci.pair.public_pem.decode()}})

    def pipeline(label: str, privileged: bool, want_exit: int) -> str:
        tree = manifest_tree(tmp_path, label, _deployment(privileged))
        url = f"oci://{ci.host}/{ci.repo}:latest"
        pushed = json.loads(ocigitops("push", "artifact", url, "--path", str(tree), "--sign",
                                      "--key", str(ci.key), "--source",
                                      "https://github.com/acme/web", "--revision",
                                      f"main@sha1:{label.encode().hex():0<40}", "-o", "json",
                                      *flags, env=env).stdout)
        pinned = f"oci://{ci.host}/{ci.repo}@{pushed['digest']}"
        scan = ocigitops("scan", pinned, "--severity", "HIGH,CRITICAL", "--exit-code", "1",
                         "--attest", "--key", str(ci.key), *flags, env=env, check=False,
                         timeout=300)
        assert scan.returncode == want_exit, scan.stdout + scan.stderr
        assert "Traceback" not in scan.stderr
        return f"latest@{pushed['digest']}"

    bad = pipeline("privileged", True, 1)  # the scan fails the job, and attests the failure
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": "web", "namespace": ns.namespace},
              "spec": {"url": f"oci://{ci.host}/{ci.repo}", "insecure": True,
                       "interval": "5s", "ref": {"tag": "latest"}, "verify": {
                           "authorities": [{"name": "release-key", "cosign": {
                               "secretRef": {"name": "cosign-pub"}}}],
                           "attestations": [{"name": "no-high-misconfig",
                                             "predicateType": TRIVY,
                                             "authorities": ["release-key"], "maxAge": "1h",
                                             "conditions": [
                                                 NO_HIGH,
                                                 # the report names the artifact, not a
                                                 # temp directory of the CI machine
                                                 "predicate.ArtifactName.startsWith("
                                                 f"'oci://{ci.host}/{ci.repo}@sha256:')"]}]}}})
    apply_kustomization(ns, "web", "web", interval="5s")
    sv = _refused(ns, "web", bad)
    assert "attestation no-high-misconfig:" in sv["message"] and NO_HIGH in sv["message"], sv
    time.sleep(3)
    assert ns.get("apps/v1", "Deployment", "web") is None

    good = pipeline("fixed", False, 0)
    wait_source_ready(ns, "web", good)
    wait_applied(ns, "web", good)
    dep = ns.get("apps/v1", "Deployment", "web") or {}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["privileged"] is False
    print(f"\nCI-to-cluster scan gate flow took {time.monotonic() - started:.1f}s")
