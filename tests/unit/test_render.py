"""Unit tests of ocigitops.render: validation, output, sandbox checks, tool lookup.

No real kustomize or helm runs here: where render() must run a tool, a small shell
script stands in for it, records its arguments and environment, and prints canned
output. The real tools are exercised in tests/integration/test_render_tools.py.
"""

from __future__ import annotations

import re
import shlex
import stat
from pathlib import Path

import pytest
import yaml

from ocigitops import render as r
from ocigitops.errors import RenderError, ToolNotFoundError, UsageError
from tests.helpers.trees import write

pytestmark = pytest.mark.unit

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
"""


def fake_tool(path: Path, *, stdout: str = "", stderr: str = "", exit_code: int = 0,
              record: Path | None = None, sleep: float = 0) -> Path:
    """An executable that records argv (one per line) and env, then prints canned output."""
    lines = ["#!/bin/sh"]
    if record is not None:
        lines += [f'for a in "$@"; do printf "%s\\n" "$a"; done > {shlex.quote(str(record))}',
                  f"env > {shlex.quote(str(record))}.env"]
    if sleep:
        lines.append(f"sleep {sleep}")
    if stdout:
        lines.append(f"cat <<'__OUT__'\n{stdout}__OUT__")
    if stderr:
        lines.append(f"cat >&2 <<'__ERR__'\n{stderr}__ERR__")
    lines.append(f"exit {exit_code}")
    write(path, "\n".join(lines) + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment where no kustomize, helm or kubectl can be found."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("OCIGITOPS_TOOLS", str(tmp_path / "no-tools"))
    monkeypatch.delenv("OCIGITOPS_KUSTOMIZE", raising=False)
    monkeypatch.delenv("OCIGITOPS_HELM", raising=False)
    return empty


@pytest.fixture
def kustomize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tools: Path) -> Path:
    """A fake kustomize printing two objects; its argv lands in ``<tmp>/argv``.

    The working directory is ``tmp_path``, so messages name ``repo/...`` paths.
    """
    monkeypatch.chdir(tmp_path)
    tool = fake_tool(tmp_path / "fake" / "kustomize", stdout=DEPLOYMENT + "---\n" + SERVICE,
                     record=tmp_path / "argv")
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", str(tool))
    return tmp_path / "argv"


def overlay(root: Path, kustomization: str, name: str = "app") -> Path:
    """A directory ``root/name`` holding ``kustomization`` and a deployment file."""
    write(root / name / "deployment.yaml", DEPLOYMENT)
    write(root / name / "kustomization.yaml", kustomization)
    return root / name


# ------------------------------------------------------------------ validation


def check(tmp_path: Path, text: str) -> int:
    f = write(tmp_path / "manifests.yaml", text)
    return r.validate_manifests([f], base=tmp_path)


def test_validate_counts_objects_and_skips_empty_documents(tmp_path: Path) -> None:
    text = "---\n" + DEPLOYMENT + "---\n---\n# only a comment\n---\n" + SERVICE
    assert check(tmp_path, text) == 2


def test_validate_several_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", DEPLOYMENT)
    b = write(tmp_path / "sub" / "b.yaml", SERVICE + "---\n" + DEPLOYMENT)
    assert r.validate_manifests([a, b]) == 3


def test_validate_empty_file_is_zero(tmp_path: Path) -> None:
    assert check(tmp_path, "") == 0


@pytest.mark.parametrize(("doc", "problem"), [
    ("kind: ConfigMap\nmetadata: {name: x}\n", "missing apiVersion"),
    ("apiVersion: v1\nmetadata: {name: x}\n", "missing kind"),
    ("apiVersion: v1\nkind: ConfigMap\n", "missing metadata.name"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {a: b}}\n", "missing metadata.name"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ''}\n",
     "metadata.name must be a non-empty string"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: 3}\n",
     "metadata.name must be a non-empty string"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: [x]\n", "metadata must be a mapping"),
    ("apiVersion: 1\nkind: ConfigMap\nmetadata: {name: x}\n",
     "apiVersion must be a non-empty string"),
    ("- a\n- b\n", "not a mapping (got a list)"),
    ("just text\n", "not a mapping (got a string)"),
])
def test_validate_names_document_and_problem(tmp_path: Path, doc: str, problem: str) -> None:
    text = DEPLOYMENT + "---\n" + SERVICE + "---\n" + doc
    with pytest.raises(RenderError) as e:
        check(tmp_path, text)
    assert str(e.value) == f"render: manifests.yaml document 3: {problem}"


def test_validate_invalid_yaml_names_document_and_line(tmp_path: Path) -> None:
    text = DEPLOYMENT + "---\napiVersion: v1\nkind: a: b\n"
    with pytest.raises(RenderError) as e:
        check(tmp_path, text)
    message = str(e.value)
    assert message.startswith("render: manifests.yaml document 2: invalid YAML: ")
    # libyaml and the pure-Python parser word it differently; both say where.
    assert "mapping values are not allowed" in message
    assert message.endswith("(line 7, column 8)")
    assert "\n" not in message


def test_validate_refuses_python_tags(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="document 1: invalid YAML"):
        check(tmp_path, "!!python/object/apply:os.system ['true']\n")


def test_validate_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_bytes(b"apiVersion: v1\nkind: \xff\n")
    with pytest.raises(RenderError, match=r"m\.yaml: not UTF-8"):
        r.validate_manifests([f], base=tmp_path)


def test_validate_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="cannot read"):
        r.validate_manifests([tmp_path / "nope.yaml"])


def test_validate_expands_lists(tmp_path: Path) -> None:
    items = {"apiVersion": "v1", "kind": "List", "items": [
        yaml.safe_load(DEPLOYMENT), yaml.safe_load(SERVICE),
        {"apiVersion": "v1", "kind": "ConfigMapList", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]},
    ]}
    empty = {"apiVersion": "v1", "kind": "List", "items": None}
    assert check(tmp_path, yaml.safe_dump_all([items, empty])) == 3


def test_validate_list_item_errors_name_the_item(tmp_path: Path) -> None:
    doc = {"apiVersion": "v1", "kind": "List",
           "items": [yaml.safe_load(DEPLOYMENT), {"apiVersion": "v1", "kind": "Secret"}]}
    with pytest.raises(RenderError) as e:
        check(tmp_path, DEPLOYMENT + "---\n" + yaml.safe_dump(doc))
    assert str(e.value) == "render: manifests.yaml document 2 item 2: missing metadata.name"


def test_validate_list_items_must_be_a_list(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="document 1: items must be a list"):
        check(tmp_path, "apiVersion: v1\nkind: List\nitems: {a: b}\n")


def test_kind_ending_in_list_without_items_is_an_object(tmp_path: Path) -> None:
    # A CRD kind such as "AllowList" is an ordinary object when it has no items.
    text = "apiVersion: example.com/v1\nkind: AllowList\nmetadata: {name: a}\n"
    assert check(tmp_path, text) == 1


# --------------------------------------------------------------- mode handling


def test_none_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert r.render(tmp_path, "none", out) == []
    assert not out.exists()


@pytest.mark.parametrize("kwargs", [
    {"values": [Path("v.yaml")]}, {"release_name": "x"}, {"namespace": "ns"},
])
def test_helm_options_refused_for_other_modes(tmp_path: Path, kwargs: dict[str, object]
                                              ) -> None:
    with pytest.raises(UsageError, match="only apply to helm"):
        r.render(tmp_path, "kustomize", tmp_path / "out", **kwargs)  # type: ignore[arg-type]


def test_unknown_mode(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown mode"):
        r.render(tmp_path, "jsonnet", tmp_path / "out")  # type: ignore[arg-type]


# ----------------------------------------------------------- output and tool run


def test_kustomize_output_and_generated_kustomization(tmp_path: Path, kustomize: Path
                                                      ) -> None:
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml]\n")
    out = tmp_path / "out"
    files = r.render(src, "kustomize", out)
    assert files == [out / "kustomization.yaml", out / "manifests.yaml"]
    assert yaml.safe_load((out / "kustomization.yaml").read_text()) == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["manifests.yaml"],
    }
    assert r.validate_manifests([out / "manifests.yaml"]) == 2


def test_kustomize_runs_sandboxed(tmp_path: Path, kustomize: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("GITHUB_TOKEN", "secret-token")
    monkeypatch.setenv("KUBECONFIG", "/root/.kube/config")
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml]\n")
    r.render(src, "kustomize", tmp_path / "out")
    argv = kustomize.read_text().splitlines()
    assert argv[0] == "build"
    built = Path(argv[1])
    # The build ran on a copy, not on the source, and the copy is gone.
    assert built != src.resolve()
    assert not built.exists()
    assert argv[2:] == ["--load-restrictor", "LoadRestrictionsRootOnly"]
    assert not any(a.startswith(("--enable", "--network")) for a in argv)
    env = dict(line.split("=", 1) for line in
               (tmp_path / "argv.env").read_text().splitlines() if "=" in line)
    assert "secret-token" not in env.values()
    assert not {k for k in env if k.lower().endswith("_proxy")}
    assert env["GIT_ALLOW_PROTOCOL"] == "none"
    assert not env["KUBECONFIG"].startswith("/root")
    assert env["HOME"] != str(Path.home())


def test_existing_kustomization_in_out_dir_is_kept(tmp_path: Path, kustomize: Path) -> None:
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml]\n")
    out = tmp_path / "out"
    mine = write(out / "Kustomization", "resources: [manifests.yaml, extra.yaml]\n")
    assert r.render(src, "kustomize", out) == [out / "manifests.yaml"]
    assert mine.read_text() == "resources: [manifests.yaml, extra.yaml]\n"
    assert not (out / "kustomization.yaml").exists()


def test_invalid_output_is_not_written(tmp_path: Path, no_tools: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tool = fake_tool(tmp_path / "k", stdout=DEPLOYMENT + "---\napiVersion: v1\nkind: X\n")
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", str(tool))
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml]\n")
    with pytest.raises(RenderError) as e:
        r.render(src, "kustomize", tmp_path / "out")
    assert str(e.value) == "render: manifests.yaml document 2: missing metadata.name"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("stderr", "expected"), [
    ("# Warning: 'bases' is deprecated\nError: accumulating resources: boom\n",
     "accumulating resources: boom"),
    ("Error: YAML parse error on c/templates/x.yaml: bad\nUse --debug flag to render out "
     "invalid YAML\n", "YAML parse error on c/templates/x.yaml: bad"),
    ("panic: something\n\ngoroutine 1 [running]:\nmain.main()\n", "main.main()"),
    ("Error: trouble configuring builtin HelmChartInflationGenerator with config: `\n"
     "name: hello\n`: must specify --enable-helm\n",
     "trouble configuring builtin HelmChartInflationGenerator with config: ` name: hello `: "
     "must specify --enable-helm"),
    ("", "exited with status 3"),
])
def test_tool_failure_is_its_last_meaningful_line(tmp_path: Path, no_tools: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  stderr: str, expected: str) -> None:
    tool = fake_tool(tmp_path / "k", stderr=stderr, exit_code=3)
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", str(tool))
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml]\n")
    with pytest.raises(RenderError) as e:
        r.render(src, "kustomize", tmp_path / "out")
    assert str(e.value) == f"render: kustomize: {expected}"


def test_long_tool_errors_keep_head_and_tail(tmp_path: Path, no_tools: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = "Error: where it failed: " + "x" * 5000 + " what to fix\n"
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", str(fake_tool(tmp_path / "k", stderr=stderr,
                                                             exit_code=1)))
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml]\n")
    with pytest.raises(RenderError) as e:
        r.render(src, "kustomize", tmp_path / "out")
    message = str(e.value)
    assert message.startswith("render: kustomize: where it failed: xxx")
    assert " ... " in message and message.endswith("xxx what to fix")
    assert len(message) < 700


def test_sandbox_paths_are_rewritten_in_errors(tmp_path: Path, no_tools: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake prints the path it was given, as kustomize does in "no such file" errors.
    tool = tmp_path / "k"
    write(tool, '#!/bin/sh\necho "Error: lstat $2/missing.yaml: no such file" >&2\nexit 1\n')
    tool.chmod(0o755)
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", str(tool))
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml]\n")
    with pytest.raises(RenderError) as e:
        r.render(src, "kustomize", tmp_path / "out")
    assert str(e.value) == (f"render: kustomize: lstat {src.resolve()}/missing.yaml: "
                            "no such file")


def test_timeout_kills_the_tool(tmp_path: Path, no_tools: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    tool = fake_tool(tmp_path / "k", sleep=30)
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", str(tool))
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml]\n")
    with pytest.raises(RenderError, match=r"render: kustomize did not finish within 0\.5s"):
        r.render(src, "kustomize", tmp_path / "out", timeout=0.5)


def test_helm_arguments_and_homes(tmp_path: Path, no_tools: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tool = fake_tool(tmp_path / "fake" / "helm", stdout=SERVICE, record=tmp_path / "argv")
    monkeypatch.setenv("OCIGITOPS_HELM", str(tool))
    chart = write(tmp_path / "My_Chart" / "Chart.yaml", "apiVersion: v2\nname: c\n").parent
    values = [write(tmp_path / "a.yaml", "x: 1\n"), write(tmp_path / "b.yaml", "y: 2\n")]
    files = r.render(chart, "helm", tmp_path / "out", values=values, namespace="demo")
    assert [f.name for f in files] == ["kustomization.yaml", "manifests.yaml"]
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:2] == ["template", "my-chart"]
    assert Path(argv[2]).name == "My_Chart" and Path(argv[2]) != chart.resolve()
    assert argv[3:] == ["--include-crds", "--skip-tests", "--namespace", "demo",
                        "--values", str(values[0].resolve()),
                        "--values", str(values[1].resolve())]
    env = (tmp_path / "argv.env").read_text()
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        assert f"{var}=/" in env
        assert f"{var}={Path.home()}" not in env


def test_helm_explicit_release_name(tmp_path: Path, no_tools: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    tool = fake_tool(tmp_path / "helm", stdout=SERVICE, record=tmp_path / "argv")
    monkeypatch.setenv("OCIGITOPS_HELM", str(tool))
    chart = write(tmp_path / "c" / "Chart.yaml", "apiVersion: v2\nname: c\n").parent
    r.render(chart, "helm", tmp_path / "out", release_name="web")
    assert (tmp_path / "argv").read_text().splitlines()[:2] == ["template", "web"]


def test_helm_input_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no Chart\.yaml"):
        r.render(tmp_path, "helm", tmp_path / "out")
    chart = write(tmp_path / "c" / "Chart.yaml", "apiVersion: v2\nname: c\n").parent
    with pytest.raises(UsageError, match=r"values file .* does not exist"):
        r.render(chart, "helm", tmp_path / "out", values=[tmp_path / "nope.yaml"])


# ---------------------------------------------------- remote and escape checks


REMOTE = [
    "https://github.com/org/repo//deploy?ref=v1.0.0",
    "github.com/org/repo/deploy?ref=main",
    "git::https://gitlab.com/org/repo.git//base",
    "git@github.com:org/repo.git/base",
    "ssh://git@example.com/org/repo.git",
    "http://example.com/manifests/all.yaml",
    "gitlab.com/org/repo/base",
    "example.com/org/repo",  # scheme-less host path kustomize would try to clone
]


@pytest.mark.parametrize("value", REMOTE)
@pytest.mark.parametrize("field", ["resources", "bases", "components"])
def test_remote_resources_refused_before_running(tmp_path: Path, kustomize: Path,
                                                 field: str, value: str) -> None:
    src = overlay(tmp_path / "repo", yaml.safe_dump({field: ["deployment.yaml", value]}))
    with pytest.raises(RenderError) as e:
        r.render(src, "kustomize", tmp_path / "out")
    assert str(e.value) == (f"render: repo/app/kustomization.yaml: {field}: {value!r} is a remote "
                            "reference; remote resources are refused, vendor them into the "
                            "tree")
    assert not kustomize.exists()  # the tool never ran


@pytest.mark.parametrize(("doc", "field"), [
    ({"helmCharts": [{"name": "redis", "repo": "https://charts.bitnami.com/bitnami"}]},
     "helmCharts[0].repo"),
    ({"helmCharts": [{"name": "x", "repo": "oci://ghcr.io/org/charts"}]}, "helmCharts[0].repo"),
    ({"openapi": {"path": "https://example.com/schema.json"}}, "openapi.path"),
    ({"patches": [{"path": "https://example.com/patch.yaml"}]}, "patches[0].path"),
    ({"patchesStrategicMerge": ["https://example.com/p.yaml"]}, "patchesStrategicMerge"),
    ({"configMapGenerator": [{"name": "c", "files": ["k=https://example.com/f"]}]},
     "configMapGenerator[0].files"),
    ({"secretGenerator": [{"name": "s", "envs": ["http://example.com/env"]}]},
     "secretGenerator[0].envs"),
    ({"crds": ["https://example.com/crd.yaml"]}, "crds"),
    ({"transformers": ["github.com/org/repo/transformers?ref=v1"]}, "transformers"),
])
def test_remote_references_in_other_fields(tmp_path: Path, kustomize: Path,
                                           doc: dict[str, object], field: str) -> None:
    src = overlay(tmp_path / "repo", yaml.safe_dump({"resources": ["deployment.yaml"], **doc}))
    expected = re.escape(f"render: repo/app/kustomization.yaml: {field}: ")
    with pytest.raises(RenderError, match=expected):
        r.render(src, "kustomize", tmp_path / "out")
    assert not kustomize.exists()


def test_remote_reference_in_a_reached_base(tmp_path: Path, kustomize: Path) -> None:
    repo = tmp_path / "repo"
    overlay(repo, "resources: [https://example.com/x.yaml]\n", name="base")
    src = overlay(repo, "resources: [../base]\n", name="overlay")
    with pytest.raises(RenderError, match=r"render: repo/base/kustomization\.yaml: resources: "):
        r.render(src, "kustomize", tmp_path / "out", root=repo)
    assert not kustomize.exists()


def test_remote_reference_in_any_copied_kustomization(tmp_path: Path, kustomize: Path
                                                      ) -> None:
    # Not reachable from the overlay, but inside the copied tree: refused all the same.
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml]\n")
    write(src / "unused" / "kustomization.yml", "bases: [github.com/org/repo?ref=v1]\n")
    with pytest.raises(RenderError, match=r"render: repo/app/unused/kustomization\.yml: bases: "):
        r.render(src, "kustomize", tmp_path / "out")
    assert not kustomize.exists()


def test_local_references_and_inline_content_are_not_remote(tmp_path: Path,
                                                            kustomize: Path) -> None:
    repo = tmp_path / "repo"
    overlay(repo, "resources: [deployment.yaml]\n", name="base")
    doc = {
        "resources": ["../base", "deployment.yaml"],
        "patches": [{"patch": "- op: add\n  path: /metadata/annotations/u\n"
                              "  value: https://example.com/docs\n"}],
        "patchesStrategicMerge": ['{"metadata": {"annotations": {"u": "https://x.io"}}}'],
        "configMapGenerator": [{"name": "c", "literals": ["URL=https://example.com"]}],
    }
    src = overlay(repo, yaml.safe_dump(doc), name="overlay")
    r.render(src, "kustomize", tmp_path / "out", root=repo)
    assert kustomize.exists()


def test_find_remote_references_lists_every_finding(tmp_path: Path) -> None:
    write(tmp_path / "a" / "kustomization.yaml", "resources: [https://e.com/a.yaml, x.yaml]\n")
    write(tmp_path / "b" / "Kustomization", "components: [git@github.com:o/r.git]\n")
    write(tmp_path / "c" / "kustomization.yaml", "resources: [../a]\n")
    write(tmp_path / ".git" / "kustomization.yaml", "resources: [https://e.com/g.yaml]\n")
    write(tmp_path / "d" / "kustomization.yaml", "{ not yaml\n")
    assert r.find_remote_references(tmp_path) == [
        "a/kustomization.yaml: resources: 'https://e.com/a.yaml'",
        "b/Kustomization: components: 'git@github.com:o/r.git'",
    ]


def test_reference_outside_the_tree_refused(tmp_path: Path, kustomize: Path) -> None:
    write(tmp_path / "secret.yaml", "token: hunter2\n")
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml, ../../secret.yaml]\n")
    with pytest.raises(RenderError, match=r"'\.\./\.\./secret\.yaml' points outside the tree"):
        r.render(src, "kustomize", tmp_path / "out", root=tmp_path / "repo")
    assert not kustomize.exists()


def test_absolute_reference_refused(tmp_path: Path, kustomize: Path) -> None:
    src = overlay(tmp_path / "repo", "resources: [/etc/passwd]\n")
    with pytest.raises(RenderError, match="'/etc/passwd' is an absolute path"):
        r.render(src, "kustomize", tmp_path / "out")
    assert not kustomize.exists()


def test_symlink_out_of_the_tree_refused(tmp_path: Path, kustomize: Path) -> None:
    write(tmp_path / "outside.yaml", DEPLOYMENT)
    src = overlay(tmp_path / "repo", "resources: [deployment.yaml]\n")
    (src / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    with pytest.raises(RenderError,
                       match=r"render: repo/app/link\.yaml is a symlink to .*outside the tree"):
        r.render(src, "kustomize", tmp_path / "out")
    assert not kustomize.exists()


def test_reference_through_symlink_out_of_the_tree_refused(tmp_path: Path,
                                                           kustomize: Path) -> None:
    overlay(tmp_path / "elsewhere", "resources: [deployment.yaml]\n", name="base")
    src = overlay(tmp_path / "repo", "resources: [base]\n")
    (src / "base").symlink_to(tmp_path / "elsewhere" / "base")
    with pytest.raises(RenderError, match="'base' points outside the tree"):
        r.render(src, "kustomize", tmp_path / "out")


def test_base_outside_src_needs_a_root(tmp_path: Path, kustomize: Path) -> None:
    repo = tmp_path / "repo"
    overlay(repo, "resources: [deployment.yaml]\n", name="base")
    src = overlay(repo, "resources: [../base]\n", name="overlay")
    with pytest.raises(RenderError, match="points outside the tree"):
        r.render(src, "kustomize", tmp_path / "out")
    # Inside a git work tree the work tree is the root.
    (repo / ".git").mkdir()
    r.render(src, "kustomize", tmp_path / "out")
    assert kustomize.exists()


def test_sandbox_holds_only_reached_directories(tmp_path: Path, no_tools: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake records the files the sandbox holds, relative to its root.
    listing = tmp_path / "listing"
    tool = tmp_path / "k"
    write(tool, f'#!/bin/sh\ncd "$2/../.." && find . | sort > {shlex.quote(str(listing))}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", str(tool))
    repo = tmp_path / "repo"
    write(repo / ".git" / "config", "[core]\n")
    write(repo / "secrets" / "key.pem", "private\n")
    base = overlay(repo / "app", "resources: [deployment.yaml]\n", name="base")
    write(base / ".git", "gitdir: ../../.git/modules/base\n")  # a submodule's link
    src = overlay(repo / "app", "resources: [../base]\n", name="prod")
    r.render(src, "kustomize", tmp_path / "out")
    assert listing.read_text().splitlines() == [
        ".", "./app",
        "./app/base", "./app/base/deployment.yaml", "./app/base/kustomization.yaml",
        "./app/prod", "./app/prod/deployment.yaml", "./app/prod/kustomization.yaml",
    ]


def test_missing_kustomization(tmp_path: Path, kustomize: Path) -> None:
    with pytest.raises(RenderError, match=r"no kustomization\.yaml"):
        r.render(tmp_path, "kustomize", tmp_path / "out")


def test_unparsable_kustomization_refused(tmp_path: Path, kustomize: Path) -> None:
    src = overlay(tmp_path / "repo", "resources: [unclosed\n")
    with pytest.raises(RenderError,
                       match=r"render: repo/app/kustomization\.yaml: invalid YAML: .*line"):
        r.render(src, "kustomize", tmp_path / "out")


# ------------------------------------------------------------------ tool lookup


def test_missing_kustomize_names_the_installer(no_tools: Path) -> None:
    with pytest.raises(ToolNotFoundError, match=r"scripts/install-tools kustomize"):
        r.find_kustomize()


def test_missing_helm_names_the_installer(no_tools: Path) -> None:
    with pytest.raises(ToolNotFoundError, match=r"scripts/install-tools helm"):
        r.find_helm()


def test_env_override_must_be_executable(tmp_path: Path, no_tools: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", str(tmp_path / "nope"))
    with pytest.raises(ToolNotFoundError, match=r"OCIGITOPS_KUSTOMIZE=.* is not an executable"):
        r.find_kustomize()


def test_lookup_order(tmp_path: Path, no_tools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubectl = fake_tool(no_tools / "kubectl")
    assert r.find_kustomize() == [str(kubectl), "kustomize"]
    cache = tmp_path / "no-tools"
    fake_tool(cache / "kustomize-v5.9.0" / "bin" / "kustomize")
    newest = fake_tool(cache / "kustomize-v5.10.0" / "bin" / "kustomize")
    assert r.find_kustomize() == [str(newest), "build"]
    on_path = fake_tool(no_tools / "kustomize")
    assert r.find_kustomize() == [str(on_path), "build"]
    override = fake_tool(tmp_path / "mine")
    monkeypatch.setenv("OCIGITOPS_KUSTOMIZE", str(override))
    assert r.find_kustomize() == [str(override), "build"]


def test_helm_lookup_in_cache(tmp_path: Path, no_tools: Path) -> None:
    helm = fake_tool(tmp_path / "no-tools" / "helm-v3.19.0" / "bin" / "helm")
    assert r.find_helm() == [str(helm)]
