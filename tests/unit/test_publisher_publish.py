"""The library functions behind the artifact commands (``ocigitops.publisher.publish``,
``ocigitops.publisher.signing.sign_artifact``, ``ocigitops.pull.pull``,
``ocigitops.verifier.request.verify``), against the embedded registry in a thread.

These are what the CLI, the GitHub Action and tests call; the CLI only prints their
results, so the results are checked here field by field.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ocigitops.errors import InvalidReferenceError, NotFoundError, UsageError
from ocigitops.options import RegistryOptions
from ocigitops.publisher.keygen import write_key_pair
from ocigitops.publisher.publish import (
    PushRequest,
    artifacts_table,
    diff,
    list_repository,
    publish,
    tag,
)
from ocigitops.publisher.signing import SignOptions, sign_artifact
from ocigitops.pull import pull
from ocigitops.regserver import BackgroundRegistry
from ocigitops.verifier.request import VerifyRequest, verify

pytestmark = pytest.mark.unit

T = TypeVar("T")
SRC = "https://example.com/acme/app"
REV = "main@sha1:" + "1" * 40


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (root / "sub" / "b.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n")
    return root


@pytest.fixture
def no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GitHub Actions variables: --source/--revision defaults come from Git only."""
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)


def request(reg: BackgroundRegistry, repo_tag: str, path: Path, **kw: Any) -> PushRequest:
    return PushRequest(url=f"oci://{reg.host}/{repo_tag}", path=str(path), source=SRC,
                       revision=REV, **kw)


def test_publish_pushes_and_reports(reg: BackgroundRegistry, remote: RegistryOptions,
                                    tree: Path) -> None:
    said: list[str] = []
    result = run(publish(request(reg, "acme/app:v1", tree, annotations=["team=platform"],
                                 reproducible=True), remote, say=said.append))
    assert result.push.pushed
    # Issue 9: the URL is the digest URL, as flux push artifact -o json prints it.
    assert result.push.url == f"oci://{reg.host}/acme/app@{result.digest}"
    assert result.repository_url == f"oci://{reg.host}/acme/app"
    assert result.digest.startswith("sha256:") and result.digest == result.push.digest
    assert result.rendered is None and result.signature is None
    assert said == []  # nothing rendered, nothing signed: no step to tell
    assert result.to_json() == {"url": result.push.url, "repository": f"{reg.host}/acme/app",
                                "tag": "v1", "digest": result.digest, "pushed": True,
                                "tagged": True}
    # --reproducible: the same content and metadata give the same digest.
    again = run(publish(request(reg, "acme/app:v1-again", tree, annotations={"team": "platform"},
                                reproducible=True), remote))
    assert again.digest == result.digest


def test_publish_diff_tag_skips_identical_content(reg: BackgroundRegistry,
                                                  remote: RegistryOptions, tree: Path) -> None:
    first = run(publish(request(reg, "acme/app:latest", tree), remote))
    same = run(publish(request(reg, "acme/app:v2", tree, diff_tag="latest"), remote))
    assert not same.push.pushed
    assert same.digest == first.digest
    assert same.push.message.startswith("content unchanged from tag latest")
    (tree / "new.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\n")
    changed = run(publish(request(reg, "acme/app:v3", tree, diff_tag="latest"), remote))
    assert changed.push.pushed and changed.digest != first.digest
    # A diff tag that does not exist yet: push.
    fresh = run(publish(request(reg, "acme/other:v1", tree, diff_tag="latest"), remote))
    assert fresh.push.pushed


def test_publish_ignore_list_is_applied(reg: BackgroundRegistry, remote: RegistryOptions,
                                        tree: Path, tmp_path: Path) -> None:
    run(publish(request(reg, "acme/app:v1", tree, ignore=["sub/"]), remote))
    pulled = run(pull(f"oci://{reg.host}/acme/app:v1", tmp_path / "out", remote))
    assert pulled.files == 1
    assert [p.name for p in (tmp_path / "out").rglob("*.yaml")] == ["a.yaml"]


