"""``ocigitops dist push``: deploy/ as one Flux-format artifact with the controller image
pinned by digest, read back by the real flux CLI and built by the real kustomize, signed
and verified with ``verify artifact``; deploy/ itself is never changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocigitops.publisher.dist import ANN_IMAGE, find_deploy_dir
from tests.helpers.cli import cli, ocigitops, one_error, run
from tests.helpers.paths import DEPLOY
from tests.helpers.registries import Registry
from tests.helpers.tools import tool

pytestmark = pytest.mark.integration

ENV = {"COSIGN_PASSWORD": "dist test"}
DIGEST = "sha256:" + hashlib.sha256(b"the controller image").hexdigest()
REV = "main@sha1:0123456789abcdef0123456789abcdef01234567"


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _push(reg: Registry, repo: str, image: str, *extra: str) -> dict[str, Any]:
    out = ocigitops("dist", "push", reg.url(repo) + ":v0.1.0", "--image", image,
                    "--revision", REV, "-o", "json", *reg.cli_flags(), *extra, env=ENV)
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _controller(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [o for o in objs if o["kind"] == "Deployment"
              and o["metadata"]["name"] == "ocigitops-controller"]
    (container,) = [c for c in dep["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "controller"]
    return dict(container)


def test_flux_pulls_it_and_kustomize_pins_the_image(embedded_registry: Registry,
                                                     tmp_path: Path) -> None:
    before = _tree_hash(DEPLOY)
    image = f"{embedded_registry.host}/ocigitops/controller:v0.1.0@{DIGEST}"
    doc = _push(embedded_registry, "dist/manifests", image)
    assert doc["pushed"] is True
    assert _tree_hash(DEPLOY) == before  # deploy/ stays as it is

    out = tmp_path / "pulled"
    out.mkdir()  # flux wants an existing directory
    run([tool("flux"), "pull", "artifact", embedded_registry.url("dist/manifests") + ":v0.1.0",
         "--output", str(out), "--insecure-registry"])
    # The whole tree is there: every file of deploy/ (the kustomization rewritten).
    assert set(_tree_hash(out)) == set(before)
    built = run([tool("kustomize"), "build", str(out)]).stdout
    objs = [o for o in yaml.safe_load_all(built) if o]
    container = _controller(objs)
    assert container["image"] == f"{embedded_registry.host}/ocigitops/controller@{DIGEST}"
    kinds = {o["kind"] for o in objs}
    assert {"CustomResourceDefinition", "Namespace", "ClusterRole", "Deployment"} <= kinds
    # The same resources as deploy/ itself, only the image differs.
    original = [o for o in yaml.safe_load_all(run([tool("kustomize"), "build",
                                                   str(DEPLOY)]).stdout) if o]
    assert len(original) == len(objs)
    assert _controller(original)["image"].startswith("ghcr.io/ocigitops/ocigitops:")

    listed = json.loads(ocigitops("pull", "artifact",
                                  embedded_registry.url("dist/manifests") + ":v0.1.0",
                                  "--output", str(tmp_path / "ours"), "--json").stdout)
    assert listed["revision"] == REV
    assert listed["annotations"][ANN_IMAGE] == \
        f"{embedded_registry.host}/ocigitops/controller@{DIGEST}"


def test_same_tree_and_image_same_digest(embedded_registry: Registry) -> None:
    image = f"registry.example/ocigitops@{DIGEST}"
    first = _push(embedded_registry, "dist/repro", image)
    second = _push(embedded_registry, "dist/repro", image)
    assert first["digest"] == second["digest"]
    other = _push(embedded_registry, "dist/repro",
                  "registry.example/ocigitops@sha256:" + "0" * 64)
    assert other["digest"] != first["digest"]


def test_signed_and_verified(embedded_registry: Registry, tmp_path: Path) -> None:
    ocigitops("generate", "key-pair", cwd=tmp_path, env=ENV)
    doc = _push(embedded_registry, "dist/signed", f"registry.example/ocigitops@{DIGEST}",
                "--sign", "--key", str(tmp_path / "cosign.key"))
    assert doc["signature"]
    url = embedded_registry.url("dist/signed") + ":v0.1.0"
    res = ocigitops("verify", "artifact", url, "--key", str(tmp_path / "cosign.pub"),
                    "-o", "json", *embedded_registry.cli_flags())
    verdict = json.loads(res.stdout)
    assert verdict["verified"] is True and verdict["digest"] == doc["digest"]
    # Another key does not verify it.
    ocigitops("generate", "key-pair", "--output-key-prefix", "other", cwd=tmp_path, env=ENV)
    refused = cli("verify", "artifact", url, "--key", str(tmp_path / "other.pub"),
                  *embedded_registry.cli_flags())
    assert refused.returncode == 1


def test_an_image_without_digest_is_refused(embedded_registry: Registry) -> None:
    res = cli("dist", "push", embedded_registry.url("dist/refused") + ":v1", "--image",
              "ghcr.io/acme/ocigitops:v1", *embedded_registry.cli_flags())
    assert res.returncode == 2
    one_error(res, "--image", "by digest")


def test_a_tree_without_the_controller_is_refused(embedded_registry: Registry,
                                                  tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [ns.yaml]\n")
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    res = cli("dist", "push", embedded_registry.url("dist/refused") + ":v1", "--image",
              f"ghcr.io/acme/ocigitops@{DIGEST}", "--path", str(tmp_path),
              *embedded_registry.cli_flags())
    assert res.returncode == 2
    one_error(res, "no Deployment ocigitops-controller")


def test_the_deploy_tree_is_found_from_a_checkout() -> None:
    assert find_deploy_dir() == DEPLOY.resolve()
