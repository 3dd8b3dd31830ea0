"""``push artifact --provenance``: a SLSA provenance v1 attestation of the GitHub Actions run
(the environment GitHub sets, given to the real CLI), verified by our policy and by the real
cosign v3.0.2 (``verify-attestation --type slsaprovenance1``)."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import cli
from tests.helpers.cosign3 import PASSWORD, Cosign3
from tests.helpers.github import ACTIONS_ENV as ENV
from tests.helpers.registries import Registry

pytestmark = pytest.mark.integration

SLSA1 = "https://slsa.dev/provenance/v1"
BUILDER = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
SHA = ENV["GITHUB_SHA"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("prov-keys")
    Cosign3(where)("generate-key-pair")
    return where / "cosign.key", where / "cosign.pub"


def _tree(tmp: Path, text: str = "a: 1\n") -> Path:
    d = tmp / "tree"
    d.mkdir(exist_ok=True)
    (d / "cm.yaml").write_text(text)
    return d


def _push(reg: Registry, url: str, tree: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    proc = cli("push", "artifact", url, "--path", str(tree), "-o", "json", *extra,
               *reg.cli_flags(), env={**ENV, "COSIGN_PASSWORD": PASSWORD})
    return proc.returncode, json.loads(proc.stdout) if proc.returncode == 0 else {}, proc.stderr


def test_provenance_verified_by_policy_and_cosign(embedded_registry: Registry,
                                                  keys: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    key, pub = keys
    url = f"oci://{embedded_registry.host}/prov/{uuid.uuid4().hex[:8]}:v1"
    code, doc, err = _push(embedded_registry, url, _tree(tmp_path), "--sign", "--key",
                           str(key), "--provenance")
    assert code == 0, err
    assert doc["signature"]["subject"] == doc["digest"]
    assert doc["provenance"]["subject"] == doc["digest"]
    # Our policy: the builder is our workflow, at most an hour old.
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""rule: any
authorities:
  - name: release-key
    cosign: {{keys: [{pub}]}}
attestations:
  - name: built-by-release
    predicateType: slsaprovenance1
    authorities: [release-key]
    maxAge: 1h
    conditions:
      - "predicate.runDetails.builder.id == '{BUILDER}'"
      - "predicate.buildDefinition.resolvedDependencies[0].digest.gitCommit == '{SHA}'"
""")
    proc = cli("verify", "artifact", url, "--policy", str(policy), "-o", "json",
               *embedded_registry.cli_flags())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert [a["passed"] for a in result["attestations"]] == [True]
    # A policy asking for another builder fails on that condition.
    policy.write_text(policy.read_text().replace("release.yml", "other.yml"))
    proc = cli("verify", "artifact", url, "--policy", str(policy),
               *embedded_registry.cli_flags())
    assert proc.returncode == 1 and "builder.id" in proc.stdout + proc.stderr
    # The real cosign v3 agrees.
    ref = f"{url.removeprefix('oci://').rsplit(':', 1)[0]}@{doc['digest']}"
    out = Cosign3(tmp_path).verify_attestation(pub, ref, "slsaprovenance1")
    assert out.returncode == 0, out.stderr
    statement = json.loads(base64.b64decode(json.loads(out.stdout.splitlines()[0])["payload"]))
    assert statement["predicateType"] == SLSA1
    assert statement["predicate"]["runDetails"]["builder"]["id"] == BUILDER


def test_unchanged_content_gets_no_provenance(embedded_registry: Registry,
                                             keys: tuple[Path, Path], tmp_path: Path) -> None:
    key, _ = keys
    base = f"oci://{embedded_registry.host}/prov/{uuid.uuid4().hex[:8]}"
    tree = _tree(tmp_path)
    assert _push(embedded_registry, f"{base}:v1", tree, "--reproducible")[0] == 0
    code, doc, err = _push(embedded_registry, f"{base}:v2", tree, "--reproducible",
                           "--diff-tag", "v1", "--key", str(key), "--provenance")
    assert code == 0, err
    assert doc["pushed"] is False and "provenance" not in doc
    assert "no provenance attested" in err


@pytest.mark.parametrize("extra, env, fragment", [
    (("--provenance",), ENV, "--provenance signs with cosign: pass --key FILE or --keyless"),
    (("--provenance", "--key", "KEY"), {"GITHUB_ACTIONS": ""}, "GITHUB_ACTIONS is not 'true'"),
])
def test_provenance_refusals(embedded_registry: Registry, keys: tuple[Path, Path],
                             tmp_path: Path, extra: tuple[str, ...], env: dict[str, str],
                             fragment: str) -> None:
    args = [str(keys[0]) if a == "KEY" else a for a in extra]
    url = f"oci://{embedded_registry.host}/prov/{uuid.uuid4().hex[:8]}:v1"
    proc = cli("push", "artifact", url, "--path", str(_tree(tmp_path)), *args,
               *embedded_registry.cli_flags(), env={**ENV, **env, "COSIGN_PASSWORD": PASSWORD})
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr
    # Refused before any upload: nothing is in the repository.
    listed = cli("list", "artifacts", url.rsplit(":", 1)[0], "-o", "json",
                 *embedded_registry.cli_flags())
    assert listed.returncode in (0, 4) and "v1" not in listed.stdout
