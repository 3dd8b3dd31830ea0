"""Interop with the real flux and oras binaries, both directions.

ours push -> flux pull / oras fetch extract identical files; flux push -> ours pull
identical files and reads its annotations; reproducible pushes: the uncompressed tar and
the config are byte-identical to Flux's, the manifest differs only in the layer
descriptor (gzip: Go's compress/flate and zlib produce different deflate streams).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.helpers.cli import ocigitops, run
from tests.helpers.registries import Registry
from tests.helpers.tools import tool
from tests.helpers.trees import tree_files, tree_modes

pytestmark = pytest.mark.integration

REV = "main@sha1:0123456789abcdef0123456789abcdef01234567"
SRC = "https://github.com/example/app"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small manifest tree with nesting, an executable, a long name and ignored files."""
    root = tmp_path / "tree"
    (root / "apps" / "web").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "apps" / "web" / "deploy.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n")
    (root / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
                                  "data:\n  k: v & <x>\n")
    script = root / "apps" / "hook.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (root / "apps" / ("n" * 120 + ".yaml")).write_text("a: 1\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "logo.png").write_bytes(b"\x89PNG")
    return root


def _expected(tree: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree_files(tree).items()
            if not k.startswith(".git/") and not k.endswith(".png")}


def test_ours_push_flux_pull(embedded_registry: Registry, tree: Path, tmp_path: Path) -> None:
    ref = embedded_registry.url("interop/ours-to-flux") + ":v1"
    ocigitops("push", "artifact", ref, "--path", str(tree), "--source", SRC, "--revision",
              REV, "-a", "team=platform", "--insecure-registry")
    out = tmp_path / "flux-out"
    out.mkdir()  # flux requires an existing output directory
    run([tool("flux"), "pull", "artifact", ref, "--output", str(out), "--insecure-registry"])
    assert tree_files(out) == _expected(tree)
    assert tree_modes(out)["apps/hook.sh"] & 0o100
    listed = run([tool("flux"), "list", "artifacts", embedded_registry.url("interop/ours-to-flux"),
                  "--insecure-registry"]).stdout
    assert SRC in listed and REV in listed


def test_flux_push_ours_pull(embedded_registry: Registry, tree: Path, tmp_path: Path) -> None:
    ref = embedded_registry.url("interop/flux-to-ours") + ":v1"
    run([tool("flux"), "push", "artifact", ref, "--path", str(tree), "--source", SRC,
         "--revision", REV, "--annotations", "team=platform", "--insecure-registry"])
    out = tmp_path / "ours-out"
    res = ocigitops("pull", "artifact", ref, "--output", str(out), "--insecure-registry",
                    "--json")
    doc = json.loads(res.stdout)
    assert doc["source"] == SRC and doc["revision"] == REV
    assert doc["annotations"] == {"team": "platform"}
    assert tree_files(out) == _expected(tree)
    assert tree_modes(out) == {k: v for k, v in tree_modes(tree).items() if k in tree_files(out)}
    # our list reads flux's annotations too
    listed = json.loads(ocigitops("list", "artifacts",
                                  embedded_registry.url("interop/flux-to-ours"),
                                  "--insecure-registry", "-o", "json").stdout)
    assert listed[0]["revision"] == REV and listed[0]["tag"] == "v1"
    # and our diff says a flux-pushed artifact of the same tree is the same content
    assert ocigitops("diff", "artifact", ref, "--path", str(tree), "--insecure-registry",
                     check=False).returncode == 0


def _manifest(ref: str) -> dict[str, object]:
    raw = run([tool("crane"), "manifest", "--insecure", ref.removeprefix("oci://")]).stdout
    doc: dict[str, object] = json.loads(raw)
    return doc


def test_reproducible_matches_flux(embedded_registry: Registry, tree: Path,
                                   tmp_path: Path) -> None:
    flux_ref = embedded_registry.url("repro/flux") + ":v1"
    ours_ref = embedded_registry.url("repro/ours") + ":v1"
    run([tool("flux"), "push", "artifact", flux_ref, "--path", str(tree), "--source", SRC,
         "--revision", REV, "--reproducible", "--insecure-registry"])
    first = json.loads(ocigitops("push", "artifact", ours_ref, "--path", str(tree), "--source",
                                 SRC, "--revision", REV, "--reproducible",
                                 "--insecure-registry", "-o", "json").stdout)
    again = json.loads(ocigitops("push", "artifact", ours_ref, "--path", str(tree), "--source",
                                 SRC, "--revision", REV, "--reproducible",
                                 "--insecure-registry", "-o", "json").stdout)
    assert first["digest"] == again["digest"], "reproducible pushes must not change digest"

    fm, om = _manifest(flux_ref), _manifest(ours_ref)
    # Config blob byte-identical (same digest), annotations identical.
    assert fm["config"] == om["config"]
    assert fm["annotations"] == om["annotations"]
    # Everything but the layer's size and digest is identical.
    fl, ol = fm["layers"][0], om["layers"][0]  # type: ignore[index]
    assert fl["mediaType"] == ol["mediaType"]
    assert {k: v for k, v in fm.items() if k != "layers"} == \
        {k: v for k, v in om.items() if k != "layers"}

    # The uncompressed tarballs are byte-identical: fetch both layers and gunzip.
    def tar_bytes(ref: str, layer: dict[str, object]) -> bytes:
        repo = ref.removeprefix("oci://").rsplit(":", 1)[0]
        return gzip.decompress(_crane_blob(repo, str(layer["digest"])))

    assert tar_bytes(flux_ref, fl) == tar_bytes(ours_ref, ol)


