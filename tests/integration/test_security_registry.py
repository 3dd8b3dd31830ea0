"""Issue 7: a registry the attacker controls, attacking the client and the CLI.

The attacker can push anything to the registry and lie in any HTTP answer, but holds no
trusted key. Each test puts :class:`tests.helpers.hostile.HostileRegistry` (a real HTTP
server that forwards to the embedded registry and rewrites chosen answers) between the real
CLI or RegistryClient and the content, and checks the attack is refused with one error line,
quickly, with bounded memory. Each failed on the code before the fix (noted per test).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import resource
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ocigitops import mediatypes as mt
from ocigitops.artifact import Metadata, build_config, build_manifest
from ocigitops.errors import DigestMismatchError, RegistryError
from ocigitops.reference import parse_reference
from ocigitops.registry import Descriptor, RegistryClient, sha256_digest
from tests.helpers.cli import cli, isolate_credentials, one_error
from tests.helpers.hostile import HostileRegistry, Reply, Request, drip, endless, manifest_path
from tests.helpers.registries import Registry

pytestmark = pytest.mark.integration

REV = "main@sha1:0123456789abcdef0123456789abcdef01234567"
ENV = {"COSIGN_PASSWORD": "correct horse"}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No docker credentials of the host."""
    isolate_credentials(monkeypatch, tmp_path)


@pytest.fixture
def hostile(embedded_registry: Registry) -> Iterator[HostileRegistry]:
    """A lying registry in front of the embedded one (which holds what was pushed)."""
    with HostileRegistry(embedded_registry.host) as reg:
        yield reg


def push_tree(host: str, repo: str, tmp: Path, name: str, *extra: str) -> tuple[str, bytes]:
    """Push a one-file artifact with the CLI; returns (digest, manifest bytes)."""
    tree = tmp / f"tree-{name}"
    tree.mkdir()
    (tree / "cm.yaml").write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
    out = cli("push", "artifact", f"oci://{host}/{repo}:{name}", "--path", str(tree),
              "--source", "s", "--revision", REV, "-o", "json", "--insecure-registry",
              *extra, env=ENV)
    assert out.returncode == 0, out.stderr
    digest = str(json.loads(out.stdout)["digest"])

    async def get() -> bytes:
        async with RegistryClient(insecure=True) as c:
            m = await c.get_manifest(parse_reference(f"{host}/{repo}@{digest}"))
            return m.data

    return digest, asyncio.run(get())


@pytest.fixture(scope="module")
def cosign_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    res = cli("generate", "key-pair", cwd=d, env=ENV)
    assert res.returncode == 0, res.stderr
    return d / "cosign.key", d / "cosign.pub"


# --- finding 1: the registry chooses the digest behind a pin -------------------------------

def _answer_for(repo: str, asked: str, named: str, data: bytes,
                serve_bytes: bool) -> Callable[[Request], Reply | None]:
    def rule(req: Request) -> Reply | None:
        if req.path != manifest_path(repo, asked) or req.method not in ("HEAD", "GET"):
            return None
        headers = {"Docker-Content-Digest": named, "Content-Type": mt.OCI_MANIFEST,
                   "Content-Length": str(len(data))}
        if req.method == "HEAD" or serve_bytes:
            return Reply(200, headers, data)
        return None
    return rule


