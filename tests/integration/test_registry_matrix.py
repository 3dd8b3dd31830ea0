"""Every publisher command and the client's protocol paths on every test registry.

Registries: the embedded one, Debian distribution 2.8 (plain, htpasswd, TLS), and
go-containerregistry's. Referrers: the API where the registry has it, the tag-schema
fallback (written and read by us) on distribution.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path

import pytest

from ocigitops.auth import CredentialResolver, Credentials, DockerConfig
from ocigitops.mediatypes import OCI_EMPTY, OCI_MANIFEST
from ocigitops.reference import parse_reference
from ocigitops.registry import Descriptor, RegistryClient, sha256_digest
from tests.helpers.cli import ocigitops
from tests.helpers.registries import Registry, loopback_alias
from tests.helpers.trees import tree_files

pytestmark = pytest.mark.integration

REV = "main@sha1:0123456789abcdef0123456789abcdef01234567"


def _tree(tmp: Path, marker: str = "a") -> Path:
    root = tmp / f"tree-{marker}"
    (root / "sub").mkdir(parents=True)
    (root / "ns.yaml").write_text(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {marker}\n")
    (root / "sub" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                         "  name: c\n")
    return root


def _client(reg: Registry) -> RegistryClient:
    creds = Credentials(username=reg.username, password=reg.password) if reg.username else None
    return RegistryClient(CredentialResolver(creds=creds, use_docker_config=False),
                          insecure=reg.insecure, ca_file=reg.ca_file, backoff_base=0.01)


def test_push_pull_tag_list_diff(any_registry: Registry, tmp_path: Path) -> None:
    reg = any_registry
    repo = f"matrix/{uuid.uuid4().hex[:8]}"
    flags = reg.cli_flags()
    tree = _tree(tmp_path)
    pushed = json.loads(ocigitops("push", "artifact", reg.url(repo) + ":v1.0.0", "--path",
                                  str(tree), "--source", "https://example.com/r", "--revision",
                                  REV, "-o", "json", *flags).stdout)
    assert pushed["tag"] == "v1.0.0" and pushed["digest"].startswith("sha256:")
    assert pushed["repository"] == f"{reg.host}/{repo}"

    out = tmp_path / "out"
    ocigitops("pull", "artifact", reg.url(repo) + ":v1.0.0", "--output", str(out), *flags)
    assert tree_files(out) == tree_files(tree)

    ocigitops("tag", "artifact", reg.url(repo) + ":v1.0.0", "--tag", "v1.1.0", "--tag",
              "latest", *flags)
    rows = json.loads(ocigitops("list", "artifacts", reg.url(repo), "-o", "json", *flags).stdout)
    assert [r["tag"] for r in rows] == ["v1.1.0", "v1.0.0", "latest"]
    assert {r["digest"] for r in rows} == {pushed["digest"]}
    semver_rows = json.loads(ocigitops("list", "artifacts", reg.url(repo), "-o", "json",
                                       "--filter-semver", ">=1.1.0", *flags).stdout)
    assert [r["tag"] for r in semver_rows] == ["v1.1.0"]
    regex_rows = json.loads(ocigitops("list", "artifacts", reg.url(repo), "-o", "json",
                                      "--filter-regex", "^lat", *flags).stdout)
    assert [r["tag"] for r in regex_rows] == ["latest"]

    same = ocigitops("diff", "artifact", reg.url(repo) + ":latest", "--path", str(tree),
                     *flags, check=False)
    assert same.returncode == 0, same.stderr
    (tree / "sub" / "cm.yaml").write_text("changed: true\n")
    changed = ocigitops("diff", "artifact", reg.url(repo) + ":latest", "--path", str(tree),
                        *flags, check=False)
    assert changed.returncode == 1 and "differs" in changed.stdout


def test_diff_tag_skips_unchanged(any_registry: Registry, tmp_path: Path) -> None:
    reg = any_registry
    repo = f"difftag/{uuid.uuid4().hex[:8]}"
    tree = _tree(tmp_path)
    base = ["--path", str(tree), "--source", "s", "--revision", REV, *reg.cli_flags()]
    first = json.loads(ocigitops("push", "artifact", reg.url(repo) + ":latest", *base,
                                 "--diff-tag", "latest", "-o", "json").stdout)
    assert first["pushed"] is True
    second = ocigitops("push", "artifact", reg.url(repo) + ":latest", *base,
                       "--diff-tag", "latest")
    assert "unchanged" in second.stderr
    (tree / "extra.yaml").write_text("a: b\n")
    third = json.loads(ocigitops("push", "artifact", reg.url(repo) + ":latest", *base,
                                 "--diff-tag", "latest", "-o", "json").stdout)
    assert third["pushed"] is True and third["digest"] != first["digest"]


def test_list_hides_signature_and_referrer_tags(embedded_registry: Registry,
                                                tmp_path: Path) -> None:
    reg = embedded_registry
    repo = f"hidden/{uuid.uuid4().hex[:8]}"
    pushed = json.loads(ocigitops("push", "artifact", reg.url(repo) + ":v1", "--path",
                                  str(_tree(tmp_path)), "--source", "s", "--revision", REV,
                                  "-o", "json", *reg.cli_flags()).stdout)
    hexd = pushed["digest"].split(":")[1]
    for t in (f"sha256-{hexd}.sig", f"sha256-{hexd}.att", f"sha256-{hexd}"):
        ocigitops("tag", "artifact", reg.url(repo) + ":v1", "--tag", t, *reg.cli_flags())
    rows = json.loads(ocigitops("list", "artifacts", reg.url(repo), "-o", "json",
                                *reg.cli_flags()).stdout)
    assert [r["tag"] for r in rows] == ["v1"]


async def _referrer_roundtrip(reg: Registry) -> tuple[str, list[Descriptor]]:
    repo = parse_reference(f"{reg.host}/referrers/{uuid.uuid4().hex[:8]}")
    async with _client(reg) as c:
        # subject: a minimal manifest
        await c.push_blob(repo, sha256_digest(b"{}"), 2, b"{}")
        layer = b"subject layer"
        await c.push_blob(repo, sha256_digest(layer), len(layer), layer)
        subject = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                              "config": {"mediaType": OCI_EMPTY, "digest": sha256_digest(b"{}"),
                                         "size": 2},
                              "layers": [{"mediaType": "application/octet-stream",
                                          "digest": sha256_digest(layer),
                                          "size": len(layer)}]}).encode()
        subject_digest, _ = await c.put_manifest(repo, subject, OCI_MANIFEST, tag="v1")
        for i, atype in enumerate(("application/vnd.example.sig", "application/vnd.example.sbom")):
            body = f"referrer {i}".encode()
            await c.push_blob(repo, sha256_digest(body), len(body), body)
            ref_manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": atype,
                "config": {"mediaType": OCI_EMPTY, "digest": sha256_digest(b"{}"), "size": 2},
                "layers": [{"mediaType": "application/octet-stream",
                            "digest": sha256_digest(body), "size": len(body)}],
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest,
                            "size": len(subject)},
                "annotations": {"n": str(i)}}).encode()
            await c.push_referrer(repo, ref_manifest, subject_digest, atype, {"n": str(i)})
        found = await c.referrers(repo, subject_digest)
        filtered = await c.referrers(repo, subject_digest, "application/vnd.example.sbom")
        assert len(found.descriptors) == 2
        assert [d.artifact_type for d in filtered.descriptors] == ["application/vnd.example.sbom"]
        return found.via, found.descriptors


def test_referrers_api_or_fallback(any_registry: Registry) -> None:
    via, descs = asyncio.run(_referrer_roundtrip(any_registry))
    assert via == ("api" if any_registry.referrers_api else "tag")
    assert {d.artifact_type for d in descs} == {"application/vnd.example.sig",
                                                 "application/vnd.example.sbom"}


async def _chunked_and_mount(reg: Registry) -> None:
    a = parse_reference(f"{reg.host}/chunks/{uuid.uuid4().hex[:8]}")
    b = parse_reference(f"{reg.host}/chunks/{uuid.uuid4().hex[:8]}")
    data = bytes(range(256)) * 4096  # 1 MiB
    digest = sha256_digest(data)
    async with _client(reg) as c:
        assert await c.push_blob(a, digest, len(data), data, chunk_size=300_000) == "uploaded"
        assert await c.push_blob(a, digest, len(data), data) == "exists"
        how = await c.push_blob(b, digest, len(data), data, mount_from=a.repository)
        # ggcr keeps one blob store for all repositories: the blob already "exists" there
        assert how in ("mounted", "uploaded", "exists")
        got = await c.fetch_blob(b, Descriptor("application/octet-stream", digest, len(data)))
        assert got == data


def test_chunked_upload_and_cross_repo_mount(any_registry: Registry) -> None:
    asyncio.run(_chunked_and_mount(any_registry))


def test_docker_config_and_dockerconfigjson(debian_auth: Registry, tmp_path: Path) -> None:
    reg = debian_auth
    auth = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    cfg = tmp_path / "docker"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    tree = _tree(tmp_path)
    ocigitops("push", "artifact", reg.url("cfg/app") + ":v1", "--path", str(tree), "--source",
              "s", "--revision", REV, "--insecure-registry", env={"DOCKER_CONFIG": str(cfg)})
    # a Kubernetes Secret of type dockerconfigjson, as the puller will receive it
    dcj = base64.b64encode(json.dumps({"auths": {reg.host: {
        "username": reg.username, "password": reg.password}}}).encode()).decode()
    secret = tmp_path / "secret.yaml"
    secret.write_text("apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n"
                      "type: kubernetes.io/dockerconfigjson\n"
                      f"data:\n  .dockerconfigjson: {dcj}\n")
    out = tmp_path / "out"
    ocigitops("pull", "artifact", reg.url("cfg/app") + ":v1", "--output", str(out),
              "--insecure-registry", "--docker-config", str(secret),
              env={"DOCKER_CONFIG": str(tmp_path / "nowhere")})
    assert tree_files(out) == tree_files(tree)
    parsed = DockerConfig.from_bytes(base64.b64decode(dcj))
    assert parsed.lookup(reg.host) == Credentials(username=reg.username, password=reg.password)


def test_tls_requires_trusted_ca(debian_tls: Registry, tmp_path: Path) -> None:
    res = ocigitops("push", "artifact", debian_tls.url("tls/app") + ":v1", "--path",
                    str(_tree(tmp_path)), "--source", "s", "--revision", REV, check=False)
    assert res.returncode != 0
    assert res.stderr.startswith("error: ") and "TLS certificate not trusted" in res.stderr


def test_plain_http_needs_insecure_flag(debian_plain: Registry, tmp_path: Path) -> None:
    # 127.0.0.1 speaks plain HTTP without the flag (the loopback rule, issue 9); the same
    # registry under another name that resolves there still needs it.
    alias = loopback_alias()
    if alias is None:
        pytest.skip("no host name other than localhost resolves to 127.0.0.1 here")
    port = debian_plain.host.rpartition(":")[2]
    res = ocigitops("push", "artifact", f"oci://{alias}:{port}/plain/app:v1", "--path",
                    str(_tree(tmp_path)), "--source", "s", "--revision", REV, check=False)
    assert res.returncode != 0
    assert "--insecure-registry" in res.stderr, res.stderr


def test_push_from_stdin(embedded_registry: Registry, tmp_path: Path) -> None:
    import subprocess
    import sys

    doc = b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: from-stdin\n"
    subprocess.run([sys.executable, "-m", "ocigitops.cli", "push", "artifact",
                    embedded_registry.url("stdin/app") + ":v1", "--path", "-", "--source", "s",
                    "--revision", REV, "--insecure-registry"], input=doc, check=True,
                   capture_output=True)
    out = tmp_path / "out"
    ocigitops("pull", "artifact", embedded_registry.url("stdin/app") + ":v1", "--output",
              str(out), "--insecure-registry")
    assert tree_files(out) == {"manifests.yaml": doc}


def test_git_checkout_defaults(embedded_registry: Registry, tmp_path: Path) -> None:
    import subprocess

    repo = tmp_path / "checkout"
    tree = _tree(repo, "git")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "GITHUB_ACTIONS": ""}
    for args in (["init", "-q", "-b", "main"],
                 ["remote", "add", "origin", "https://user:token@github.com/acme/app.git"],
                 ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env={**__import__("os").environ,
                                                                  **env})
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                         text=True, check=True).stdout.strip()
    ocigitops("push", "artifact", embedded_registry.url("git/app") + ":v1", "--path", str(tree),
              "--insecure-registry", env=env)
    meta = json.loads(ocigitops("pull", "artifact", embedded_registry.url("git/app") + ":v1",
                                "--output", str(tmp_path / "o"), "--insecure-registry",
                                "--json").stdout)
    assert meta["revision"] == f"main@sha1:{sha}"
    assert meta["source"] == "https://github.com/acme/app.git"  # credentials stripped
    gh = json.loads(ocigitops("push", "artifact", embedded_registry.url("git/gh") + ":v1",
                              "--path", str(tree), "--insecure-registry", "-o", "json",
                              env={"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/app",
                                   "GITHUB_SHA": "f" * 40, "GITHUB_REF_NAME": "release",
                                   "GITHUB_SERVER_URL": "https://github.com"}).stdout)
    meta = json.loads(ocigitops("pull", "artifact", gh["url"], "--output",
                                str(tmp_path / "o2"), "--insecure-registry", "--json").stdout)
    assert meta["source"] == "https://github.com/acme/app"
    assert meta["revision"] == "release@sha1:" + "f" * 40


async def _paginate(reg: Registry) -> list[str]:
    repo = parse_reference(f"{reg.host}/pages/{uuid.uuid4().hex[:8]}")
    async with _client(reg) as c:
        await c.push_blob(repo, sha256_digest(b"{}"), 2, b"{}")
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_EMPTY,
                                          "digest": sha256_digest(b"{}"), "size": 2},
                               "layers": []}).encode()
        for i in range(7):
            await c.put_manifest(repo, manifest, OCI_MANIFEST, tag=f"t{i}")
        return await c.list_tags(repo, page_size=2)


def test_tag_list_pagination(any_registry: Registry) -> None:
    """Tags come back complete when the registry pages them (Link header)."""
    assert sorted(asyncio.run(_paginate(any_registry))) == [f"t{i}" for i in range(7)]


def test_mutual_tls_client_certificate(tmp_path: Path) -> None:
    from tests.helpers import registries

    with registries.debian(tmp_path / "mtls", mtls=True) as reg:
        assert reg.ca_file
        certs = Path(reg.ca_file).parent
        base = ["--source", "s", "--revision", REV, "--ca-file", reg.ca_file]
        tree = _tree(tmp_path)
        refused = ocigitops("push", "artifact", reg.url("mtls/app") + ":v1", "--path",
                            str(tree), *base, check=False)
        assert refused.returncode != 0 and refused.stderr.startswith("error: cannot reach")
        ocigitops("push", "artifact", reg.url("mtls/app") + ":v1", "--path", str(tree), *base,
                  "--cert-file", str(certs / "client.pem"), "--key-file",
                  str(certs / "client.key"))
        out = tmp_path / "out"
        ocigitops("pull", "artifact", reg.url("mtls/app") + ":v1", "--output", str(out),
                  "--ca-file", reg.ca_file, "--cert-file", str(certs / "client.pem"),
                  "--key-file", str(certs / "client.key"))
        assert tree_files(out) == tree_files(tree)