def _crane_blob(repo: str, digest: str) -> bytes:
    return subprocess.run([tool("crane"), "blob", "--insecure", f"{repo}@{digest}"],
                          capture_output=True, check=True).stdout


def test_build_artifact_tar_matches_flux(tree: Path, tmp_path: Path) -> None:
    run([tool("flux"), "build", "artifact", "--path", str(tree), "--output",
         str(tmp_path / "flux.tgz")])
    ocigitops("build", "artifact", "--path", str(tree), "--output", str(tmp_path / "ours.tgz"))
    flux_tar = gzip.decompress((tmp_path / "flux.tgz").read_bytes())
    ours_tar = gzip.decompress((tmp_path / "ours.tgz").read_bytes())
    assert flux_tar == ours_tar
    # gzip header fields match Go's too (no name, mtime 0, XFL 0, OS 255)
    assert (tmp_path / "flux.tgz").read_bytes()[:10] == (tmp_path / "ours.tgz").read_bytes()[:10]


def test_single_file_and_stdin_like_flux(tmp_path: Path, embedded_registry: Registry) -> None:
    f = tmp_path / "one.yaml"
    f.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: one\n")
    run([tool("flux"), "build", "artifact", "--path", str(f), "--output",
         str(tmp_path / "flux.tgz")])
    ocigitops("build", "artifact", "--path", str(f), "--output", str(tmp_path / "ours.tgz"))
    with tarfile.open(tmp_path / "flux.tgz") as a, tarfile.open(tmp_path / "ours.tgz") as b:
        assert a.getnames() == b.getnames()
    assert gzip.decompress((tmp_path / "flux.tgz").read_bytes()) == \
        gzip.decompress((tmp_path / "ours.tgz").read_bytes())


def test_ours_push_oras_fetch(embedded_registry: Registry, tree: Path, tmp_path: Path) -> None:
    """oras reads our manifest and layer over the wire (Flux layers carry no title
    annotation, so ``oras pull`` skips them by design; manifest and blob fetch work)."""
    ref = embedded_registry.url("interop/ours-to-oras") + ":v1"
    ocigitops("push", "artifact", ref, "--path", str(tree), "--source", SRC, "--revision",
              REV, "--insecure-registry")
    plain = ref.removeprefix("oci://")
    manifest = json.loads(run([tool("oras"), "manifest", "fetch", "--plain-http",
                               plain]).stdout)
    layer = manifest["layers"][0]
    assert layer["mediaType"] == "application/vnd.cncf.flux.content.v1.tar+gzip"
    blob = tmp_path / "layer.tgz"
    run([tool("oras"), "blob", "fetch", "--plain-http", "--output", str(blob),
         f"{plain.rsplit(':', 1)[0]}@{layer['digest']}"])
    out = tmp_path / "oras-out"
    out.mkdir()
    with tarfile.open(blob) as tf:
        tf.extractall(out, filter="data")
    assert tree_files(out) == _expected(tree)


def test_oras_push_ours_pull(embedded_registry: Registry, tree: Path, tmp_path: Path) -> None:
    """An artifact assembled by oras with Flux media types is pulled by us."""
    ocigitops("build", "artifact", "--path", str(tree), "--output",
              str(tmp_path / "content.tgz"))
    (tmp_path / "config.json").write_text("{}")
    ref = embedded_registry.url("interop/oras-to-ours") + ":v1"
    run([tool("oras"), "push", "--plain-http", ref.removeprefix("oci://"),
         "--config", "config.json:application/vnd.cncf.flux.config.v1+json",
         "--annotation", f"org.opencontainers.image.source={SRC}",
         "--annotation", f"org.opencontainers.image.revision={REV}",
         "content.tgz:application/vnd.cncf.flux.content.v1.tar+gzip"], cwd=tmp_path)
    out = tmp_path / "ours-out"
    doc = json.loads(ocigitops("pull", "artifact", ref, "--output", str(out),
                               "--insecure-registry", "--json").stdout)
    assert doc["revision"] == REV
    assert tree_files(out) == _expected(tree)


def test_pull_by_digest_and_layer_selector(embedded_registry: Registry, tree: Path,
                                           tmp_path: Path) -> None:
    ref = embedded_registry.url("interop/digest") + ":v1"
    digest = json.loads(ocigitops("push", "artifact", ref, "--path", str(tree), "--source",
                                  SRC, "--revision", REV, "--insecure-registry", "-o",
                                  "json").stdout)["digest"]
    out = tmp_path / "by-digest"
    out.mkdir()
    run([tool("flux"), "pull", "artifact",
         f"{embedded_registry.url('interop/digest')}@{digest}", "--output", str(out),
         "--insecure-registry"])
    assert tree_files(out) == _expected(tree)
    out2 = tmp_path / "ours-by-digest"
    ocigitops("pull", "artifact", f"{embedded_registry.url('interop/digest')}@{digest}",
              "--output", str(out2), "--insecure-registry", "--layer-selector",
              "application/vnd.cncf.flux.content.v1.tar+gzip")
    assert tree_files(out2) == _expected(tree)
    assert os.listdir(out2)