@pytest.mark.parametrize("serve_bytes", [False, True], ids=["head-lies", "get-lies-too"])
def test_pinned_digest_is_the_digest_verified(hostile: HostileRegistry, tmp_path: Path,
                                              cosign_keys: tuple[Path, Path],
                                              serve_bytes: bool) -> None:
    """``verify @B`` with B unsigned while the registry names signed A: before the fix it
    exited 0 "verified A" (and ``pull @B`` then extracted B)."""
    key, pub = cosign_keys
    repo = f"sec/pin-{str(serve_bytes).lower()}"
    signed, signed_bytes = push_tree(hostile.host, repo, tmp_path, "signed", "--sign",
                                     "--key", str(key))
    unsigned, _ = push_tree(hostile.host, repo, tmp_path, "unsigned")
    hostile.rules.append(_answer_for(repo, unsigned, signed, signed_bytes, serve_bytes))
    res = cli("verify", "artifact", f"oci://{hostile.host}/{repo}@{unsigned}", "--key",
              str(pub), "--insecure-registry", "-o", "json")
    if serve_bytes:
        # The bytes served for B are A's: they do not hash to B, nothing is verified.
        one_error(res, "hashes to")
    else:
        # The answer naming A is never used: B itself is verified, and it is unsigned.
        assert res.returncode == 1, res.stderr
        doc = json.loads(res.stdout)
        assert doc["digest"] == unsigned and doc["verified"] is False
    # The honest pin of the signed digest still verifies through the same registry.
    ok = cli("verify", "artifact", f"oci://{hostile.host}/{repo}@{signed}", "--key",
             str(pub), "--insecure-registry", "-o", "json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["digest"] == signed, ok.stderr


def test_tag_digest_is_checked_against_the_bytes(hostile: HostileRegistry, tmp_path: Path,
                                                 cosign_keys: tuple[Path, Path]) -> None:
    """A tag whose HEAD names signed A while the bytes served for A are B's: the digest a
    tag resolves to is only used once the manifest fetched by it hashes to it."""
    key, pub = cosign_keys
    repo = "sec/tagpin"
    signed, _ = push_tree(hostile.host, repo, tmp_path, "signed", "--sign", "--key", str(key))
    _, unsigned_bytes = push_tree(hostile.host, repo, tmp_path, "unsigned")

    def rule(req: Request) -> Reply | None:
        if req.method == "GET" and req.path == manifest_path(repo, signed):
            return Reply(200, {"Content-Type": mt.OCI_MANIFEST,
                               "Docker-Content-Digest": signed}, unsigned_bytes)
        return None

    hostile.rules.append(rule)
    res = cli("verify", "artifact", f"oci://{hostile.host}/{repo}:signed", "--key", str(pub),
              "--insecure-registry")
    one_error(res, "hashes to")


# --- finding 3: stalls and unbounded reads -------------------------------------------------

def test_slow_drip_manifest_hits_the_overall_timeout(hostile: HostileRegistry,
                                                     tmp_path: Path) -> None:
    """One byte a second passes every per-read timeout; before the fix ``--timeout 3`` let
    this run for as many seconds as the manifest has bytes."""
    repo = "sec/drip"
    _, data = push_tree(hostile.host, repo, tmp_path, "v1")
    stop = threading.Event()

    def rule(req: Request) -> Reply | None:
        if req.method == "GET" and req.path == manifest_path(repo, "v1"):
            return Reply(200, {"Content-Type": mt.OCI_MANIFEST,
                               "Content-Length": str(len(data))}, drip(data, 0.5, stop),
                         length=False)
        return None

    hostile.rules.append(rule)
    start = time.monotonic()
    try:
        res = cli("pull", "artifact", f"oci://{hostile.host}/{repo}:v1", "--output",
                  str(tmp_path / "out"), "--insecure-registry", "--timeout", "3")
    finally:
        stop.set()
    took = time.monotonic() - start
    one_error(res, "within 3s")
    assert took < 15, took
    assert not (tmp_path / "out").exists()


def test_endless_error_body_is_not_read_whole(hostile: HostileRegistry) -> None:
    """An error answer of up to 1 TiB: only its first 64 KiB are read (before the fix a
    400 MiB body took 981 MiB of RSS)."""
    sent = [0]

    def counted() -> Iterator[bytes]:
        for chunk in endless(total=400 * 1024 * 1024):
            sent[0] += len(chunk)
            yield chunk

    hostile.rules.append(lambda req: Reply(400, {"Content-Type": "text/plain"}, counted(),
                                           length=False)
                         if "/manifests/" in req.path else None)

    async def go() -> None:
        async with RegistryClient(insecure=True, max_retries=0) as c:
            await c.get_manifest(parse_reference(f"{hostile.host}/sec/errbody:v1"))

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(RegistryError, match="xxxx"):
        asyncio.run(go())
    assert time.monotonic() - start < 10
    # The server stops once the client hangs up; socket buffers hold a few MiB at most.
    time.sleep(0.5)
    assert sent[0] < 32 * 1024 * 1024, sent[0]
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grew_kib < 64 * 1024, grew_kib


def test_endless_error_body_through_the_cli(hostile: HostileRegistry, tmp_path: Path) -> None:
    hostile.rules.append(lambda req: Reply(500, {}, endless(total=400 * 1024 * 1024),
                                           length=False)
                         if "/manifests/" in req.path else None)
    res = cli("pull", "artifact", f"oci://{hostile.host}/sec/err500:v1", "--output",
              str(tmp_path / "out"), "--insecure-registry", "--timeout", "20")
    one_error(res)
    assert not (tmp_path / "out").exists()


def test_self_linking_referrers_pages(hostile: HostileRegistry, tmp_path: Path,
                                      cosign_keys: tuple[Path, Path]) -> None:
    """A referrers page whose ``next`` link is itself: before the fix it was followed a
    thousand times (minutes and gigabytes with big pages)."""
    _, pub = cosign_keys
    repo = "sec/reflinks"
    digest, _ = push_tree(hostile.host, repo, tmp_path, "v1")
    page = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 10,
         "artifactType": "application/vnd.example.sbom"}]}).encode()

    def rule(req: Request) -> Reply | None:
        if "/referrers/" in req.path:
            return Reply(200, {"Content-Type": mt.OCI_INDEX,
                               "Link": f'<{req.path}>; rel="next"'}, page)
        return None

    hostile.rules.append(rule)
    res = cli("verify", "artifact", f"oci://{hostile.host}/{repo}@{digest}", "--key", str(pub),
              "--insecure-registry", timeout=60)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    calls = [p for m, p in hostile.requests if "/referrers/" in p]
    assert len(calls) <= 3, len(calls)


