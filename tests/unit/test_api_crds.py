"""API types of ocigitops.dev/v1, the generated CRDs, and the deploy/ manifests."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ocigitops.puller import crdgen
from ocigitops.puller.api import (
    ValidationError,
    format_duration,
    inventory_id,
    parse_duration,
    parse_inventory_id,
    parse_kustomization,
    parse_oci_repository,
    to_dict,
)
from ocigitops.puller.api.ocirepository import OCIRepositorySpec
from ocigitops.puller.api.schema import from_dict
from ocigitops.puller.api.verification import build_signature_policy, referenced_secrets
from ocigitops.verifier.errors import PolicyError
from ocigitops.verifier.policy import CosignKeyAuthority, CosignKeylessAuthority, NotationAuthority
from tests.helpers.paths import DEPLOY

pytestmark = pytest.mark.unit


# -- helpers -------------------------------------------------------------------------------

def oci(spec: dict[str, Any], **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "ocigitops.dev/v1", "kind": "OCIRepository",
                           "metadata": {"name": "app", "namespace": "team-a"}, "spec": spec}
    if status:
        obj["status"] = status
    return obj


def ks(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "ocigitops.dev/v1", "kind": "Kustomization",
            "metadata": {"name": "app", "namespace": "team-a"}, "spec": spec}


BASE_OCI = {"url": "oci://ghcr.io/acme/app", "interval": "5m"}
BASE_KS = {"sourceRef": {"kind": "OCIRepository", "name": "app"}, "interval": "10m",
           "prune": True}


def errors_of(fn: Any, obj: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        fn(obj)
    return str(info.value)


def crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema node at a dotted path; ``[]`` steps into array items."""
    node = schema
    for part in path.split("."):
        items = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if items:
            assert node["type"] == "array", path
            node = node["items"]
    return node


# -- committed files -----------------------------------------------------------------------

def test_committed_crds_are_up_to_date(tmp_path: Path) -> None:
    written = crdgen.write_crds(tmp_path)
    # Every kind's CRD, and each is listed in deploy/kustomization.yaml (applied by deploy).
    assert sorted(p.name for p in written) == sorted(crdgen.crds())
    assert {"kustomizations.yaml", "ocirepositories.yaml", "gitrepositories.yaml"} <= {
        p.name for p in written}
    listed = (DEPLOY / "kustomization.yaml").read_text()
    assert all(f"crds/{p.name}" in listed for p in written)
    for p in written:
        committed = DEPLOY / "crds" / p.name
        assert committed.read_bytes() == p.read_bytes(), \
            f"{committed} is stale: run python -m ocigitops.puller.crdgen"
    assert crdgen.stale_crds(DEPLOY / "crds") == []
    assert crdgen.main(["--check", "--out-dir", str(DEPLOY / "crds")]) == 0
    for name, crd in crdgen.crds().items():
        assert yaml.safe_load((DEPLOY / "crds" / name).read_text()) == crd


