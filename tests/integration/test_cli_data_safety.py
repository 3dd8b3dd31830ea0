"""Issue 9, "Data safety first", through the real entry point (``python -m ocigitops.cli``)
against the embedded registry: a pull never deletes what the artifact did not write,
``--clean`` guards the directories it must not wipe, push refuses before uploading what
pull refuses, ``--diff-tag`` prints what is true, links and empty trees are warned about,
Flux's push flags and JSON shape, and ``list artifacts`` refuses a tag."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from tests.helpers.cli import cli, isolate_credentials, ocigitops, one_error, run
from tests.helpers.registries import Registry
from tests.helpers.tools import tool
from tests.helpers.trees import snapshot, tree_files, write

pytestmark = pytest.mark.integration

REV = "main@sha1:" + "3" * 40


@pytest.fixture(autouse=True)
def no_host_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_credentials(monkeypatch, tmp_path)


def repo(prefix: str) -> str:
    return f"safety/{prefix}-{uuid.uuid4().hex[:8]}"


def push(reg: Registry, url: str, path: Path, *extra: str,
         check: bool = True) -> tuple[int, str, str]:
    proc = ocigitops("push", "artifact", url, "--path", str(path), "--source", "s",
                     "--revision", REV, *extra, *reg.cli_flags(), check=check)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def pushed(embedded_registry: Registry, tmp_path: Path) -> str:
    """An artifact holding deploy.yaml and apps/cm.yaml; its oci:// URL with a tag."""
    tree = tmp_path / "src"
    write(tree / "deploy.yaml", "kind: Deployment\n")
    write(tree / "apps" / "cm.yaml", "kind: ConfigMap\n")
    url = embedded_registry.url(repo("app")) + ":v1"
    push(embedded_registry, url, tree)
    return url


def user_dir(root: Path) -> Path:
    """A Git checkout with a file of the user's and an older copy of the artifact."""
    write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(root / "README.md", "mine\n")
    write(root / "apps" / "cm.yaml", "old\n")
    write(root / "apps" / "local.yaml", "also mine\n")
    return root


def test_pull_keeps_the_users_files_and_git(embedded_registry: Registry, pushed: str,
                                            tmp_path: Path) -> None:
    out = user_dir(tmp_path / "checkout")
    proc = ocigitops("pull", "artifact", pushed, "--output", str(out),
                     *embedded_registry.cli_flags())
    assert "extracted 2 file(s)" in proc.stdout
    assert tree_files(out) == {".git/HEAD": b"ref: refs/heads/main\n", "README.md": b"mine\n",
                               "apps/cm.yaml": b"kind: ConfigMap\n",
                               "apps/local.yaml": b"also mine\n",
                               "deploy.yaml": b"kind: Deployment\n"}


def test_pull_into_the_current_directory(embedded_registry: Registry, pushed: str,
                                         tmp_path: Path) -> None:
    out = user_dir(tmp_path / "here")
    inode = out.stat().st_ino
    ocigitops("pull", "artifact", pushed, "-o", ".", *embedded_registry.cli_flags(), cwd=out)
    assert out.stat().st_ino == inode  # the shell's directory still exists
    assert (out / "README.md").read_text() == "mine\n"
    assert (out / "deploy.yaml").read_text() == "kind: Deployment\n"
    assert not [n for n in os.listdir(out) if n.startswith(".ocigitops")]


def test_a_refused_pull_writes_nothing(embedded_registry: Registry, tmp_path: Path) -> None:
    tree = tmp_path / "src"
    write(tree / "a.yaml", "a: 1\n")  # comes first in the archive, and is still not written
    write(tree / "big.bin", "x" * 3000)
    url = embedded_registry.url(repo("big")) + ":v1"
    push(embedded_registry, url, tree)
    out = user_dir(tmp_path / "checkout")
    before = snapshot(out)
    proc = cli("pull", "artifact", url, "--output", str(out), "--max-file-size", "2Ki",
               *embedded_registry.cli_flags())
    one_error(proc, "'big.bin' is 3000 bytes, over the 2048-byte per-file limit")
    assert snapshot(out) == before


