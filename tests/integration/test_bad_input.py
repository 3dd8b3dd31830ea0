"""Bad input through the real ``ocigitops`` CLI against real registries.

Each case must end with a non-zero exit and ONE stderr line ``error: <cause>`` (no
traceback), and a failed pull must leave nothing in or beside ``--output`` (and an
existing ``--output`` exactly as it was). Hostile layers are pushed with the
RegistryClient API as the Flux content layer of an otherwise valid artifact; blobs
are corrupted or truncated directly in the embedded registry's storage.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import pytest

from ocigitops import mediatypes as mt
from ocigitops.artifact import Metadata, build_config, build_manifest, parse_manifest
from ocigitops.auth import Credentials
from ocigitops.errors import NotFoundError
from ocigitops.reference import Reference, parse_reference
from ocigitops.registry import Descriptor, RegistryClient, sha256_digest
from tests.helpers.cli import cli, isolate_credentials, one_error
from tests.helpers.registries import Registry, free_port, loopback_alias
from tests.helpers.tools import tool
from tests.helpers.trees import snapshot

pytestmark = pytest.mark.integration

SRC = "https://github.com/example/bad-input"
REV = "main@sha1:0123456789abcdef0123456789abcdef01234567"
TEN_GB = 10 * 1024 ** 3


# ------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No docker credentials of the host; the installed helm and kustomize."""
    isolate_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("OCIGITOPS_HELM", tool("helm"))
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", tool("kustomize"))


def failed_pull(url: str, flags: list[str], tmp_path: Path, *fragments: str,
                existing: bool = False) -> str:
    """Run a pull that must fail; check output and its surroundings are untouched."""
    parent = tmp_path / "dest"
    parent.mkdir()
    out = parent / "out"
    if existing:
        (out / "apps").mkdir(parents=True)
        (out / "apps" / "keep.yaml").write_text("kind: ConfigMap # previous pull\n")
        (out / "kustomization.yaml").write_text("resources: [apps/keep.yaml]\n")
    before = snapshot(out)
    proc = cli("pull", "artifact", url, "--output", str(out), *flags)
    line = one_error(proc, *fragments)
    assert proc.stdout == ""
    assert snapshot(out) == before
    assert out.exists() == existing
    assert sorted(p.name for p in parent.iterdir()) == (["out"] if existing else [])
    return line


def unique(prefix: str) -> str:
    return f"bad-input/{prefix}-{uuid.uuid4().hex[:8]}"


def client_for(reg: Registry) -> RegistryClient:
    creds = Credentials(username=reg.username, password=reg.password) if reg.username else None
    return RegistryClient(lambda host: creds, insecure=reg.insecure, ca_file=reg.ca_file,
                          max_retries=1)


async def _push(reg: Registry, ref: Reference, config: bytes, config_type: str,
                layers: list[tuple[bytes, str]], annotations: dict[str, str]) -> str:
    async with client_for(reg) as c:
        cdesc = Descriptor(config_type, sha256_digest(config), len(config))
        await c.push_blob(ref, cdesc.digest, cdesc.size, config)
        descs = []
        for data, media_type in layers:
            d = Descriptor(media_type, sha256_digest(data), len(data))
            await c.push_blob(ref, d.digest, d.size, data)
            descs.append(d)
        manifest = build_manifest(cdesc, descs, annotations)
        digest, _ = await c.put_manifest(ref, manifest, mt.OCI_MANIFEST, tag=ref.tag)
        return digest


def push_flux_layer(reg: Registry, repo: str, layer: bytes, tag: str = "v1") -> str:
    """Push ``layer`` as the content layer of an otherwise valid Flux artifact."""
    try:
        diff_id = sha256_digest(gzip.decompress(layer))
    except (OSError, EOFError):
        diff_id = sha256_digest(layer)
    meta = Metadata(source=SRC, revision=REV, created="2024-01-01T00:00:00Z")
    ref = parse_reference(f"{reg.host}/{repo}:{tag}")
    return asyncio.run(_push(reg, ref, build_config(diff_id), mt.FLUX_CONFIG,
                             [(layer, mt.FLUX_CONTENT)], meta.to_annotations()))


def tag_exists(reg: Registry, repo: str, tag: str) -> bool:
    async def go() -> bool:
        async with client_for(reg) as c:
            try:
                await c.get_manifest(parse_reference(f"{reg.host}/{repo}:{tag}"))
            except NotFoundError:
                return False
            return True
    return asyncio.run(go())


def flags(reg: Registry) -> list[str]:
    return reg.cli_flags()