def test_generation_is_deterministic_and_check_detects_drift(tmp_path: Path) -> None:
    assert crdgen.main(["--check", "--out-dir", str(tmp_path)]) == 1  # missing
    crdgen.write_crds(tmp_path)
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    crdgen.write_crds(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first
    assert crdgen.main(["--check", "--out-dir", str(tmp_path)]) == 0
    (tmp_path / "kustomizations.yaml").write_text("changed\n")
    assert crdgen.main(["--check", "--out-dir", str(tmp_path)]) == 1


# -- CRD structure -------------------------------------------------------------------------

@pytest.mark.parametrize(("crd", "plural", "kind", "short", "revision"), [
    (crdgen.oci_repository_crd(), "ocirepositories", "OCIRepository", "ocirepo",
     ".status.artifact.revision"),
    (crdgen.kustomization_crd(), "kustomizations", "Kustomization", "ks",
     ".status.lastAppliedRevision"),
    (crdgen.helm_release_crd(), "helmreleases", "HelmRelease", "hr",
     ".status.lastAttemptedRevision"),
])
def test_crd_metadata(crd: dict[str, Any], plural: str, kind: str, short: str,
                      revision: str) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.ocigitops.dev"
    spec = crd["spec"]
    assert spec["group"] == "ocigitops.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind and spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"] == [short]
    assert spec["names"]["categories"] == ["ocigitops"]
    (version,) = spec["versions"]
    assert version["name"] == "v1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    cols = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(cols) == ["Ready", "Status", "Revision", "Age"]
    assert cols["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert cols["Status"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].message'
    assert cols["Revision"]["jsonPath"] == revision
    assert cols["Age"] == {"name": "Age", "type": "date",
                           "jsonPath": ".metadata.creationTimestamp"}
    root = crd_schema(crd)
    assert root["properties"]["status"]["default"] == {"observedGeneration": -1}


OCI_FIELDS = {
    "spec.url": "string", "spec.ref": "object", "spec.ref.digest": "string",
    "spec.ref.semver": "string", "spec.ref.semverFilter": "string", "spec.ref.tag": "string",
    "spec.layerSelector.mediaType": "string", "spec.layerSelector.operation": "string",
    "spec.provider": "string", "spec.secretRef.name": "string",
    "spec.serviceAccountName": "string", "spec.certSecretRef.name": "string",
    "spec.proxySecretRef.name": "string", "spec.insecure": "boolean", "spec.ignore": "string",
    "spec.interval": "string", "spec.timeout": "string", "spec.suspend": "boolean",
    "spec.verify.provider": "string", "spec.verify.secretRef.name": "string",
    "spec.verify.matchOIDCIdentity[].issuer": "string",
    "spec.verify.matchOIDCIdentity[].subject": "string",
    "spec.verify.trustedRootSecretRef.name": "string",
    "spec.verify.authorities[].name": "string",
    "spec.verify.authorities[].cosign.secretRef.name": "string",
    "spec.verify.authorities[].cosign.annotations": "object",
    "spec.verify.authorities[].cosign.tlog": "boolean",
    "spec.verify.authorities[].keyless.identities[].issuer": "string",
    "spec.verify.authorities[].keyless.identities[].issuerRegExp": "string",
    "spec.verify.authorities[].keyless.identities[].subject": "string",
    "spec.verify.authorities[].keyless.identities[].subjectRegExp": "string",
    "spec.verify.authorities[].keyless.identities[].github.repository": "string",
    "spec.verify.authorities[].keyless.identities[].github.workflow": "string",
    "spec.verify.authorities[].keyless.trustedRootSecretRef.name": "string",
    "spec.verify.authorities[].notation.secretRef.name": "string",
    "status.artifact.digest": "string", "status.artifact.path": "string",
    "status.artifact.url": "string", "status.artifact.revision": "string",
    "status.artifact.lastUpdateTime": "string", "status.artifact.size": "integer",
    "status.artifact.metadata": "object", "status.conditions": "array",
    "status.observedIgnore": "string", "status.observedLayerSelector.mediaType": "string",
    "status.observedGeneration": "integer", "status.lastHandledReconcileAt": "string",
    "status.verification.digest": "string",
    "status.verification.authorities[].name": "string",
    "status.verification.authorities[].passed": "boolean",
    "status.verification.authorities[].reason": "string",
    "status.verification.authorities[].signer": "string",
}

KS_FIELDS = {
    "spec.sourceRef.kind": "string", "spec.sourceRef.name": "string",
    "spec.sourceRef.namespace": "string", "spec.sourceRef.apiVersion": "string",
    "spec.path": "string", "spec.interval": "string", "spec.retryInterval": "string",
    "spec.timeout": "string", "spec.prune": "boolean", "spec.wait": "boolean",
    "spec.healthChecks[].apiVersion": "string", "spec.healthChecks[].kind": "string",
    "spec.healthChecks[].name": "string", "spec.healthChecks[].namespace": "string",
    "spec.dependsOn[].name": "string", "spec.dependsOn[].namespace": "string",
    "spec.targetNamespace": "string", "spec.namePrefix": "string",
    "spec.nameSuffix": "string", "spec.commonMetadata.labels": "object",
    "spec.commonMetadata.annotations": "object", "spec.images[].name": "string",
    "spec.images[].newName": "string", "spec.images[].newTag": "string",
    "spec.images[].digest": "string", "spec.patches[].patch": "string",
    "spec.patches[].target.group": "string", "spec.patches[].target.version": "string",
    "spec.patches[].target.kind": "string", "spec.patches[].target.name": "string",
    "spec.patches[].target.namespace": "string",
    "spec.patches[].target.labelSelector": "string",
    "spec.patches[].target.annotationSelector": "string", "spec.components": "array",
    "spec.postBuild.substitute": "object", "spec.postBuild.substituteFrom[].kind": "string",
    "spec.postBuild.substituteFrom[].name": "string",
    "spec.postBuild.substituteFrom[].optional": "boolean",
    "spec.serviceAccountName": "string", "spec.suspend": "boolean", "spec.force": "boolean",
    "spec.deletionPolicy": "string", "status.conditions": "array",
    "status.lastAppliedRevision": "string", "status.lastAttemptedRevision": "string",
    "status.observedGeneration": "integer", "status.lastHandledReconcileAt": "string",
    "status.inventory.entries[].id": "string", "status.inventory.entries[].v": "string",
    "status.history[].digest": "string", "status.history[].firstReconciled": "string",
    "status.history[].lastReconciled": "string",
    "status.history[].totalReconciliations": "integer",
    "status.history[].lastReconciledStatus": "string",
    "status.history[].lastReconciledDuration": "string", "status.history[].metadata": "object",
}


@pytest.mark.parametrize(("crd", "fields"), [
    (crdgen.oci_repository_crd(), OCI_FIELDS), (crdgen.kustomization_crd(), KS_FIELDS)])
def test_every_field_has_its_type(crd: dict[str, Any], fields: dict[str, str]) -> None:
    root = crd_schema(crd)
    for path, typ in fields.items():
        assert at(root, path)["type"] == typ, path


def test_oci_repository_validations() -> None:
    root = crd_schema(crdgen.oci_repository_crd())
    spec = root["properties"]["spec"]
    assert sorted(spec["required"]) == ["interval", "url"]
    assert at(root, "spec.url")["pattern"] == "^oci://.*$"
    assert at(root, "spec.provider")["enum"] == ["generic", "aws", "azure", "gcp"]
    assert at(root, "spec.provider")["default"] == "generic"
    assert at(root, "spec.timeout")["default"] == "60s"
    assert at(root, "spec.interval")["pattern"] == r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
    assert at(root, "spec.layerSelector.operation")["enum"] == ["extract", "copy"]
    assert at(root, "spec.verify.provider")["enum"] == ["cosign", "notation"]
    rule = at(root, "spec.verify.rule")
    assert rule["x-kubernetes-int-or-string"] is True
    assert rule["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    auths = at(root, "spec.verify.authorities")
    assert auths["x-kubernetes-list-type"] == "map"
    assert auths["x-kubernetes-list-map-keys"] == ["name"]
    assert "name" in auths["items"]["required"]
    assert auths["items"]["oneOf"] == [{"required": ["cosign"]}, {"required": ["keyless"]},
                                       {"required": ["notation"]}]
    github = at(root, "spec.verify.authorities[].keyless.identities[].github")
    assert sorted(github["properties"]) == ["ref", "repository", "sha", "trigger", "workflow"]
    cond = at(root, "status.conditions[]")
    assert sorted(cond["required"]) == ["lastTransitionTime", "message", "reason", "status",
                                        "type"]
    assert cond["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_kustomization_validations() -> None:
    root = crd_schema(crdgen.kustomization_crd())
    assert sorted(root["properties"]["spec"]["required"]) == ["interval", "prune",
                                                              "sourceRef"]
    assert at(root, "spec.sourceRef.kind")["enum"] == ["OCIRepository", "GitRepository"]
    assert at(root, "spec.deletionPolicy")["enum"] == ["MirrorPrune", "Delete",
                                                      "WaitForTermination", "Orphan"]
    assert at(root, "spec.postBuild.substituteFrom[].kind")["enum"] == ["ConfigMap",
                                                                       "Secret"]
    assert at(root, "spec.postBuild.substitute")["additionalProperties"] == {"type": "string"}
    assert at(root, "spec.force")["default"] is False
    assert at(root, "spec.components")["items"] == {"type": "string"}
    assert at(root, "status.history")["maxItems"] == 5
    assert sorted(at(root, "status.inventory")["required"]) == ["entries"]


def _structural(node: dict[str, Any], path: str, junctor: bool = False) -> None:
    """Check the API server's structural-schema rules on one node, recursively."""
    subs = [(f"{path}.{j}[{i}]", s) for j in ("allOf", "anyOf", "oneOf")
            for i, s in enumerate(node.get(j, []))]
    if "not" in node:
        subs.append((f"{path}.not", node["not"]))
    if junctor:
        for k in ("type", "description", "default", "additionalProperties", "nullable"):
            assert k not in node, f"{path}: {k} inside a junctor"
        for name, sub in node.get("properties", {}).items():
            _structural(sub, f"{path}.{name}", True)
        for p, sub in subs:
            _structural(sub, p, True)
        return
    if node.get("x-kubernetes-int-or-string"):
        assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        return
    assert "type" in node, f"{path} has no type"
    props = node.get("properties", {})
    for req in node.get("required", []):
        assert req in props, f"{path}: required {req} is not a property"
    for name, sub in props.items():
        _structural(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        _structural(node["additionalProperties"], f"{path}.additionalProperties")
    if node["type"] == "array":
        _structural(node["items"], f"{path}[]")
    if node.get("x-kubernetes-list-type") == "map":
        for key in node["x-kubernetes-list-map-keys"]:
            assert key in node["items"]["required"], path
    for p, sub in subs:
        _structural(sub, p, True)
        for j in _walk_junctor(sub):
            for name in j.get("required", []) + list(j.get("properties", {})):
                assert name in props, f"{p}: {name} is not a property of {path}"


def _walk_junctor(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for j in ("allOf", "anyOf", "oneOf"):
        for s in node.get(j, []):
            out.extend(_walk_junctor(s))
    if "not" in node:
        out.extend(_walk_junctor(node["not"]))
    return out


@pytest.mark.parametrize("crd", [crdgen.oci_repository_crd(), crdgen.kustomization_crd()])
def test_schemas_are_structural(crd: dict[str, Any]) -> None:
    """The rules the API server enforces on CRD schemas, checked offline."""
    root = crd_schema(crd)
    assert "x-kubernetes-preserve-unknown-fields" not in json.dumps(root)
    _structural(root, "")


# -- parsing -------------------------------------------------------------------------------

def test_parse_minimal_oci_repository_applies_defaults() -> None:
    repo = parse_oci_repository(oci(BASE_OCI))
    assert repo.metadata.name == "app" and repo.metadata.namespace == "team-a"
    assert repo.spec.ref.tag == "latest" and repo.spec.ref.kind == "tag"
    assert repo.spec.timeout == "60s" and repo.spec.timeout_seconds == 60
    assert repo.spec.provider == "generic"
    assert repo.spec.interval_seconds == 300
    assert not repo.spec.suspend and not repo.spec.insecure and repo.spec.verify is None
    assert repo.status.conditions == () and repo.ready is None


def test_ref_precedence() -> None:
    spec = {**BASE_OCI, "ref": {"tag": "v1", "digest": "sha256:" + "a" * 64}}
    ref = parse_oci_repository(oci(spec)).spec.ref
    assert ref.kind == "digest" and ref.tag == "v1"
    ref = parse_oci_repository(oci({**BASE_OCI, "ref": {"semver": ">=1.0.0",
                                                         "tag": "v1"}})).spec.ref
    assert ref.kind == "semver"
    assert parse_oci_repository(oci({**BASE_OCI, "ref": {}})).spec.ref.tag == "latest"


@pytest.mark.parametrize(("spec", "message"), [
    ({"interval": "5m"}, "spec.url: is required"),
    ({"url": "https://ghcr.io/acme/app", "interval": "5m"}, "spec.url: 'https://"),
    ({"url": "oci://ghcr.io/acme/app:v1", "interval": "5m"}, "must not contain a tag"),
    ({"url": "oci://ghcr.io", "interval": "5m"}, "oci://HOST/REPOSITORY"),
    ({"url": "oci://ghcr.io/acme/app"}, "spec.interval: is required"),
    ({**BASE_OCI, "interval": "5 minutes"}, "spec.interval: '5 minutes' does not match"),
    ({**BASE_OCI, "interval": "1d"}, "spec.interval: '1d' does not match"),
    ({**BASE_OCI, "timeout": "1h"}, "spec.timeout: '1h' does not match"),
    ({**BASE_OCI, "provider": "ibm"}, "spec.provider: 'ibm' is not one of generic, aws"),
    ({**BASE_OCI, "layerSelector": {"operation": "move"}},
     "spec.layerSelector.operation: 'move' is not one of extract, copy"),
    ({**BASE_OCI, "insecure": "yes"}, "spec.insecure: must be true or false"),
    ({**BASE_OCI, "secretRef": {}}, "spec.secretRef.name: is required"),
    ({**BASE_OCI, "refs": {}}, "spec.refs: unknown field"),
    ({**BASE_OCI, "ref": {"semver": "1.x", "semverFilter": "(["}},
     "spec.ref.semverFilter: '([' is not a valid regular expression"),
])
def test_invalid_oci_repository(spec: dict[str, Any], message: str) -> None:
    err = errors_of(parse_oci_repository, oci(spec))
    assert err.startswith("OCIRepository team-a/app is invalid: ")
    assert message in err


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        parse_oci_repository(oci({"provider": "ibm", "interval": "x"}))
    assert len(info.value.errors) == 3  # url missing, interval, provider
    with pytest.raises(ValidationError, match="spec: must be an object"):
        parse_oci_repository({"metadata": {"name": "x"}})
    with pytest.raises(ValidationError, match=r"metadata\.name: is required"):
        parse_oci_repository({"metadata": {}, "spec": BASE_OCI})


def test_invalid_status_does_not_block() -> None:
    repo = parse_oci_repository(oci(BASE_OCI, artifact={"revision": 1}))
    assert repo.status.artifact is None


def test_status_round_trip() -> None:
    status = {
        "observedGeneration": 3,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                        "message": "stored artifact", "observedGeneration": 3,
                        "lastTransitionTime": "2026-01-02T03:04:05Z"}],
        "artifact": {"digest": "sha256:" + "b" * 64, "path": "ocirepository/a.tar.gz",
                     "url": "cache://sha256/b", "revision": "latest@sha256:" + "c" * 64,
                     "lastUpdateTime": "2026-01-02T03:04:05Z", "size": 10,
                     "metadata": {"org.opencontainers.image.revision": "main@sha1:1"}},
        "verification": {"digest": "sha256:" + "c" * 64, "authorities": [
            {"name": "ci", "passed": True, "reason": "ok", "signer": "key sha256:x"}]},
    }
    repo = parse_oci_repository(oci(BASE_OCI, **status))
    assert repo.ready is not None and repo.ready.status == "True"
    assert repo.status.verification is not None
    assert repo.status.verification.authorities[0].passed
    assert to_dict(repo.status) == status
    again = parse_oci_repository(oci(to_dict(repo.spec), **to_dict(repo.status)))
    assert again == repo


def test_bad_condition_status_is_rejected_by_schema() -> None:
    from ocigitops.puller.api.meta import Condition

    with pytest.raises(ValidationError, match="'Maybe' is not one of True, False, Unknown"):
        from_dict(Condition, {"type": "Ready", "status": "Maybe", "reason": "X",
                              "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"})


# -- verify --------------------------------------------------------------------------------

KEYLESS_ID = {"issuer": "https://token.actions.githubusercontent.com",
              "subjectRegExp": "^https://github.com/acme/"}


@pytest.mark.parametrize("verify", [
    {"provider": "cosign", "secretRef": {"name": "keys"}},
    {"secretRef": {"name": "keys"}},
    {"provider": "cosign", "matchOIDCIdentity": [{"issuer": ".*", "subject": ".*"}]},
    {"provider": "notation", "secretRef": {"name": "tp"}},
    {"rule": "all", "authorities": [
        {"name": "ci", "cosign": {"secretRef": {"name": "keys"}, "tlog": True,
                                  "annotations": {"env": "prod"}}},
        {"name": "gha", "keyless": {"identities": [
            {**KEYLESS_ID, "github": {"repository": "acme/app", "ref": "refs/heads/main"}}],
            "trustedRootSecretRef": {"name": "root"}}},
        {"name": "notary", "notation": {"secretRef": {"name": "tp"}}}]},
    {"rule": 2, "authorities": [
        {"name": "a", "cosign": {"secretRef": {"name": "k1"}}},
        {"name": "b", "cosign": {"secretRef": {"name": "k2"}}}]},
    {"rule": "1", "authorities": [{"name": "a", "keyless": {"identities": [KEYLESS_ID]}}]},
])
def test_valid_verify(verify: dict[str, Any]) -> None:
    repo = parse_oci_repository(oci({**BASE_OCI, "verify": verify}))
    assert repo.spec.verify is not None
    assert repo.spec.verify.is_policy == ("authorities" in verify)


@pytest.mark.parametrize(("verify", "message"), [
    ({"provider": "cosign"}, "give secretRef (keys or a trust policy), matchOIDCIdentity"),
    ({"provider": "notation"}, "provider notation needs a secretRef"),
    ({"provider": "sigstore", "secretRef": {"name": "k"}},
     "spec.verify.provider: 'sigstore' is not one of cosign, notation"),
    ({"matchOIDCIdentity": [{"issuer": ".*"}]},
     "spec.verify.matchOIDCIdentity[0].subject: is required"),
    ({"matchOIDCIdentity": []}, "spec.verify.matchOIDCIdentity: must have at least 1"),
    ({"provider": "cosign", "authorities": [{"name": "a", "keyless": {"identities": [
        KEYLESS_ID]}}]}, "not both"),
    ({"rule": "all", "secretRef": {"name": "k"}}, "rule applies to authorities only"),
    ({"authorities": []}, "spec.verify.authorities: must have at least 1 item"),
    ({"authorities": [{"name": "a"}]},
     "spec.verify.authorities[0]: exactly one of cosign, keyless and notation"),
    ({"authorities": [{"name": "a", "cosign": {"secretRef": {"name": "k"}},
                       "notation": {"secretRef": {"name": "t"}}}]}, "exactly one of"),
    ({"authorities": [{"cosign": {"secretRef": {"name": "k"}}}]},
     "spec.verify.authorities[0].name: is required"),
    ({"authorities": [{"name": "a", "cosign": {"secretRef": {"name": "k"}}},
                      {"name": "a", "cosign": {"secretRef": {"name": "j"}}}]},
     "spec.verify.authorities[1]: duplicate name 'a'"),
    ({"authorities": [{"name": "a", "cosign": {}}]},
     "spec.verify.authorities[0].cosign.secretRef: is required"),
    ({"authorities": [{"name": "a", "keyless": {"identities": []}}]},
     "identities: must have at least 1 item"),
    ({"authorities": [{"name": "a", "keyless": {"identities": [
        {"issuer": "x", "issuerRegExp": "x", "subject": "s"}]}}]},
     "identities[0]: exactly one of issuer and issuerRegExp"),
    ({"authorities": [{"name": "a", "keyless": {"identities": [{"issuer": "x"}]}}]},
     "identities[0]: exactly one of subject and subjectRegExp"),
    ({"authorities": [{"name": "a", "keyless": {"identities": [
        {"issuer": "x", "subjectRegExp": "(["}]}}]},
     "identities[0].subjectRegExp: '([' is not a valid regular expression"),
    ({"authorities": [{"name": "a", "keyless": {"identities": [
        {"issuer": "x", "subject": "s", "github": {"branch": "main"}}]}}]},
     "github.branch: unknown field"),
    ({"rule": 3, "authorities": [{"name": "a", "cosign": {"secretRef": {"name": "k"}}}]},
     "spec.verify.rule: 3 cannot be met by 1 authorities"),
    ({"rule": "most", "authorities": [{"name": "a", "cosign": {"secretRef": {"name": "k"}}}]},
     "spec.verify.rule: 'most' does not match"),
    ({"rule": 0, "authorities": [{"name": "a", "cosign": {"secretRef": {"name": "k"}}}]},
     "spec.verify.rule: must be at least 1"),
    ({"rule": True, "authorities": [{"name": "a", "cosign": {"secretRef": {"name": "k"}}}]},
     "spec.verify.rule: must be an integer or a string"),
])
def test_invalid_verify(verify: dict[str, Any], message: str) -> None:
    assert message in errors_of(parse_oci_repository, oci({**BASE_OCI, "verify": verify}))


def test_constraints_are_in_the_crd() -> None:
    """The cross-field rules the parser reports are the ones the API server enforces."""
    from ocigitops.puller.api.ocirepository import OCIRepositoryVerification
    from ocigitops.puller.api.schema import schema_for

    schema = schema_for(OCIRepositoryVerification)
    crd_verify = at(crd_schema(crdgen.oci_repository_crd()), "spec.verify")
    assert crd_verify["allOf"] == schema["allOf"]
    assert len(schema["allOf"]) == len(OCIRepositoryVerification.__api_constraints__)


# -- verify -> verifier policy -------------------------------------------------------------

def _pub_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


TRUST_POLICY = json.dumps({"version": "1.0", "trustPolicies": [{
    "name": "all", "registryScopes": ["*"],
    "signatureVerification": {"level": "strict"},
    "trustStores": ["ca:acme"], "trustedIdentities": ["*"]}]}).encode()


def _verify(verify: dict[str, Any]) -> Any:
    v = parse_oci_repository(oci({**BASE_OCI, "verify": verify})).spec.verify
    assert v is not None
    return v


def test_policy_from_flux_form() -> None:
    secrets = {"keys": {"cosign.pub": _pub_pem(), "README": b"x"},
               "tp": {"trustpolicy.json": TRUST_POLICY, "ca.crt": _ca_pem()}}
    pol = build_signature_policy(_verify({"secretRef": {"name": "keys"}}), secrets)
    (auth,) = pol.authorities
    assert isinstance(auth, CosignKeyAuthority) and len(auth.keys) == 1
    pol = build_signature_policy(_verify({"provider": "cosign", "matchOIDCIdentity": [
        {"issuer": "^https://token", "subject": "acme"}]}), secrets)
    assert isinstance(pol.authorities[0], CosignKeylessAuthority)
    pol = build_signature_policy(_verify({"provider": "notation",
                                          "secretRef": {"name": "tp"}}), secrets)
    assert isinstance(pol.authorities[0], NotationAuthority)
    with pytest.raises(PolicyError, match="'missing' was not found"):
        build_signature_policy(_verify({"secretRef": {"name": "missing"}}), secrets)
    with pytest.raises(PolicyError, match="is empty"):
        build_signature_policy(_verify({"secretRef": {"name": "empty"}}), {"empty": {}})


def test_policy_from_policy_form() -> None:
    secrets = {"k1": {"a.pub": _pub_pem(), "b.pub": _pub_pem()},
               "tp": {"trustpolicy.json": TRUST_POLICY, "ca.pem": _ca_pem()}}
    verify = _verify({"rule": 2, "authorities": [
        {"name": "ci", "cosign": {"secretRef": {"name": "k1"},
                                  "annotations": {"env": "prod"}}},
        {"name": "gha", "keyless": {"identities": [
            {**KEYLESS_ID, "github": {"repository": "acme/app"}}]}},
        {"name": "notary", "notation": {"secretRef": {"name": "tp"}}}]})
    assert referenced_secrets(verify) == ["k1", "tp"]
    pol = build_signature_policy(verify, secrets)
    assert [a.name for a in pol.authorities] == ["ci", "gha", "notary"]
    ci, gha, notary = pol.authorities
    assert isinstance(ci, CosignKeyAuthority) and len(ci.keys) == 2
    assert dict(ci.annotations) == {"env": "prod"}
    assert isinstance(gha, CosignKeylessAuthority)
    assert gha.identities[0].github == {"repository": "acme/app"}
    assert isinstance(notary, NotationAuthority)
    assert pol.rule.kind == "at_least" and pol.rule.count == 2
    all_rule = _verify({"rule": "all", "authorities": [
        {"name": "ci", "cosign": {"secretRef": {"name": "k1"}}}]})
    assert build_signature_policy(all_rule, secrets).rule.kind == "all"
    with pytest.raises(PolicyError, match=r"holds no \*\.pub key"):
        build_signature_policy(all_rule, {"k1": {"x.txt": b"x"}})
    with pytest.raises(PolicyError, match=r"has no trusted_root\.json"):
        build_signature_policy(_verify({"authorities": [{"name": "a", "keyless": {
            "identities": [KEYLESS_ID], "trustedRootSecretRef": {"name": "root"}}}]}),
            {"root": {"other": b"{}"}})


# -- Kustomization -------------------------------------------------------------------------

def test_parse_full_kustomization() -> None:
    spec = {
        **BASE_KS, "path": "./deploy/prod", "retryInterval": "1m30s", "timeout": "3m",
        "wait": True, "healthChecks": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "web", "namespace": "prod"}],
        "dependsOn": [{"name": "infra", "namespace": "infra"}], "targetNamespace": "prod",
        "namePrefix": "p-", "nameSuffix": "-s",
        "commonMetadata": {"labels": {"team": "a"}, "annotations": {"x": "y"}},
        "images": [{"name": "web", "newName": "ghcr.io/acme/web", "newTag": "v2"}],
        "patches": [{"patch": "- op: replace\n  path: /spec/replicas\n  value: 3\n",
                     "target": {"kind": "Deployment", "labelSelector": "app=web",
                                "annotationSelector": "a=b"}}],
        "components": ["../components/monitoring"],
        "postBuild": {"substitute": {"cluster": "prod"},
                      "substituteFrom": [{"kind": "ConfigMap", "name": "vars"},
                                         {"kind": "Secret", "name": "sec", "optional": True}]},
        "serviceAccountName": "deployer", "suspend": False, "force": True,
        "deletionPolicy": "Orphan",
    }
    k = parse_kustomization(ks(spec))
    assert k.spec.retry_interval_seconds == 90 and k.spec.timeout_seconds == 180
    assert k.spec.patches[0].target is not None
    assert k.spec.patches[0].target.label_selector == "app=web"
    assert k.spec.post_build is not None
    assert k.spec.post_build.substitute_from[1].optional
    assert not k.spec.post_build.substitute_from[0].optional
    assert k.source_namespace == "team-a"
    assert to_dict(k.spec) == {**spec, "postBuild": {
        "substitute": {"cluster": "prod"},
        "substituteFrom": [{"kind": "ConfigMap", "name": "vars", "optional": False},
                           {"kind": "Secret", "name": "sec", "optional": True}],
        "substituteStrategy": "WithVariables"}}


def test_kustomization_defaults() -> None:
    k = parse_kustomization(ks(BASE_KS))
    assert k.spec.retry_interval_seconds == 600 and k.spec.timeout_seconds == 600
    assert not k.spec.force and not k.spec.wait and k.spec.deletion_policy is None


@pytest.mark.parametrize(("spec", "message"), [
    ({"sourceRef": {"kind": "OCIRepository", "name": "a"}, "interval": "1m"},
     "spec.prune: is required"),
    ({**BASE_KS, "sourceRef": {"kind": "Bucket", "name": "a"}},
     "spec.sourceRef.kind: 'Bucket' is not one of OCIRepository, GitRepository"),
    ({**BASE_KS, "deletionPolicy": "Keep"}, "spec.deletionPolicy: 'Keep' is not one of"),
    ({**BASE_KS, "retryInterval": "soon"}, "spec.retryInterval: 'soon' does not match"),
    ({**BASE_KS, "postBuild": {"substitute": {"a": 1}}},
     "spec.postBuild.substitute.a: must be a string"),
    ({**BASE_KS, "postBuild": {"substituteFrom": [{"kind": "Vault", "name": "x"}]}},
     "spec.postBuild.substituteFrom[0].kind: 'Vault' is not one of ConfigMap, Secret"),
    ({**BASE_KS, "patches": [{"target": {"kind": "Deployment"}}]},
     "spec.patches[0].patch: is required"),
    ({**BASE_KS, "patches": [{"patch": "x", "target": {"labels": "a=b"}}]},
     "spec.patches[0].target.labels: unknown field"),
    ({**BASE_KS, "targetNamespace": "x" * 64}, "at most 63 characters"),
    ({**BASE_KS, "healthChecks": [{"name": "web"}]}, "spec.healthChecks[0].kind: is required"),
])
def test_invalid_kustomization(spec: dict[str, Any], message: str) -> None:
    err = errors_of(parse_kustomization, ks(spec))
    assert err.startswith("Kustomization team-a/app is invalid: ")
    assert message in err


def test_kustomization_status() -> None:
    status: dict[str, Any] = {
        "observedGeneration": 2, "lastAppliedRevision": "latest@sha256:" + "a" * 64,
        "lastAttemptedRevision": "latest@sha256:" + "a" * 64,
        "inventory": {"entries": [{"id": "prod_web_apps_Deployment", "v": "v1"},
                                  {"id": "_prod__Namespace", "v": "v1"}]},
        "history": [{"digest": "sha256:" + "d" * 64,
                     "firstReconciled": "2026-01-01T00:00:00Z",
                     "lastReconciled": "2026-01-01T01:00:00Z",
                     "lastReconciledDuration": "2.5s", "lastReconciledStatus":
                     "ReconciliationSucceeded", "totalReconciliations": 7,
                     "metadata": {"revision": "latest@sha256:" + "a" * 64}}],
    }
    k = parse_kustomization({**ks(BASE_KS), "status": status})
    assert k.status.inventory is not None and len(k.status.inventory.entries) == 2
    assert k.status.history[0].total_reconciliations == 7
    assert to_dict(k.status, omit_empty=True) == status
    assert to_dict(k.status)["conditions"] == []
    too_long = {**status, "history": status["history"] * 6}
    assert parse_kustomization({**ks(BASE_KS), "status": too_long}).status.history == ()


def test_inventory_ids() -> None:
    assert inventory_id("prod", "web", "apps", "Deployment") == "prod_web_apps_Deployment"
    assert inventory_id("", "prod", "", "Namespace") == "_prod__Namespace"
    assert parse_inventory_id("_prod__Namespace") == ("", "prod", "", "Namespace")
    assert parse_inventory_id("prod_web_apps_Deployment") == ("prod", "web", "apps",
                                                              "Deployment")
    with pytest.raises(ValueError, match="inventory id"):
        parse_inventory_id("web")


# -- durations -----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("1m30s", 90), ("10m", 600), ("1h", 3600), ("1.5h", 5400), ("300ms", 0.3),
    ("1h2m3s", 3723), ("0", 0), ("0s", 0), ("2h45m", 9900), ("-1m", -60), ("500us", 5e-4),
    ("1µs", 1e-6), ("100ns", 1e-7), ("60s", 60),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1d", "m", "1m30", "1 m", ".s", "ms", "--1s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (90, "1m30s"), (3600, "1h0m0s"), (0.5, "500ms"), (1.5, "1.5s"), (45, "45s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_spec_dataclass_defaults_match_schema_defaults() -> None:
    spec = OCIRepositorySpec(url="oci://ghcr.io/acme/app", interval="1m")
    assert spec.timeout == "60s" and spec.provider == "generic" and spec.ref.tag == "latest"


# -- deploy/ -------------------------------------------------------------------------------

def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _deploy_objects() -> list[dict[str, Any]]:
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    objs: list[dict[str, Any]] = []
    for res in kust["resources"]:
        objs.extend(_docs(DEPLOY / res))
    return objs


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    # deploy/operator/ is a kustomization of its own (the operator, which installs the
    # controller from the distribution): never part of the controller's.
    on_disk = sorted(str(p.relative_to(DEPLOY)) for p in DEPLOY.glob("*/*.yaml")
                     if p.parent.name != "operator")
    assert sorted(kust["resources"]) == on_disk
    for obj in _deploy_objects():
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"]


def test_controller_deployment() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in _deploy_objects()}
    assert ("Namespace", "ocigitops-system") in objs
    sa = objs[("ServiceAccount", "ocigitops-controller")]
    assert sa["metadata"]["namespace"] == "ocigitops-system"
    dep = objs[("Deployment", "ocigitops-controller")]
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= \
        dep["spec"]["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == "ocigitops-controller"
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/ocigitops/ocigitops:v0.1.0"
    assert c["command"] + c["args"] == ["ocigitops", "controller", "run", "--leader-elect",
                                        "--metrics-addr=:8080", "--health-addr=:9440"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http-metrics": 8080, "healthz": 9440}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"]
    assert not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/tmp" in mounts


def test_rbac() -> None:
    objs = {(o["kind"], o["metadata"]["name"]): o for o in _deploy_objects()}
    role = objs[("ClusterRole", "ocigitops-controller")]
    grants = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
              for r in rule["resources"] for v in rule["verbs"]}
    for res in ("ocirepositories", "kustomizations"):
        assert ("ocigitops.dev", res, "watch") in grants
        assert ("ocigitops.dev", f"{res}/status", "patch") in grants
        assert ("ocigitops.dev", f"{res}/finalizers", "update") in grants
    assert ("", "events", "create") in grants
    assert ("coordination.k8s.io", "leases", "update") in grants
    assert ("", "secrets", "get") in grants and ("", "configmaps", "list") in grants
    assert ("", "serviceaccounts", "impersonate") in grants
    sa = {"kind": "ServiceAccount", "name": "ocigitops-controller",
          "namespace": "ocigitops-system"}
    binding = objs[("ClusterRoleBinding", "ocigitops-controller")]
    assert binding["roleRef"]["name"] == "ocigitops-controller" and binding["subjects"] == [sa]
    admin = objs[("ClusterRoleBinding", "cluster-reconciler-ocigitops-system")]
    assert admin["roleRef"]["name"] == "cluster-admin" and admin["subjects"] == [sa]
