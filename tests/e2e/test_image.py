"""The controller image (deploy/image/build), end to end: built without Docker (mmdebstrap +
buildah), pushed to a local registry, then run with podman (host network) as user 65532:
``ocigitops --version`` and the image's ``helm version``, and ``controller run`` against the
dev cluster reconciling an OCIRepository and a Kustomization (built by the kubectl kustomize
inside the image), then a HelmRelease of a chart pushed with ``ocigitops push chart``
(installed by the helm 4 binary inside the image, Deployment Ready through kwok).

The build is the expensive part (about 1-2 minutes cold on 2 cores) and runs once per
session; its OCI archive is kept in ``~/.cache/ocigitops/image/`` under a key made of the
lock files, the build script and the project's wheel, so a run with the same inputs reuses
it. Needs root (mmdebstrap's root mode) and the Debian image tools, which the fixture
installs when missing (``scripts/install-tools image``). ``OCIGITOPS_SKIP_IMAGE=1`` skips the
module on a machine where that cannot work; CI does not set it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.devcluster import Cluster
from tests.helpers.charts import DEPLOYMENT_TEMPLATE
from tests.helpers.cli import ocigitops
from tests.helpers.kube import (
    Kube,
    apply_kustomization,
    apply_source,
    condition,
    configmap_data,
    wait_applied,
    wait_for,
)
from tests.helpers.paths import REPO_ROOT
from tests.helpers.publish import configmap, manifest_tree, publish
from tests.helpers.registries import Registry, free_port

pytestmark = pytest.mark.e2e

IMAGE_DIR = REPO_ROOT / "deploy" / "image"
CONTAINERS_CONF = IMAGE_DIR / "containers.conf"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ocigitops" / "image"
BUILD_TIMEOUT = 900.0
HELM4_BUILD_TIMEOUT = 2400.0
NS = "e2e-image"
TOOLS = ("mmdebstrap", "buildah", "podman", "runc", "skopeo")
HELM4 = "/opt/ocigitops/bin/helm"
CHART_LAYER = {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
               "operation": "copy"}
CHART_TEMPLATES = {
    "cm.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-cm
data:
  message: {{ .Values.message | quote }}
""",
    "deploy.yaml": DEPLOYMENT_TEMPLATE,
}

if os.environ.get("OCIGITOPS_SKIP_IMAGE") == "1":
    pytest.skip("OCIGITOPS_SKIP_IMAGE=1: the controller image tests are skipped",
                allow_module_level=True)


@dataclass(frozen=True)
class BuiltImage:
    """An OCI archive of the image, its manifest digest and what building it took."""

    archive: Path
    digest: str
    compressed_bytes: int
    build_seconds: float | None  # None: reused from the cache


def _sh(*args: str, timeout: float = 300.0, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args[:4])} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def _ensure_tools() -> None:
    """The Debian image tools, installed once when missing (as install-tools does)."""
    if os.geteuid() != 0:
        pytest.fail("the image build needs root (mmdebstrap's root mode): run the e2e tier as"
                    " root, or set OCIGITOPS_SKIP_IMAGE=1", pytrace=False)
    if any(shutil.which(t) is None for t in TOOLS):
        _sh(str(REPO_ROOT / "scripts" / "install-tools"), "image", timeout=600)
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `scripts/install-tools image`",
                    pytrace=False)
    # The image's helm 4, built from its Go module once (about 13 minutes cold on 2 cores,
    # nothing when cached): outside the build's own timeout.
    _sh(str(REPO_ROOT / "scripts" / "install-tools"), "helm4", timeout=HELM4_BUILD_TIMEOUT)


def _source_date_epoch() -> str:
    return _sh("git", "-C", str(REPO_ROOT), "log", "-1", "--format=%ct").stdout.strip()