def tree(root: Path) -> Path:
    (root / "apps").mkdir(parents=True)
    (root / "apps" / "cm.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n"
        f"  nonce: {uuid.uuid4().hex}\n")
    (root / "big.txt").write_bytes(os.urandom(64 * 1024))
    return root


def push_with_cli(reg: Registry, repo: str, path: Path) -> str:
    proc = cli("push", "artifact", f"{reg.url(repo)}:v1", "--path", str(path), "--source", SRC,
               "--revision", REV, "-o", "json", *flags(reg))
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout)["digest"])


# ------------------------------------------------------------------ registry problems


def test_unreachable_registry_pull(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    failed_pull(f"oci://{host}/app:v1", ["--insecure-registry"], tmp_path,
                f"cannot reach registry {host}", "is it running")


def test_unreachable_registry_push(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    src = tree(tmp_path / "src")
    proc = cli("push", "artifact", f"oci://{host}/app:v1", "--path", str(src), "--source", SRC,
               "--revision", REV, "--insecure-registry")
    one_error(proc, f"cannot reach registry {host}")


def test_plain_http_registry_without_insecure_flag(debian_plain: Registry,
                                                   tmp_path: Path) -> None:
    # 127.0.0.1 speaks plain HTTP without the flag (the loopback rule, issue 9); the same
    # registry under another name that resolves there still needs it.
    alias = loopback_alias()
    if alias is None:
        pytest.skip("no host name other than localhost resolves to 127.0.0.1 here")
    host = f"{alias}:{debian_plain.host.rpartition(':')[2]}"
    failed_pull(f"oci://{host}/app:v1", [], tmp_path, f"cannot reach registry {host}",
                "pass --insecure-registry")


def test_wrong_credentials(debian_auth: Registry, tmp_path: Path) -> None:
    failed_pull(f"{debian_auth.url('app')}:v1",
                ["--insecure-registry", "--creds", "tester:not-the-SECRET"], tmp_path,
                f"registry {debian_auth.host} refused the credentials for user 'tester'")
    assert "not-the-SECRET" not in cli(
        "pull", "artifact", f"{debian_auth.url('app')}:v1", "--output",
        str(tmp_path / "o2"), "--insecure-registry", "--creds", "tester:not-the-SECRET").stderr


def test_wrong_credentials_push(debian_auth: Registry, tmp_path: Path) -> None:
    repo = unique("wrong-creds")
    proc = cli("push", "artifact", f"{debian_auth.url(repo)}:v1", "--path",
               str(tree(tmp_path / "src")), "--source", SRC, "--revision", REV,
               "--insecure-registry", "--creds", "tester:wrong")
    one_error(proc, "refused the credentials for user 'tester'")
    assert not tag_exists(debian_auth, repo, "v1")


def test_no_credentials(debian_auth: Registry, tmp_path: Path) -> None:
    failed_pull(f"{debian_auth.url('app')}:v1", ["--insecure-registry"], tmp_path,
                f"registry {debian_auth.host} requires authentication",
                "pass --creds user:password or run docker login")


@pytest.mark.parametrize("reg_name", ["embedded_registry", "debian_plain"])
def test_missing_tag(reg_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    reg: Registry = request.getfixturevalue(reg_name)
    repo = unique("missing")
    push_with_cli(reg, repo, tree(tmp_path / "src"))
    failed_pull(f"{reg.url(repo)}:no-such-tag", flags(reg), tmp_path,
                f"{reg.host}/{repo}:no-such-tag not found", "MANIFEST_UNKNOWN")


def test_missing_tag_keeps_existing_output(embedded_registry: Registry, tmp_path: Path) -> None:
    failed_pull(f"{embedded_registry.url(unique('nothing'))}:v1", flags(embedded_registry),
                tmp_path, "not found", existing=True)


# ------------------------------------------------------------------ not our artifact


@pytest.mark.parametrize("reg_name", ["embedded_registry", "debian_plain"])
def test_plain_image_is_not_an_artifact(reg_name: str, request: pytest.FixtureRequest,
                                        tmp_path: Path) -> None:
    reg: Registry = request.getfixturevalue(reg_name)
    repo = unique("image")
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = gzip.compress(b"\0" * 1024)
    asyncio.run(_push(reg, parse_reference(f"{reg.host}/{repo}:v1"), config,
                      mt.OCI_IMAGE_CONFIG, [(layer, mt.OCI_LAYER_TAR_GZIP)], {}))
    failed_pull(f"{reg.url(repo)}:v1", flags(reg), tmp_path,
                f"no layer of media type {mt.FLUX_CONTENT}",
                f"(layers: {mt.OCI_LAYER_TAR_GZIP})", "--layer-selector")


def test_image_index_is_not_an_artifact(embedded_registry: Registry, tmp_path: Path) -> None:
    reg = embedded_registry
    repo = unique("index")
    ref = parse_reference(f"{reg.host}/{repo}:img")
    config = b'{"architecture":"amd64","os":"linux"}'
    image_digest = asyncio.run(_push(reg, ref, config, mt.OCI_IMAGE_CONFIG,
                                     [(gzip.compress(b"x"), mt.OCI_LAYER_TAR_GZIP)], {}))

    async def put_index() -> None:
        async with client_for(reg) as c:
            m = await c.get_manifest(ref)
            index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
                {"mediaType": mt.OCI_MANIFEST, "digest": image_digest, "size": len(m.data),
                 "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
            await c.put_manifest(ref, index, mt.OCI_INDEX, tag="multi")
    asyncio.run(put_index())
    failed_pull(f"{reg.url(repo)}:multi", flags(reg), tmp_path,
                "reference points to an image index", "not an artifact manifest")


# ------------------------------------------------------------------ damaged blobs


def _layer_blob(reg: Registry, repo: str, digest: str) -> Path:
    async def go() -> Descriptor:
        async with client_for(reg) as c:
            m = await c.get_manifest(parse_reference(f"{reg.host}/{repo}@{digest}"))
            return parse_manifest(m.data, m.media_type).select_layer()
    layer = asyncio.run(go())
    assert reg.storage is not None
    path = reg.storage / repo / "blobs" / "sha256" / layer.digest.split(":", 1)[1]
    assert path.is_file()
    assert path.stat().st_size == layer.size
    return path


def _rewrite(path: Path, data: bytes) -> None:
    # a new inode: no other name of the blob is affected
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.mark.parametrize("existing", [False, True], ids=["new-output", "existing-output"])
def test_layer_digest_mismatch(embedded_registry: Registry, tmp_path: Path,
                               existing: bool) -> None:
    repo = unique("corrupt")
    digest = push_with_cli(embedded_registry, repo, tree(tmp_path / "src"))
    blob = _layer_blob(embedded_registry, repo, digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2:len(data) // 2 + 16] = bytes(b ^ 0x5A for b in
                                                     data[len(data) // 2:len(data) // 2 + 16])
    _rewrite(blob, bytes(data))
    layer_digest = "sha256:" + blob.name
    assert hashlib.sha256(data).hexdigest() != blob.name
    failed_pull(f"{embedded_registry.url(repo)}:v1", flags(embedded_registry), tmp_path,
                f"blob {layer_digest} hashes to sha256:", "corrupted or tampered layer",
                existing=existing)


@pytest.mark.parametrize("existing", [False, True], ids=["new-output", "existing-output"])
def test_truncated_download(embedded_registry: Registry, tmp_path: Path,
                            existing: bool) -> None:
    repo = unique("truncated")
    digest = push_with_cli(embedded_registry, repo, tree(tmp_path / "src"))
    blob = _layer_blob(embedded_registry, repo, digest)
    full = blob.read_bytes()
    _rewrite(blob, full[:len(full) // 3])
    failed_pull(f"{embedded_registry.url(repo)}:v1", flags(embedded_registry), tmp_path,
                "truncated", f"{len(full) // 3} of {len(full)} bytes", existing=existing)


# ------------------------------------------------------------------ hostile layers


def _tgz(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return gzip.compress(buf.getvalue(), mtime=0)


def _m(name: str, data: bytes = b"", type_: bytes = tarfile.REGTYPE,
       linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode = type_, linkname, 0o644
    ti.size = len(data) if type_ == tarfile.REGTYPE else 0
    return ti, data


def _ten_gb_header() -> bytes:
    """A ustar header written by hand whose base-256 size field says 10 GiB."""
    hdr = bytearray(b"huge.yaml".ljust(100, b"\0") + b"0000644\0" + b"0000000\0" * 2
                    + b"\x80" + TEN_GB.to_bytes(11, "big") + b"00000000000\0" + b" " * 8
                    + b"0" + b"\0" * 100 + b"ustar\x0000" + b"\0" * 64 + b"0000000\0" * 2)
    hdr += b"\0" * (512 - len(hdr))
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return gzip.compress(bytes(hdr) + b"\0" * 65536, mtime=0)


GOOD = _m("good.yaml", b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n")
HOSTILE = {
    "traversal": (lambda: _tgz(GOOD, _m("../evil.yaml", b"pwned")),
                  "archive entry '../evil.yaml' contains '..' (path traversal)"),
    "absolute": (lambda: _tgz(GOOD, _m("/tmp/ocigitops-bad-input-evil", b"pwned")),
                 "archive entry '/tmp/ocigitops-bad-input-evil' has an absolute path"),
    "symlink": (lambda: _tgz(GOOD, _m("passwd", type_=tarfile.SYMTYPE,
                                       linkname="../../../../etc/passwd")),
                "archive entry 'passwd' is a link to '../../../../etc/passwd'"),
    "device": (lambda: _tgz(GOOD, _m("dev-null", type_=tarfile.CHRTYPE)),
               "archive entry 'dev-null' is a device or FIFO"),
    "10GB-header": (_ten_gb_header,
                    f"archive entry 'huge.yaml' is {TEN_GB} bytes, over the"),
}


@pytest.mark.parametrize("existing", [False, True], ids=["new-output", "existing-output"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_layer(case: str, existing: bool, embedded_registry: Registry,
                       tmp_path: Path) -> None:
    build, message = HOSTILE[case]
    repo = unique(case.lower())
    push_flux_layer(embedded_registry, repo, build())
    failed_pull(f"{embedded_registry.url(repo)}:v1", flags(embedded_registry), tmp_path,
                message, existing=existing)
    assert not (tmp_path / "evil.yaml").exists()
    assert not Path("/tmp/ocigitops-bad-input-evil").exists()


def test_hostile_layer_on_a_third_party_registry(debian_plain: Registry,
                                                 tmp_path: Path) -> None:
    repo = unique("traversal")
    push_flux_layer(debian_plain, repo, HOSTILE["traversal"][0]())
    failed_pull(f"{debian_plain.url(repo)}:v1", flags(debian_plain), tmp_path,
                HOSTILE["traversal"][1])


# ------------------------------------------------------------------ render failures


def test_helm_chart_rendering_invalid_yaml(embedded_registry: Registry, tmp_path: Path) -> None:
    chart = tmp_path / "badchart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: badchart\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  key: [unclosed\n")
    repo = unique("helm")
    proc = cli("push", "artifact", f"{embedded_registry.url(repo)}:v1", "--path", str(chart),
               "--render", "helm", "--source", SRC, "--revision", REV,
               *flags(embedded_registry))
    line = one_error(proc, "error: render: helm template", "YAML")
    assert "ocigitops-render-" not in line  # sandbox paths are not shown
    assert proc.stdout == ""
    assert not tag_exists(embedded_registry, repo, "v1")


def test_helm_output_that_is_not_kubernetes_objects(embedded_registry: Registry,
                                                   tmp_path: Path) -> None:
    # YAML helm accepts (it has a kind) but that is no object: our validator refuses it
    chart = tmp_path / "oddchart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: oddchart\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\n"
                                                 "data:\n  a: b\n")
    repo = unique("helm-odd")
    proc = cli("push", "artifact", f"{embedded_registry.url(repo)}:v1", "--path", str(chart),
               "--render", "helm", "--source", SRC, "--revision", REV,
               *flags(embedded_registry))
    one_error(proc, "error: render: manifests.yaml document 1: missing metadata.name")
    assert not tag_exists(embedded_registry, repo, "v1")


def test_kustomization_with_remote_resource(embedded_registry: Registry,
                                            tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n")
    remote = "https://github.com/fluxcd/flux2/manifests/install?ref=main"
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - cm.yaml\n  - {remote}\n")
    repo = unique("kustomize")
    proc = cli("push", "artifact", f"{embedded_registry.url(repo)}:v1", "--path", "overlay",
               "--render", "kustomize", "--source", SRC, "--revision", REV,
               *flags(embedded_registry), cwd=tmp_path)
    one_error(proc, "kustomization.yaml: resources:", repr(remote),
              "is a remote reference", "vendor them into the tree")
    assert not tag_exists(embedded_registry, repo, "v1")


# ------------------------------------------------------------------ credentials files


@pytest.mark.parametrize("content", [
    "apiVersion: v1\nkind: Secret\ndata:\n  .dockerconfigjson: '!!!not-base64'\n",
    "apiVersion: v1\nkind: Secret\ndata: [\n",
    "apiVersion: v1\nkind: Secret\ndata: [a, b]\n",
], ids=["bad-base64", "bad-yaml", "data-not-a-mapping"])
def test_corrupt_docker_config_secret(content: str, embedded_registry: Registry,
                                      tmp_path: Path) -> None:
    secret = tmp_path / "regcred.yaml"
    secret.write_text(content)
    failed_pull(f"{embedded_registry.url('app')}:v1",
                [*flags(embedded_registry), "--docker-config", str(secret)], tmp_path,
                str(secret))