@pytest.mark.parametrize(("kw", "message"), [
    ({"url_suffix": ""}, "a tag is required"),
    ({"render": "kustomize", "path": "-"}, "--render needs --path to be a directory"),
    ({"values": [Path("v.yaml")]}, "--values and --release-name need --render helm"),
    ({"release_name": "x"}, "--values and --release-name need --render helm"),
    ({"render": "kustomize", "namespace": "x"}, "namespace only apply to helm"),
    ({"annotations": ["no-equals"]}, "--annotation 'no-equals': use key=value"),
])
def test_publish_refuses_bad_requests_before_pushing(reg: BackgroundRegistry,
                                                     remote: RegistryOptions, tree: Path,
                                                     kw: dict[str, Any], message: str) -> None:
    suffix = kw.pop("url_suffix", ":v1")
    req = PushRequest(url=f"oci://{reg.host}/acme/bad{suffix}", path=str(kw.pop("path", tree)),
                      source=SRC, revision=REV, **kw)
    with pytest.raises(UsageError, match=re.escape(message)):
        run(publish(req, remote))
    assert not (reg.storage / "acme" / "bad").exists()  # nothing reached the registry


def test_publish_needs_source_and_revision_outside_git(reg: BackgroundRegistry,
                                                       remote: RegistryOptions, tree: Path,
                                                       no_ci: None) -> None:
    req = PushRequest(url=f"oci://{reg.host}/acme/app:v1", path=str(tree))
    with pytest.raises(UsageError, match="--source and --revision are required"):
        run(publish(req, remote))


def test_publish_signs_the_pushed_digest_and_verify_accepts_it(
        reg: BackgroundRegistry, remote: RegistryOptions, tree: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "s3cret")
    monkeypatch.chdir(tmp_path)
    keys = write_key_pair("release")
    said: list[str] = []
    result = run(publish(request(reg, "acme/signed:v1", tree,
                                 sign=SignOptions(key=keys.private_key)), remote,
                         say=said.append))
    assert result.signature is not None
    assert result.signature.subject == result.digest
    assert result.signature.kind == "cosign-bundle"
    assert said == [f"signed {result.digest} (cosign-bundle): {result.signature.location}"]
    assert result.to_json()["signature"] == result.signature.to_json()

    url = f"oci://{reg.host}/acme/signed:v1"
    outcome = run(verify(VerifyRequest(url=url, keys=[keys.public_key]), remote))
    assert outcome.passed and outcome.digest == result.digest
    # Another key does not pass: the outcome says so, it does not raise.
    other = write_key_pair("other")
    failed = run(verify(VerifyRequest(url=url, keys=[other.public_key]), remote))
    assert not failed.passed and failed.digest == result.digest


