"""The artifact wire format: deterministic tarballs, ignore rules, Go-style JSON,
manifest/config shape and parsing, tag filtering for ``list artifacts``."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from ocigitops import mediatypes as mt
from ocigitops.artifact import (
    GO_ZERO_TIME,
    Metadata,
    build_config,
    build_layer,
    build_manifest,
    go_json,
    parse_manifest,
    sorted_map,
)
from ocigitops.errors import NotAnArtifactError, UsageError
from ocigitops.ignore import DEFAULT_IGNORE, effective_patterns, matcher, read_sourceignore
from ocigitops.registry import Descriptor
from ocigitops.tags import filter_tags
from ocigitops.tarball import BLOCK, walk, write_tar

pytestmark = pytest.mark.unit

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def tar_bytes(root: Path, ignore: list[str] | None = None) -> bytes:
    buf = io.BytesIO()
    written = write_tar(walk(root, matcher(ignore or [])), buf)
    assert written == len(buf.getvalue())
    return buf.getvalue()


def members(raw: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        return tf.getmembers()


def names(raw: bytes) -> list[str]:
    return [m.name for m in members(raw)]


def make_tree(root: Path) -> Path:
    (root / "apps" / "podinfo").mkdir(parents=True)
    (root / "apps" / "podinfo" / "deploy.yaml").write_text("kind: Deployment\n")
    (root / "apps" / "podinfo" / "svc.yaml").write_text("kind: Service\n" * 200)
    (root / "infra").mkdir()
    (root / "infra" / "ns.yaml").write_text("kind: Namespace\n")
    (root / "kustomization.yaml").write_text("resources: []\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    return root


# ------------------------------------------------------------------ tarballs


def test_same_tree_gives_same_bytes(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a")
    first = tar_bytes(a)
    assert tar_bytes(a) == first
    # A copy made at another time (other mtimes, inode order) archives identically.
    b = make_tree(tmp_path / "b")
    for p in [b, *b.rglob("*")]:
        os.utime(p, (1_000_000_000, 1_234_567_890))
    if os.geteuid() == 0:
        for p in b.rglob("*"):
            os.chown(p, 4321, 8765)
    os.chmod(b, os.stat(a).st_mode)
    assert tar_bytes(b) == first
    for m in members(first):
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")


def test_build_layer_is_deterministic(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    one = build_layer(tree, tmp_path / "one.tgz")
    os.utime(tree / "infra" / "ns.yaml", (5, 5))
    two = build_layer(tree, tmp_path / "two.tgz")
    assert (one.path.read_bytes()) == (two.path.read_bytes())
    assert one.digest == two.digest
    assert one.digest == "sha256:" + hashlib.sha256(one.path.read_bytes()).hexdigest()
    assert one.size == one.path.stat().st_size
    raw = gzip.decompress(one.path.read_bytes())
    assert one.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert raw == tar_bytes(tree)
    # gzip header as Go writes it: no name, mtime 0, XFL 0, OS 255
    assert one.path.read_bytes()[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert one.descriptor() == Descriptor(mt.FLUX_CONTENT, one.digest, one.size)


def test_modes_kept(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    os.chmod(root, 0o751)
    (root / "exec.sh").write_text("x")
    os.chmod(root / "exec.sh", 0o755)
    (root / "private").write_text("x")
    os.chmod(root / "private", 0o600)
    (root / "suid").write_text("x")
    os.chmod(root / "suid", 0o4755)
    (root / "dir").mkdir()
    os.chmod(root / "dir", 0o750)
    modes = {m.name: m.mode for m in members(tar_bytes(root))}
    assert modes == {".": 0o751, "dir": 0o750, "exec.sh": 0o755, "private": 0o600,
                     "suid": 0o4755}


def test_symlinks_and_fifos_skipped(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "sub").mkdir(parents=True)
    (root / "real.yaml").write_text("a: 1\n")
    os.symlink("real.yaml", root / "link.yaml")
    os.symlink("/etc/passwd", root / "sub" / "passwd")
    os.symlink("../sub", root / "sub" / "loop")
    os.mkfifo(root / "pipe")
    raw = tar_bytes(root)
    ms = members(raw)
    assert [m.name for m in ms] == [".", "real.yaml", "sub"]
    assert all(m.isreg() or m.isdir() for m in ms)


def test_order_is_walk_order_by_bytes(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    for n in ("b", "B", "a.txt", "a-b", "_u", "é", "Z", "1"):
        (root / n).write_text(n)
    (root / "a").mkdir()
    (root / "a" / "z").write_text("z")
    (root / "a" / "Y").write_text("Y")
    # Byte order inside each directory ('1' < 'B' < 'Z' < '_' < 'a' < 'a-b' < 'a.txt'
    # < 'b' < 'é'), and a directory's children right after it (filepath.Walk).
    assert names(tar_bytes(root)) == [".", "1", "B", "Z", "_u", "a", "a/Y", "a/z", "a-b",
                                      "a.txt", "b", "é"]


def test_archive_framing(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t")
    raw = tar_bytes(root)
    # Exactly two zero blocks at the end, no padding to a 10 KiB record (Go's writer).
    assert len(raw) % BLOCK == 0
    assert raw[-2 * BLOCK:] == b"\0" * (2 * BLOCK)
    assert raw[-3 * BLOCK:-2 * BLOCK] != b"\0" * BLOCK
    # USTAR headers with the "ustar\0" "00" magic, directories without trailing slash
    assert raw[257:265] == b"ustar\x0000"
    assert names(raw) == [".", "apps", "apps/podinfo", "apps/podinfo/deploy.yaml",
                          "apps/podinfo/svc.yaml", "infra", "infra/ns.yaml",
                          "kustomization.yaml", "run.sh"]
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        f = tf.extractfile("apps/podinfo/svc.yaml")
        assert f is not None
        assert f.read() == b"kind: Service\n" * 200
        assert tf.getmember("apps").isdir()


def test_long_names_use_ustar_prefix_then_pax(tmp_path: Path) -> None:
    root = tmp_path / "t"
    deep = root / ("d" * 60)
    deep.mkdir(parents=True)
    splittable = f"{'d' * 60}/{'f' * 60}"        # 121 chars, fits prefix + name
    (root / splittable).write_text("split")
    unsplittable = "g" * 120                      # a base name over 100 chars
    (root / unsplittable).write_text("pax")
    (root / "é.yaml").write_text("utf8")          # not ASCII: PAX as in Go
    raw = tar_bytes(root)

    # Find the raw header of the splittable name: name field = base, prefix = directory.
    headers = [raw[i:i + BLOCK] for i in range(0, len(raw), BLOCK)]
    split_hdr = [h for h in headers if h[:60] == b"f" * 60]
    assert len(split_hdr) == 1
    assert split_hdr[0][345:405] == b"d" * 60
    assert split_hdr[0][156:157] == b"0"

    ms = {m.name: m for m in members(raw)}
    assert set(ms) == {".", "d" * 60, splittable, unsplittable, "é.yaml"}
    assert ms[splittable].pax_headers == {}
    assert ms[unsplittable].pax_headers == {"path": unsplittable}
    assert ms["é.yaml"].pax_headers == {"path": "é.yaml"}
    # Exactly two PAX extended headers ('x'), none for the splittable name.
    assert sum(1 for h in headers if h[156:157] == b"x" and h[257:262] == b"ustar") == 2
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        for name, text in ((splittable, b"split"), (unsplittable, b"pax"),
                           ("é.yaml", b"utf8")):
            f = tf.extractfile(name)
            assert f is not None and f.read() == text


def test_single_file_is_a_one_entry_archive(tmp_path: Path) -> None:
    # flux 2.7 archives a lone file under its base name, with no "." entry
    f = tmp_path / "manifests.yaml"
    f.write_text("kind: ConfigMap\n")
    os.chmod(f, 0o640)
    layer = build_layer(f, tmp_path / "out.tgz")
    ms = members(gzip.decompress(layer.path.read_bytes()))
    assert [(m.name, m.mode, m.size) for m in ms] == [("manifests.yaml", 0o640, 16)]


# ------------------------------------------------------------------ ignore rules


def test_effective_patterns() -> None:
    assert effective_patterns(None) == list(DEFAULT_IGNORE)
    assert ".git/" in DEFAULT_IGNORE and "*.tar.gz" in DEFAULT_IGNORE
    assert effective_patterns(["*.md, docs/ ,,"]) == ["*.md", "docs/"]
    assert effective_patterns([]) == []
    assert effective_patterns(None, ["*.bak,tmp/", "x"]) == [*DEFAULT_IGNORE, "*.bak",
                                                             "tmp/", "x"]
    assert effective_patterns(["*.md"], ["*.bak"]) == ["*.md", "*.bak"]
    assert matcher([]) is None


def ignore_tree(root: Path) -> Path:
    for rel in (".git/config", ".git/objects/ab/cd", ".gitignore", "logo.png",
                "photo.JPG", "bundle.tar.gz", "deploy.yaml", "keep.yaml", "notes.md",
                "build/out.yaml", "sub/build", "sub/deep/x.yaml", "docs/readme.md"):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    return root


def test_default_ignore(tmp_path: Path) -> None:
    root = ignore_tree(tmp_path / "t")
    got = names(tar_bytes(root, effective_patterns(None)))
    assert got == [".", "build", "build/out.yaml", "deploy.yaml", "docs", "docs/readme.md",
                   "keep.yaml", "notes.md", "photo.JPG", "sub", "sub/build", "sub/deep",
                   "sub/deep/x.yaml"]


def test_replaced_ignore_list_drops_the_default(tmp_path: Path) -> None:
    root = ignore_tree(tmp_path / "t")
    got = names(tar_bytes(root, effective_patterns(["*.md"])))
    assert ".gitignore" in got and ".git/config" in got and "logo.png" in got
    assert "notes.md" not in got and "docs/readme.md" not in got


def test_directory_patterns_and_negation(tmp_path: Path) -> None:
    root = ignore_tree(tmp_path / "t")
    got = names(tar_bytes(root, effective_patterns(None, ["build/", "*.yaml,!keep.yaml"])))
    # "build/" drops the directory and its content, not a file named build
    assert "build" not in got and "build/out.yaml" not in got
    assert "sub/build" in got
    # negation re-includes, at any depth rules apply
    assert "keep.yaml" in got
    assert "deploy.yaml" not in got and "sub/deep/x.yaml" not in got
    # anchored pattern only matches at the root
    got2 = names(tar_bytes(root, ["/build", "docs/*.md"]))
    assert "build" not in got2 and "sub/build" in got2
    assert "docs" in got2 and "docs/readme.md" not in got2


def test_read_sourceignore(tmp_path: Path) -> None:
    assert read_sourceignore(tmp_path) == []
    (tmp_path / ".sourceignore").write_text("# comment\n\n*.md\n  # indented comment\n"
                                            "!keep.md\ntmp/\n")
    assert read_sourceignore(tmp_path) == ["*.md", "!keep.md", "tmp/"]


# ------------------------------------------------------------------ Go JSON


def test_go_json_escapes_like_go() -> None:
    doc = {"z": "<a href='x'>&amp;</a>", "a": "line\u2028sep\u2029end", "é": "ü 😀",
           "ctl": "tab\tnl\nquote\"back\\", "n": [1, True, None, 1.5]}
    out = go_json(doc)
    assert out == ('{"z":"\\u003ca href=\'x\'\\u003e\\u0026amp;\\u003c/a\\u003e",'
                   '"a":"line\\u2028sep\\u2029end","é":"ü 😀",'
                   '"ctl":"tab\\tnl\\nquote\\"back\\\\","n":[1,true,null,1.5]}').encode()
    assert json.loads(out) == doc
    # keys keep insertion (Go struct) order; sorted_map gives Go's map order (bytes)
    assert list(json.loads(go_json({"b": 1, "a": 2}))) == ["b", "a"]
    assert list(sorted_map({"b": "1", "a": "2", "B": "3", "é": "4", "_": "5"})) == [
        "B", "_", "a", "b", "é"]


def test_build_config_exact_bytes() -> None:
    diff_id = "sha256:" + "d" * 64
    assert build_config(diff_id) == (
        '{"architecture":"","created":"0001-01-01T00:00:00Z",'
        '"history":[{"created":"0001-01-01T00:00:00Z"}],"os":"",'
        '"rootfs":{"type":"layers","diff_ids":["' + diff_id + '"]},"config":{}}').encode()
    assert GO_ZERO_TIME == "0001-01-01T00:00:00Z"


def test_build_manifest_shape() -> None:
    config = Descriptor(mt.FLUX_CONFIG, D1, 233)
    layer = Descriptor(mt.FLUX_CONTENT, D2, 1024)
    meta = Metadata(source="https://github.com/org/repo", revision="main@sha1:abc",
                    created="2024-01-02T03:04:05Z",
                    annotations={"team": "<ops>&co", mt.ANN_SOURCE: "override"})
    ann = meta.to_annotations()
    assert list(ann) == [mt.ANN_CREATED, mt.ANN_REVISION, mt.ANN_SOURCE, "team"]
    assert ann[mt.ANN_SOURCE] == "override"  # user annotations win
    data = build_manifest(config, [layer], ann)
    assert data == (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        '"config":{"mediaType":"application/vnd.cncf.flux.config.v1+json","size":233,'
        f'"digest":"{D1}"}},'
        '"layers":[{"mediaType":"application/vnd.cncf.flux.content.v1.tar+gzip",'
        f'"size":1024,"digest":"{D2}"}}],'
        '"annotations":{"org.opencontainers.image.created":"2024-01-02T03:04:05Z",'
        '"org.opencontainers.image.revision":"main@sha1:abc",'
        '"org.opencontainers.image.source":"override",'
        '"team":"\\u003cops\\u003e\\u0026co"}}').encode()
    # no annotations: the key is omitted, as Go's omitempty does
    assert b"annotations" not in build_manifest(config, [layer], {})

    parsed = parse_manifest(data)
    assert parsed.config == config
    assert parsed.layers == [layer]
    assert parsed.select_layer() == layer
    assert parsed.metadata.source == "override"
    assert parsed.metadata.revision == "main@sha1:abc"
    assert parsed.metadata.created == "2024-01-02T03:04:05Z"
    assert parsed.metadata.annotations == {"team": "<ops>&co"}


# ------------------------------------------------------------------ parsing


def _doc(**kw: object) -> bytes:
    base: dict[str, object] = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.FLUX_CONFIG, "digest": D1, "size": 2},
        "layers": [{"mediaType": mt.FLUX_CONTENT, "digest": D2, "size": 10}]}
    base.update(kw)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("data", "media_type", "fragment"),
    [
        (json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}).encode(),
         "", "points to an image index"),
        (json.dumps({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST,
                     "manifests": []}).encode(), "", "points to an image index"),
        (json.dumps({"schemaVersion": 2, "manifests": []}).encode(), "",
         "points to an image index"),
        (json.dumps({"schemaVersion": 2}).encode(), mt.OCI_INDEX, "points to an image index"),
        (b'{"hello": "world"}', "", "unsupported manifest media type (none)"),
        (b'{"hello": "world"}', "application/json",
         "unsupported manifest media type application/json"),
        (b"{not json", "", "manifest is not valid JSON"),
        (b"", "", "manifest is not valid JSON"),
        (b'["a"]', "", "manifest is not a JSON object"),
        (_doc(config=None), "", "malformed manifest"),
        (_doc(layers=[{"mediaType": mt.FLUX_CONTENT}]), "", "malformed manifest"),
        (_doc(config={"digest": D1, "size": "big"}), "", "malformed manifest"),
    ],
)
def test_parse_manifest_refuses(data: bytes, media_type: str, fragment: str) -> None:
    with pytest.raises(NotAnArtifactError) as e:
        parse_manifest(data, media_type)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_parse_manifest_accepts_docker_and_untyped() -> None:
    docker = parse_manifest(_doc(mediaType=mt.DOCKER_MANIFEST))
    assert docker.select_layer().digest == D2
    untyped = parse_manifest(_doc(mediaType=None), mt.OCI_MANIFEST)
    assert untyped.config.digest == D1
    typed = parse_manifest(_doc(artifactType="application/vnd.example+type"))
    assert typed.artifact_type == "application/vnd.example+type"


def test_select_layer_messages() -> None:
    image = parse_manifest(_doc(layers=[
        {"mediaType": mt.OCI_LAYER_TAR_GZIP, "digest": D2, "size": 1},
        {"mediaType": mt.HELM_CHART, "digest": D3, "size": 1}]))
    with pytest.raises(NotAnArtifactError) as e:
        image.select_layer()
    assert str(e.value) == (
        f"no layer of media type {mt.FLUX_CONTENT} (layers: {mt.HELM_CHART},"
        f" {mt.OCI_LAYER_TAR_GZIP}) (pass --layer-selector MEDIATYPE to choose another)")
    assert image.select_layer(mt.HELM_CHART).digest == D3
    with pytest.raises(NotAnArtifactError) as e:
        image.select_layer("application/x-other")
    assert str(e.value) == (f"no layer of media type application/x-other (layers:"
                            f" {mt.HELM_CHART}, {mt.OCI_LAYER_TAR_GZIP})")
    empty = parse_manifest(_doc(layers=[]))
    with pytest.raises(NotAnArtifactError, match=r"\(layers: none\)"):
        empty.select_layer()


# ------------------------------------------------------------------ tag filters

SIG = "sha256-" + "a" * 64
TAGS = ["1.0.0", "1.2.0", "1.2.5", "1.3.0", "2.0.0", "2.0.0-rc.1", "1.2.4-beta.1", "v1.5.0",
        "0.9.0", "latest", "1.10.0", "1.9.0", SIG, f"{SIG}.sig", f"{SIG}.att", f"{SIG}.sbom",
        "sha256-short.sig"]


def test_filter_hides_signature_and_referrer_tags() -> None:
    got = filter_tags(TAGS)
    assert not any(t.startswith(SIG) for t in got)
    # only the exact sha256-<64 hex>[.sig|.att|.sbom] shapes are hidden
    assert "sha256-short.sig" in got
    assert f"{SIG}.other" in filter_tags([f"{SIG}.other"])
    # descending byte order, as flux list artifacts sorts without a filter
    assert got == sorted(got, reverse=True)
    assert got[:3] == ["v1.5.0", "sha256-short.sig", "latest"]


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        (">=1.0.0 <2.0.0", ["1.10.0", "1.9.0", "v1.5.0", "1.3.0", "1.2.5", "1.2.0", "1.0.0"]),
        (">=1.0.0, <1.3.0", ["1.2.5", "1.2.0", "1.0.0"]),
        ("1.x", ["1.10.0", "1.9.0", "v1.5.0", "1.3.0", "1.2.5", "1.2.0", "1.0.0"]),
        ("1.2.x", ["1.2.5", "1.2.0"]),
        ("~1.2", ["1.2.5", "1.2.0"]),
        ("~1.2.3", ["1.2.5"]),
        ("^1.2.3", ["1.10.0", "1.9.0", "v1.5.0", "1.3.0", "1.2.5"]),
        ("^0.9", ["0.9.0"]),
        ("~1.2 || >=2.0.0", ["2.0.0", "1.2.5", "1.2.0"]),
        ("<1.0.0 || 1.9.0", ["1.9.0", "0.9.0"]),
        ("!=1.2.5 >=1.2.0 <1.3", ["1.2.0"]),
        ("*", ["2.0.0", "1.10.0", "1.9.0", "v1.5.0", "1.3.0", "1.2.5", "1.2.0", "1.0.0",
               "0.9.0"]),
        (">=3.0.0", []),
    ],
)
def test_semver_ranges(constraint: str, expected: list[str]) -> None:
    # prereleases (2.0.0-rc.1, 1.2.4-beta.1) never match a range that does not name one
    assert filter_tags(TAGS, semver_range=constraint) == expected


def test_semver_range_naming_a_prerelease_matches_prereleases() -> None:
    tags = ["1.9.0", "2.0.0-rc.1", "2.0.0-rc.2", "2.0.0"]
    assert filter_tags(tags, semver_range=">=2.0.0-rc.2") == ["2.0.0", "2.0.0-rc.2"]
    assert filter_tags(tags, semver_range="2.0.0-rc.1") == ["2.0.0-rc.1"]


def test_regex_and_semver_combined() -> None:
    assert filter_tags(TAGS, regex=r"^v?1\.", semver_range=">=1.3.0") == [
        "1.10.0", "1.9.0", "v1.5.0", "1.3.0"]
    assert filter_tags(TAGS, regex="rc|beta") == ["2.0.0-rc.1", "1.2.4-beta.1"]


def test_bad_filters_are_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"--filter-regex '\(' does not compile"):
        filter_tags(TAGS, regex="(")
    with pytest.raises(UsageError, match="invalid semver range '>=abc'"):
        filter_tags(TAGS, semver_range=">=abc")