def test_clean(embedded_registry: Registry, pushed: str, tmp_path: Path) -> None:
    flags = embedded_registry.cli_flags()
    checkout = user_dir(tmp_path / "checkout")
    before = snapshot(checkout)
    for output, cwd, why in ((".", checkout, "the current directory"),
                             (str(checkout), tmp_path, "the root of a Git work tree")):
        proc = cli("pull", "artifact", pushed, "-o", output, "--clean", *flags, cwd=cwd)
        assert proc.returncode == 2
        one_error(proc, why, "--force")
        assert snapshot(checkout) == before
    home = cli("pull", "artifact", pushed, "-o", str(tmp_path), "--clean", *flags,
               env={"HOME": str(tmp_path)})
    one_error(home, "your home directory")
    # a directory of its own is replaced; --force lets the guarded ones through
    own = tmp_path / "own"
    write(own / "stale.yaml", "stale\n")
    ocigitops("pull", "artifact", pushed, "-o", str(own), "--clean", *flags)
    assert tree_files(own) == {"apps/cm.yaml": b"kind: ConfigMap\n",
                               "deploy.yaml": b"kind: Deployment\n"}
    ocigitops("pull", "artifact", pushed, "-o", ".", "--clean", "--force", *flags, cwd=checkout)
    assert tree_files(checkout) == tree_files(own)
    one_error(cli("pull", "artifact", pushed, "-o", str(own), "--force", *flags),
              "--force only applies to --clean")


@pytest.mark.parametrize("name", ["json", "yaml"])
def test_pull_refuses_a_format_as_directory(embedded_registry: Registry, pushed: str,
                                            tmp_path: Path, name: str) -> None:
    proc = cli("pull", "artifact", pushed, "-o", name, *embedded_registry.cli_flags(),
               cwd=tmp_path)
    assert proc.returncode == 2
    one_error(proc, f"--output {name}", "--json", f"./{name}")
    assert not (tmp_path / name).exists()
    ocigitops("pull", "artifact", pushed, "-o", f"./{name}", *embedded_registry.cli_flags(),
              cwd=tmp_path)
    assert (tmp_path / name / "deploy.yaml").is_file()


def tag_exists(reg: Registry, url: str) -> bool:
    proc = cli("list", "artifacts", url.rsplit(":", 1)[0], "-o", "json", *reg.cli_flags())
    return proc.returncode == 0 and url.rsplit(":", 1)[1] in [
        r["tag"] for r in json.loads(proc.stdout)]


def test_push_refuses_what_pull_refuses_before_uploading(embedded_registry: Registry,
                                                         tmp_path: Path) -> None:
    reg = embedded_registry
    tree = tmp_path / "src"
    write(tree / "a.yaml", "a: 1\n")
    with open(tree / "huge.bin", "wb") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: refused on its size, before it is read
    url = reg.url(repo("huge")) + ":v1"
    one_error(cli("push", "artifact", url, "--path", str(tree), "--source", "s",
                  "--revision", REV, *reg.cli_flags()),
              "file 'huge.bin' is 314572800 bytes, over the 268435456-byte per-file limit",
              "--max-file-size")
    assert not tag_exists(reg, url)
    # the total, raised and lowered with sizes, and the same flags on pull
    (tree / "huge.bin").unlink()
    write(tree / "b.bin", "x" * 3000)
    one_error(cli("push", "artifact", url, "--path", str(tree), "--source", "s", "--revision",
                  REV, "--max-size", "2Ki", *reg.cli_flags()),
              "expands to more than 2048 bytes", "--max-size")
    assert not tag_exists(reg, url)
    push(reg, url, tree, "--max-size", "4Ki", "--max-file-size", "3000")
    one_error(cli("pull", "artifact", url, "-o", str(tmp_path / "o1"), "--max-size", "2Ki",
                  *reg.cli_flags()), "expands to more than 2048 bytes")
    ocigitops("pull", "artifact", url, "-o", str(tmp_path / "o2"), "--max-size", "4Ki",
              *reg.cli_flags())
    assert (tmp_path / "o2" / "b.bin").stat().st_size == 3000
    bad = cli("push", "artifact", url, "--path", str(tree), "--source", "s", "--revision",
              REV, "--max-size", "lots", *reg.cli_flags())
    assert bad.returncode == 2
    one_error(bad, "--max-size 'lots'", "512Mi")


def test_diff_tag_unchanged(embedded_registry: Registry, tmp_path: Path) -> None:
    reg = embedded_registry
    name = repo("web")
    tree = tmp_path / "src"
    write(tree / "a.yaml", "a: 1\n")
    _, first, _ = push(reg, reg.url(name) + ":latest", tree)
    digest = first.strip().rsplit("@", 1)[1]
    code, out, err = push(reg, reg.url(name) + ":v1.3.0", tree, "--diff-tag", "latest")
    assert code == 0
    assert out.strip() == f"{reg.url(name)}@{digest}"  # true: no tag that was not created
    assert "nothing pushed and tag v1.3.0 not created" in err
    assert not tag_exists(reg, reg.url(name) + ":v1.3.0")
    _, doc, _ = push(reg, reg.url(name) + ":v1.3.0", tree, "--diff-tag", "latest", "-o",
                     "json")
    assert json.loads(doc) == {"url": f"{reg.url(name)}@{digest}",
                               "repository": f"{reg.host}/{name}", "tag": "v1.3.0",
                               "digest": digest, "pushed": False, "tagged": False}
    _, doc, _ = push(reg, reg.url(name) + ":v1.3.0", tree, "--diff-tag", "latest",
                     "--tag-unchanged", "-o", "json")
    assert json.loads(doc)["tagged"] is True and json.loads(doc)["pushed"] is False
    assert tag_exists(reg, reg.url(name) + ":v1.3.0")