def test_self_linking_tag_list(hostile: HostileRegistry) -> None:
    page = json.dumps({"name": "sec/tags", "tags": ["v1", "v2"]}).encode()
    hostile.rules.append(lambda req: Reply(200, {"Content-Type": "application/json",
                                                 "Link": f'<{req.path}?x=1>; rel="next"'},
                                           page) if req.path.endswith("/tags/list") else None)

    async def go() -> list[str]:
        async with RegistryClient(insecure=True) as c:
            return await c.list_tags(parse_reference(f"{hostile.host}/sec/tags"))

    with pytest.raises(RegistryError, match="loop"):
        asyncio.run(go())
    assert len([p for _, p in hostile.requests if "/tags/list" in p]) <= 3


def test_padded_layer_is_refused_before_download(embedded_registry: Registry,
                                                 tmp_path: Path) -> None:
    """A tiny archive padded to 64 MiB with ``--max-size 1000000``: before the fix the
    whole blob was spooled to disk and the pull succeeded."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("cm.yaml")
        body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
        info.size = len(body)
        tf.addfile(info, io.BytesIO(body))
    layer = gzip.compress(buf.getvalue()) + b"\0" * (64 * 1024 * 1024)
    push_layer(embedded_registry.host, "sec/padded", layer, diff_id=sha256_digest(buf.getvalue()))
    res = cli("pull", "artifact", f"oci://{embedded_registry.host}/sec/padded:v1", "--output",
              str(tmp_path / "out"), "--insecure-registry", "--max-size", "1000000")
    one_error(res, "over the", "limit")
    assert not (tmp_path / "out").exists()


def push_layer(host: str, repo: str, layer: bytes, *, diff_id: str, tag: str = "v1") -> str:
    """Push ``layer`` as the content layer of an otherwise valid Flux artifact."""
    meta = Metadata(source="s", revision=REV, created="2024-01-01T00:00:00Z")

    async def go() -> str:
        ref = parse_reference(f"{host}/{repo}:{tag}")
        async with RegistryClient(insecure=True) as c:
            config = build_config(diff_id)
            cdesc = Descriptor(mt.FLUX_CONFIG, sha256_digest(config), len(config))
            await c.push_blob(ref, cdesc.digest, cdesc.size, config)
            ldesc = Descriptor(mt.FLUX_CONTENT, sha256_digest(layer), len(layer))
            await c.push_blob(ref, ldesc.digest, ldesc.size, layer)
            data = build_manifest(cdesc, [ldesc], meta.to_annotations())
            digest, _ = await c.put_manifest(ref, data, mt.OCI_MANIFEST, tag=tag)
            return digest

    return asyncio.run(go())


def _raw_tar(*blocks: bytes) -> bytes:
    return b"".join(blocks) + b"\0" * 1024


def _header(name: bytes, size: int, typeflag: bytes = b"0", mode: bytes = b"0000644\0",
            size_field: bytes | None = None) -> bytes:
    """A USTAR header with a correct checksum (fields given raw where a test needs it)."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = mode
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = size_field if size_field is not None else f"{size:011o}\0".encode()
    h[136:148] = b"00000000000\0"
    h[156:157] = typeflag
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b" " * 8
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h)