def _cache_key(tmp: Path, epoch: str) -> str:
    """Hash of what decides the image: the locks, the build script and the project's wheel
    (built as the image build builds it, so same sources, same wheel bytes)."""
    wheels = tmp / "wheel"
    _sh("python3", "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir", "-w", str(wheels),
        str(REPO_ROOT), env={"SOURCE_DATE_EPOCH": epoch})
    h = hashlib.sha256()
    files = [IMAGE_DIR / "requirements.lock", IMAGE_DIR / "pip.lock", IMAGE_DIR / "build",
             *sorted(wheels.glob("*.whl"))]
    for f in files:
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    # The helm 4 the image carries: its pinned version (the binary is built from the module
    # at that version, static and -trimpath, so the version names the bytes).
    h.update(b"helm4\0" + _helm4_pin().encode())
    return h.hexdigest()[:32]


def _helm4_pin() -> str:
    """The ``helm4|<version>|...`` line of scripts/install-tools."""
    for line in (REPO_ROOT / "scripts" / "install-tools").read_text().splitlines():
        if line.strip().startswith('"helm4|'):
            return line.strip()
    raise AssertionError("scripts/install-tools pins no helm4")


def _archive_facts(archive: Path) -> tuple[str, int]:
    """The manifest digest of an OCI archive and its compressed size (layers + config)."""
    with tarfile.open(archive) as tar:
        def read(name: str) -> bytes:
            f = tar.extractfile(name)
            assert f is not None, name
            return f.read(1 << 20)

        (desc,) = json.loads(read("index.json"))["manifests"]
        digest = str(desc["digest"])
        manifest = json.loads(read(f"blobs/sha256/{digest.split(':')[1]}"))
    size = sum(int(x["size"]) for x in manifest["layers"]) + int(manifest["config"]["size"])
    return digest, size


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """The image, built once per session (or reused from the cache for the same inputs)."""
    _ensure_tools()
    tmp = tmp_path_factory.mktemp("image")
    epoch = _source_date_epoch()
    archive = CACHE / f"{_cache_key(tmp, epoch)}.tar"
    seconds: float | None = None
    if not archive.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(".partial")
        start = time.monotonic()
        _sh(str(IMAGE_DIR / "build"), "--no-push", "--archive", str(partial),
            timeout=BUILD_TIMEOUT, env={"SOURCE_DATE_EPOCH": epoch})
        seconds = time.monotonic() - start
        partial.rename(archive)
        for stale in CACHE.glob("*.tar"):  # one image kept: they are ~75 MB each
            if stale != archive:
                stale.unlink()
    digest, size = _archive_facts(archive)
    print(f"\ncontroller image: {digest}, {size / 1e6:.1f} MB compressed, "
          + (f"built in {seconds:.0f}s" if seconds is not None else f"reused {archive}"))
    return BuiltImage(archive=archive, digest=digest, compressed_bytes=size,
                      build_seconds=seconds)