def test_sign_artifact_legacy_with_annotations(reg: BackgroundRegistry,
                                               remote: RegistryOptions, tree: Path,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    monkeypatch.chdir(tmp_path)
    keys = write_key_pair()
    pushed = run(publish(request(reg, "acme/app:v1", tree), remote))
    url = f"oci://{reg.host}/acme/app:v1"
    signed = run(sign_artifact(url, SignOptions(key=keys.private_key, fmt="legacy",
                                                annotations=["env=prod"]), remote))
    assert signed.repository_url == f"oci://{reg.host}/acme/app"
    assert signed.signature.subject == pushed.digest
    assert signed.signature.kind == "cosign-legacy"
    assert signed.summary() == (f"signed oci://{reg.host}/acme/app@{pushed.digest}"
                                f" (cosign-legacy): {signed.signature.location}")
    assert signed.to_json() == signed.signature.to_json()
    ok = run(verify(VerifyRequest(url=url, keys=[keys.public_key], annotations=["env=prod"]),
                    remote))
    assert ok.passed
    wrong = run(verify(VerifyRequest(url=url, keys=[keys.public_key],
                                     annotations={"env": "dev"}), remote))
    assert not wrong.passed


def test_sign_artifact_refuses_incomplete_options_before_the_registry(
        remote: RegistryOptions) -> None:
    # Port 1: nothing listens. The options are refused before any connection is tried.
    with pytest.raises(UsageError, match="pass --key FILE, --keyless"):
        run(sign_artifact("oci://127.0.0.1:1/acme/app:v1", SignOptions(), remote))
    with pytest.raises(UsageError, match="--notation needs --key"):
        run(sign_artifact("oci://127.0.0.1:1/acme/app:v1", SignOptions(notation=True),
                          remote))
    with pytest.raises(InvalidReferenceError):
        run(sign_artifact("acme/app:v1", SignOptions(), remote))


def test_tag_list_and_table(reg: BackgroundRegistry, remote: RegistryOptions,
                            tree: Path) -> None:
    pushed = run(publish(request(reg, "acme/app:1.0.0", tree), remote))
    tagged = run(tag(f"oci://{reg.host}/acme/app:1.0.0", ["1.1.0", "stable"], remote))
    assert tagged.digest == pushed.digest
    assert tagged.lines() == [f"oci://{reg.host}/acme/app:1.1.0@{pushed.digest}",
                              f"oci://{reg.host}/acme/app:stable@{pushed.digest}"]
    with pytest.raises(UsageError, match="at least one --tag"):
        run(tag(f"oci://{reg.host}/acme/app:1.0.0", [], remote))

    # Issue 9: a tag in the URL is refused, no longer ignored.
    with pytest.raises(UsageError, match="drop ':ignored'"):
        run(list_repository(f"oci://{reg.host}/acme/app:ignored", remote))
    rows = run(list_repository(f"oci://{reg.host}/acme/app", remote, semver_range=">=1.0.0"))
    assert [r.tag for r in rows] == ["1.1.0", "1.0.0"]
    assert {r.digest for r in rows} == {pushed.digest}
    assert all(r.source == SRC and r.revision == REV for r in rows)
    lines = artifacts_table(rows).splitlines()
    assert lines[0].split() == ["ARTIFACT", "DIGEST", "SOURCE", "REVISION"]
    assert lines[1].split() == [rows[0].url, pushed.digest, SRC, REV]
    # Columns line up: every cell of a column starts where its header does.
    assert lines[1].index(pushed.digest) == lines[0].index("DIGEST")
    assert artifacts_table([]) == "ARTIFACT  DIGEST  SOURCE  REVISION"
    regex_rows = run(list_repository(f"oci://{reg.host}/acme/app", remote, regex="^stable$"))
    assert [r.tag for r in regex_rows] == ["stable"]
    json.dumps([r.to_json() for r in rows])  # the -o json document serializes


def test_diff_same_and_changed(reg: BackgroundRegistry, remote: RegistryOptions, tree: Path,
                               tmp_path: Path) -> None:
    pushed = run(publish(request(reg, "acme/app:v1", tree), remote))
    url = f"oci://{reg.host}/acme/app:v1"
    same = run(diff(url, str(tree), remote))
    assert same.same and same.remote_digest == pushed.digest
    assert same.local_diff_id == same.remote_diff_id
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.yaml").write_text("x: 1\n")
    changed = run(diff(url, str(other), remote))
    assert not changed.same and changed.local_diff_id != changed.remote_diff_id
    # The ignore list counts: ignoring sub/ locally makes the content differ.
    assert not run(diff(url, str(tree), remote, ignore=["sub/"])).same


def test_pull_defaults_to_latest_and_reports_the_pinned_repository(
        reg: BackgroundRegistry, remote: RegistryOptions, tree: Path, tmp_path: Path) -> None:
    pushed = run(publish(request(reg, "acme/app:latest", tree), remote))
    result = run(pull(f"oci://{reg.host}/acme/app", tmp_path / "out", remote))
    assert result.url == f"oci://{reg.host}/acme/app:latest"
    assert result.repository_url == f"oci://{reg.host}/acme/app"
    assert result.digest == pushed.digest and result.files == 2
    assert result.metadata.source == SRC and result.metadata.revision == REV
    assert "repository_url" not in result.to_json()  # the -o json document is unchanged
    with pytest.raises(NotFoundError):
        run(pull(f"oci://{reg.host}/acme/app:nope", tmp_path / "out2", remote))
    assert not (tmp_path / "out2").exists()
    with pytest.raises(Exception, match="more than 10 bytes"):
        run(pull(f"oci://{reg.host}/acme/app:latest", tmp_path / "out3", remote, max_size=10))