def _pax(records: bytes) -> bytes:
    pad = -len(records) % 512
    return _header(b"PaxHeader", len(records), b"x") + records + b"\0" * pad


def _record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n += 1
    return str(n).encode() + body


HOSTILE_TARS = {
    # Before the fix: extraction looped for ever (in pull and in the controller's thread).
    "pax-negative-size": _raw_tar(_pax(_record(b"size", b"-512")),
                                  _header(b"a.yaml", 0)),
    # Before the fix: a raw UnicodeDecodeError traceback.
    "pax-key-not-utf8": _raw_tar(_pax(_record(b"\xff\xfe", b"x")), _header(b"a.yaml", 0)),
    # Python's int() takes a sign and "_"; Go's reader (Flux's) does not.
    "octal-size-underscore": _raw_tar(_header(b"a.yaml", 0, size_field=b"0000_000000\0")),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
def test_hostile_tar_headers(case: str, embedded_registry: Registry, tmp_path: Path) -> None:
    raw = HOSTILE_TARS[case]
    repo = f"sec/tar-{case}"
    push_layer(embedded_registry.host, repo, gzip.compress(raw), diff_id=sha256_digest(raw))
    start = time.monotonic()
    res = cli("pull", "artifact", f"oci://{embedded_registry.host}/{repo}:v1", "--output",
              str(tmp_path / "out"), "--insecure-registry", timeout=60)
    one_error(res, "archive")
    assert time.monotonic() - start < 30
    assert not (tmp_path / "out").exists()


def test_base256_mode_extracts(embedded_registry: Registry, tmp_path: Path) -> None:
    """A GNU base-256 mode wider than a C long: before the fix a raw OverflowError
    traceback; Go's reader takes it, and so do we (only the permission bits are used)."""
    raw = _raw_tar(_header(b"a.yaml", 0, mode=b"\x80" + b"\xff" * 7))
    push_layer(embedded_registry.host, "sec/base256", gzip.compress(raw),
               diff_id=sha256_digest(raw))
    res = cli("pull", "artifact", f"oci://{embedded_registry.host}/sec/base256:v1",
              "--output", str(tmp_path / "out"), "--insecure-registry")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "a.yaml").stat().st_mode & 0o700 == 0o700


# --- finding 4: digests the client could not check -----------------------------------------