class Podman:
    """podman with a private storage (nothing of the machine's own is touched) and the
    project's containers.conf."""

    def __init__(self, tmp: Path) -> None:
        self.base = ["podman", "--root", str(tmp / "storage"), "--runroot", str(tmp / "run"),
                     "--tmpdir", str(tmp / "tmp")]
        self.env = {"CONTAINERS_CONF": str(CONTAINERS_CONF)}

    def __call__(self, *args: str, timeout: float = 300.0,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return _sh(*self.base, *args, timeout=timeout, env=self.env, check=check)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """A podman whose storage is removed at the end of the module."""
    tmp = tmp_path_factory.mktemp("podman")
    p = Podman(tmp)
    try:
        yield p
    finally:
        p("rm", "--all", "--force", check=False)
        p("system", "reset", "--force", check=False)


@pytest.fixture(scope="module")
def pushed(built_image: BuiltImage, embedded_registry: Registry, podman: Podman) -> str:
    """The image pushed to the embedded registry and pulled by podman; ``host/repo@digest``."""
    ref = f"{embedded_registry.host}/ocigitops/controller"
    _sh("skopeo", "copy", "--quiet", "--dest-tls-verify=false",
        f"oci-archive:{built_image.archive}", f"docker://{ref}:test")
    head = httpx.head(f"http://{embedded_registry.host}/v2/ocigitops/controller/manifests/test",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
                      timeout=10)
    # The push keeps the manifest bytes: the registry serves the digest that was built.
    assert head.headers.get("docker-content-digest") == built_image.digest
    podman("pull", "--quiet", "--tls-verify=false", f"{ref}@{built_image.digest}")
    return f"{ref}@{built_image.digest}"


def test_version_runs_as_nonroot(pushed: str, podman: Podman, built_image: BuiltImage) -> None:
    from ocigitops.version import __version__

    out = podman("run", "--rm", "--network", "host", pushed, "--version")
    assert out.stdout.strip() == f"ocigitops, version {__version__}"
    config = json.loads(podman("image", "inspect", pushed).stdout)[0]["Config"]
    assert config["User"] == "65532:65532"
    assert "OCIGITOPS_TOOLS=/opt/ocigitops/tools" in config["Env"]
    assert f"OCIGITOPS_HELM4={HELM4}" in config["Env"]
    # The Helm engine: the helm 4 built from its module by scripts/install-tools, pinned there.
    pinned = _helm4_pin().split("|")[1]  # v4.3.1
    helm = podman("run", "--rm", "--network", "host", "--entrypoint", HELM4, pushed,
                  "version", "--template", "{{.Version}} {{.GoVersion}}").stdout.split()
    assert pinned.startswith(helm[0]), (helm, pinned)  # helm prints v4.3 for v4.3.1
    assert config["Labels"]["dev.ocigitops.image.helm"] == pinned
    # Distroless: no shell to run.
    no_shell = podman("run", "--rm", "--entrypoint", "/bin/sh", pushed, "-c", "true",
                      check=False)
    assert no_shell.returncode != 0
    assert built_image.compressed_bytes < 120_000_000


@pytest.fixture
def container_kubeconfig(kube_cluster: Cluster, tmp_path: Path) -> Path:
    """The admin kubeconfig (certificates embedded), readable by the image's user 65532."""
    copy = tmp_path / "kubeconfig"
    shutil.copyfile(kube_cluster.kubeconfig, copy)
    copy.chmod(0o644)
    tmp_path.chmod(0o755)
    return copy


def test_controller_in_the_image_reconciles(pushed: str, podman: Podman, kube_api: Kube,
                                            embedded_registry: Registry,
                                            container_kubeconfig: Path,
                                            tmp_path: Path) -> None:
    kube_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube = kube_api.in_ns(NS)
    tree = manifest_tree(tmp_path, "app", configmap("from-image", {"engine": "kubectl"}))
    (tree / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [" + ", ".join(sorted(p.name for p in tree.glob("*.yaml")
                                          if p.name != "kustomization.yaml")) + "]\n"
        "labels: [{pairs: {built-by: kustomize-in-image}}]\n")
    revision = publish(embedded_registry.host, "e2e/image-app", tree)

    # The artifact cache: a directory of the image's user, as the Deployment's emptyDir
    # with fsGroup 65532 is.
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chown(cache, 65532, 65532)
    health, metrics = free_port(), free_port()
    name = f"ocigitops-e2e-{os.getpid()}"
    podman("run", "--detach", "--name", name, "--network", "host", "--read-only",
           "--tmpfs", "/tmp", "--volume", f"{cache}:/var/cache/ocigitops",
           "--volume", f"{container_kubeconfig}:/etc/ocigitops/kubeconfig:ro", pushed,
           "controller", "run", "--kubeconfig", "/etc/ocigitops/kubeconfig",
           "--watch-namespace", NS, "--health-addr", f"127.0.0.1:{health}",
           "--metrics-addr", f"127.0.0.1:{metrics}")

    def logs() -> str:
        out = podman("logs", "--tail", "60", name, check=False)  # the container's stderr
        return (out.stdout + out.stderr)[-6000:]                   # comes on podman's

    def ready() -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
        if state.stdout.strip() != "true":
            raise AssertionError(f"the controller container exited:\n{logs()}")
        try:
            return httpx.get(f"http://127.0.0.1:{health}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("controller container /readyz", ready, 60, explain=logs)
        apply_source(kube, "app", embedded_registry.host, "e2e/image-app", interval="10s")
        apply_kustomization(kube, "app", "app", interval="10s")
        try:
            wait_applied(kube, "app", revision)
        except AssertionError as e:
            raise AssertionError(f"{e}\ncontroller log:\n{logs()}") from e
        assert configmap_data(kube, "from-image") == {"engine": "kubectl"}
        cm = kube.get("v1", "ConfigMap", "from-image") or {}
        assert cm["metadata"]["labels"]["built-by"] == "kustomize-in-image"
        # Its artifact cache is the volume the image points at, written by user 65532.
        listing = podman("exec", name, "/opt/ocigitops/bin/python3", "-c",
                         "import os; print(os.getuid(), len(os.listdir('/var/cache/ocigitops')))"
                         ).stdout.split()
        assert listing[0] == "65532" and int(listing[1]) > 0
        _helmrelease_in_the_image(kube, embedded_registry, tmp_path, logs)
    finally:
        podman("stop", "--time", "10", name, check=False)
        podman("rm", "--force", name, check=False)
        _release(kube, kube_api)


def _helmrelease_in_the_image(kube: Kube, registry: Registry, tmp_path: Path,
                              logs: Callable[[], str]) -> None:
    """A chart pushed with ``ocigitops push chart``, read through an OCIRepository, installed
    by the controller in the image with its helm 4 (the binary engine)."""
    chart = tmp_path / "chart" / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text('apiVersion: v2\nname: tiny\nversion: 0.1.0\n'
                                      'appVersion: "1.0.0"\n')
    (chart / "values.yaml").write_text("message: hello\n")
    for name, text in CHART_TEMPLATES.items():
        (chart / "templates" / name).write_text(text)
    ocigitops("push", "chart", str(chart), f"oci://{registry.host}/e2e/image-charts")
    kube.apply({"apiVersion": API_VERSION, "kind": "OCIRepository",
                "metadata": {"name": "tiny", "namespace": NS},
                "spec": {"url": f"oci://{registry.host}/e2e/image-charts/tiny",
                         "ref": {"tag": "0.1.0"}, "interval": "1m", "insecure": True,
                         "layerSelector": CHART_LAYER}})
    kube.apply({"apiVersion": API_VERSION, "kind": "HelmRelease",
                "metadata": {"name": "web", "namespace": NS},
                "spec": {"interval": "1m", "timeout": "60s", "values": {"message": "from-helm"},
                         "chartRef": {"kind": "OCIRepository", "name": "tiny"}}})

    def hr() -> dict[str, Any]:
        return kube.get(API_VERSION, "HelmRelease", "web") or {}

    def installed() -> bool:
        return condition(hr(), "Ready").get("reason") == "InstallSucceeded"

    wait_for("HelmRelease/web InstallSucceeded", installed, 120, interval=1.0,
             explain=lambda: f"{json.dumps(hr().get('status'), indent=1)[-2000:]}\n{logs()}")
    assert condition(hr(), "Ready")["status"] == "True"
    history = hr()["status"]["history"]
    assert (history[0]["version"], history[0]["status"], history[0]["chartVersion"]) == (
        1, "deployed", "0.1.0")
    assert configmap_data(kube, "web-cm") == {"message": "from-helm"}
    dep = kube.get("apps/v1", "Deployment", "web-app") or {}
    assert (dep.get("status") or {}).get("readyReplicas") == 1  # helm waited for it
    # Stored as Helm stores it, applied by the helm binary (field manager "helm").
    release = kube.get("v1", "Secret", "sh.helm.release.v1.web.v1") or {}
    assert release.get("type") == "helm.sh/release.v1"
    cm = kube.get("v1", "ConfigMap", "web-cm") or {}
    managers = {m.get("manager") for m in cm["metadata"].get("managedFields") or []}
    assert "helm" in managers, managers


def _release(kube: Kube, kube_api: Kube) -> None:
    """Drop the finalizers (the controller that would handle them is gone), then the
    namespace."""
    for kind in ("HelmRelease", "HelmChart", "Kustomization", "OCIRepository"):
        for obj in kube.list(API_VERSION, kind):
            name = obj["metadata"]["name"]

            def unfinalize(d: Any, k: str = kind, n: str = name) -> Any:
                return d.merge_patch(API_VERSION, k, n, NS, {"metadata": {"finalizers": None}})

            kube.call(unfinalize)
    kube_api.call(lambda d: d.delete("v1", "Namespace", NS, None))