def test_links_and_empty_trees_are_warned_about(embedded_registry: Registry,
                                                tmp_path: Path) -> None:
    reg = embedded_registry
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = push(reg, reg.url(repo("empty")) + ":v1", empty)
    assert code == 0 and out.startswith("oci://")
    assert "warning: the artifact holds no files" in err
    outside = tmp_path / "outside"
    write(outside / "shared.yaml", "shared: 1\n")
    tree = tmp_path / "src"
    write(tree / "a.yaml", "a: 1\n")
    (tree / "shared").symlink_to(outside)
    url = reg.url(repo("links")) + ":v1"
    _, _, err = push(reg, url, tree)
    assert "warning: shared is a symbolic link to" in err and "--resolve-symlinks" in err
    ocigitops("pull", "artifact", url, "-o", str(tmp_path / "o1"), *reg.cli_flags())
    assert tree_files(tmp_path / "o1") == {"a.yaml": b"a: 1\n"}
    _, _, err = push(reg, url, tree, "--resolve-symlinks")
    assert "warning" not in err
    ocigitops("pull", "artifact", url, "-o", str(tmp_path / "o2"), *reg.cli_flags())
    assert tree_files(tmp_path / "o2") == {"a.yaml": b"a: 1\n",
                                           "shared/shared.yaml": b"shared: 1\n"}
    ocigitops("build", "artifact", "-p", str(tree), "-o", str(tmp_path / "x.tgz"),
              "--resolve-symlinks")
    # diff compares what push archived only with the same flag.
    assert cli("diff", "artifact", url, "-f", str(tree), "--resolve-symlinks",
               *reg.cli_flags()).returncode == 0
    assert cli("diff", "artifact", url, "-f", str(tree), *reg.cli_flags()).returncode == 1
    # build applies pull's limits: refused, and nothing written.
    proc = cli("build", "artifact", "-p", str(tree), "-o", str(tmp_path / "big.tgz"),
               "--resolve-symlinks", "--max-file-size", "4")
    assert proc.returncode == 3 and "4" in proc.stderr, proc.stderr
    assert not (tmp_path / "big.tgz").exists()


def test_flux_push_flags_and_json(embedded_registry: Registry, tmp_path: Path) -> None:
    reg = embedded_registry
    tree = tmp_path / "src"
    write(tree / "a.yaml", "a: 1\n")
    name = repo("flux")
    ours = json.loads(ocigitops(
        "push", "artifact", reg.url(name) + ":ours", "-f", str(tree), "--source", "s",
        "--revision", REV, "-a", "one=1", "--annotations", "two=2", "--annotation", "three=3",
        "-o", "json", *reg.cli_flags()).stdout)
    flux = json.loads(run([tool("flux"), "push", "artifact", reg.url(name) + ":flux", "-f",
                           str(tree), "--source", "s", "--revision", REV,
                           "--insecure-registry", "-o", "json"]).stdout)
    assert list(ours)[:4] == list(flux) == ["url", "repository", "tag", "digest"]
    for doc in (ours, flux):
        assert doc["url"] == f"oci://{doc['repository']}@{doc['digest']}"
    listed = json.loads(ocigitops("list", "artifacts", reg.url(name), "-o", "json",
                                  *reg.cli_flags()).stdout)
    assert {r["tag"] for r in listed} == {"ours", "flux"}
    manifest = json.loads(cli("pull", "artifact", reg.url(name) + ":ours", "-o",
                              str(tmp_path / "o"), "--json", *reg.cli_flags()).stdout)
    assert manifest["annotations"] == {"one": "1", "two": "2", "three": "3"}


def test_list_refuses_a_tag(embedded_registry: Registry) -> None:
    proc = cli("list", "artifacts", embedded_registry.url(repo("list")) + ":v1",
               *embedded_registry.cli_flags())
    assert proc.returncode == 2
    one_error(proc, "drop ':v1'", "--filter-regex")