@pytest.mark.parametrize("alg", ["sha512", "upper-sha256", "sha384"])
def test_layer_digest_algorithms(alg: str, hostile: HostileRegistry, tmp_path: Path) -> None:
    """A manifest naming a ``sha512:`` layer let the registry serve any bytes of the declared
    size (only lower-case sha256 was hashed); other encodings must be refused outright."""
    import hashlib

    evil = gzip.compress(_raw_tar(_header(b"evil.yaml", 0)))
    good = gzip.compress(_raw_tar(_header(b"good.yaml", 0)))
    evil = evil + b"\0" * (len(good) - len(evil)) if len(evil) < len(good) else evil
    good = good + b"\0" * (len(evil) - len(good))
    if alg == "sha512":
        layer_digest = "sha512:" + hashlib.sha512(good).hexdigest()
    elif alg == "upper-sha256":
        layer_digest = "SHA256:" + hashlib.sha256(good).hexdigest().upper()
    else:
        layer_digest = "sha384:" + hashlib.sha384(good).hexdigest()
    config = build_config(sha256_digest(b""))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.FLUX_CONFIG, "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": mt.FLUX_CONTENT, "digest": layer_digest, "size": len(good)}],
        "annotations": Metadata(source="s", revision=REV).to_annotations()}).encode()
    repo = f"sec/alg-{alg}"

    def rule(req: Request) -> Reply | None:
        if req.path == manifest_path(repo, "v1") and req.method in ("GET", "HEAD"):
            return Reply(200, {"Content-Type": mt.OCI_MANIFEST,
                               "Docker-Content-Digest": sha256_digest(manifest)}, manifest)
        if req.path.startswith(f"/v2/{repo}/blobs/"):
            return Reply(200, {"Content-Type": "application/octet-stream"}, evil)
        return None

    hostile.rules.append(rule)
    res = cli("pull", "artifact", f"oci://{hostile.host}/{repo}:v1", "--output",
              str(tmp_path / "out"), "--insecure-registry")
    one_error(res)
    assert not (tmp_path / "out").exists()
    if alg == "sha512":
        assert "hashes to" in res.stderr
    else:
        assert "digest" in res.stderr


# --- finding 6: raw exceptions from hostile answers ----------------------------------------

def test_deeply_nested_manifest(hostile: HostileRegistry, tmp_path: Path) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    hostile.rules.append(lambda req: Reply(200, {"Content-Type": mt.OCI_MANIFEST}, body)
                         if "/manifests/" in req.path else None)
    res = cli("pull", "artifact", f"oci://{hostile.host}/sec/nested:v1", "--output",
              str(tmp_path / "out"), "--insecure-registry")
    one_error(res)


def test_truncated_manifest_body(hostile: HostileRegistry, tmp_path: Path) -> None:
    """Content-Length promises 1000 bytes, 10 arrive: before the fix a raw
    httpx.RemoteProtocolError traceback."""
    def rule(req: Request) -> Reply | None:
        if "/manifests/" in req.path:
            return Reply(200, {"Content-Type": mt.OCI_MANIFEST, "Content-Length": "1000"},
                         iter([b'{"schemaVe']), length=False)
        return None

    hostile.rules.append(rule)
    res = cli("pull", "artifact", f"oci://{hostile.host}/sec/trunc:v1", "--output",
              str(tmp_path / "out"), "--insecure-registry")
    one_error(res)


def test_head_naming_a_non_canonical_digest(hostile: HostileRegistry, tmp_path: Path) -> None:
    repo = "sec/headdigest"
    digest, data = push_tree(hostile.host, repo, tmp_path, "v1")
    hostile.rules.append(lambda req: Reply(200, {
        "Docker-Content-Digest": digest.upper(), "Content-Type": mt.OCI_MANIFEST,
        "Content-Length": str(len(data))}, data)
        if req.method == "HEAD" and "/manifests/" in req.path else None)

    async def go() -> None:
        async with RegistryClient(insecure=True) as c:
            await c.head_manifest(parse_reference(f"{hostile.host}/{repo}:v1"))

    with pytest.raises(DigestMismatchError, match="canonical"):
        asyncio.run(go())



def test_head_by_digest_naming_another_digest(hostile: HostileRegistry, tmp_path: Path) -> None:
    """The controller HEADs a ``ref.digest`` pin each interval: before the fix it stored
    whatever digest the answer named (an unsigned source lost its pin; a signed one could
    be rolled back to any older signed release)."""
    repo = "sec/headpin"
    old, old_bytes = push_tree(hostile.host, repo, tmp_path, "old")
    new, _ = push_tree(hostile.host, repo, tmp_path, "new")
    hostile.rules.append(_answer_for(repo, new, old, old_bytes, serve_bytes=False))

    async def go() -> Descriptor:
        async with RegistryClient(insecure=True) as c:
            return await c.head_manifest(parse_reference(f"{hostile.host}/{repo}@{new}"))

    with pytest.raises(DigestMismatchError, match="never replaced"):
        asyncio.run(go())
