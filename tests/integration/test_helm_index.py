"""HelmRepository and HelmChart against a real HTTP(S) Helm repository on 127.0.0.1.

The index is built by the real ``helm repo index`` and the charts by ``helm package``; the
server (tests/helpers/helmrepo.py) speaks HTTPS with a certificate from a private CA and
requires basic auth. The reconcilers run with the real artifact cache; the cluster reads
(the objects' Secrets and the HelmRepository a HelmChart names) come from MemKube (a fake,
see its docstring: status writes and the runtime are tested on the real API server in
tests/e2e/test_helm_sources.py).

What it pins: one conditional request per interval when the index did not change (and a
full one when it did); credentials only to the index's host unless passCredentials; a
chart whose digest is not the index's refused; an oversized index refused before it is
read; hostile chart archives (path traversal, a link, a huge file) refused; an
unreachable index keeps the last index and the last chart.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.reconcile import Outcome, typed_status
from ocigitops.puller.sources import helmchart as hcsrc
from ocigitops.puller.sources import helmrepository as hrsrc
from ocigitops.puller.sources.contract import get_artifact
from tests.helpers.helmrepo import helm, helm_repo_server, make_chart
from tests.helpers.memkube import MemKube
from tests.helpers.registries import make_tls

pytestmark = pytest.mark.timeout(300)

NS = "apps"
SOURCES = {"HelmRepository": hrsrc.SOURCE, "HelmChart": hcsrc.SOURCE}
SERVED = frozenset(SOURCES)


def _repo_obj(url: str, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "HelmRepository",
            "metadata": {"name": "charts", "namespace": NS, "generation": generation},
            "spec": {"url": url, "interval": "1m", **spec}}


def _chart_obj(chart: str = "hello", version: str = "*", generation: int = 1,
               **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "HelmChart",
            "metadata": {"name": "hello", "namespace": NS, "generation": generation},
            "spec": {"chart": chart, "version": version, "interval": "1m",
                     "sourceRef": {"kind": "HelmRepository", "name": "charts"}, **spec}}


class Env:
    """The two reconcilers over one cache and one MemKube."""

    def __init__(self, tmp: Path) -> None:
        self.kube = MemKube()
        self.cache = ArtifactCache(tmp / "cache")
        self.repo_ctx = hrsrc.HelmRepositoryContext(kube=self.kube,  # type: ignore[arg-type]
                                                    cache=self.cache)
        self.chart_ctx = hcsrc.HelmChartContext(kube=self.kube,  # type: ignore[arg-type]
                                                cache=self.cache, sources=SOURCES,
                                                served=SERVED)

    def repo(self, obj: dict[str, Any]) -> Outcome:
        out = asyncio.run(hrsrc.reconcile(obj, self.repo_ctx))
        typed_status(hrsrc.RECONCILER.status_type, out.status)  # what the runtime writes
        obj["status"] = out.status
        self.kube.put(obj)
        return out

    def chart(self, obj: dict[str, Any]) -> Outcome:
        out = asyncio.run(hcsrc.reconcile(obj, self.chart_ctx))
        typed_status(hcsrc.RECONCILER.status_type, out.status)
        obj["status"] = out.status
        self.kube.put(obj)
        return out


def _cond(out: Outcome, ctype: str) -> dict[str, Any]:
    return next((c for c in out.status.get("conditions", []) if c["type"] == ctype), {})


def _build_repo(root: Path, home: Path, versions: tuple[str, ...] = ("0.1.0",),
                url: str | None = None) -> Path:
    """``root`` as a Helm repository: charts packaged and indexed by the real helm."""
    root.mkdir(parents=True, exist_ok=True)
    src = home / "src"
    for v in versions:
        chart = make_chart(src / v, "hello", v, values=f"replicas: {v[2]}\n")
        helm("package", str(chart), "-d", str(root), home=home)
    helm("repo", "index", str(root), *(["--url", url] if url else []), home=home)
    return root


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    (tmp_path / "tls").mkdir()
    return make_tls(tmp_path / "tls")


def test_https_basic_auth_private_ca(tmp_path: Path, tls: tuple[Path, Path, Path]) -> None:
    ca, cert, key = tls
    root = _build_repo(tmp_path / "repo", tmp_path / "helm", ("0.1.0", "0.2.0"))
    env = Env(tmp_path)
    env.kube.secret(NS, "auth", {"username": b"u", "password": b"p"})
    env.kube.secret(NS, "ca", {"ca.crt": ca.read_bytes()})
    with helm_repo_server(root, username="u", password="p", tls=(cert, key)) as srv:
        repo = _repo_obj(srv.url, secretRef={"name": "auth"}, certSecretRef={"name": "ca"})
        out = env.repo(repo)
        assert _cond(out, "Ready")["status"] == "True", out.status
        index = (root / "index.yaml").read_bytes()
        digest = "sha256:" + hashlib.sha256(index).hexdigest()
        assert out.status["artifact"]["revision"] == digest
        assert out.status["artifact"]["digest"] == digest
        assert out.changed and out.events[0][1] == "NewArtifact"
        assert env.cache.has(digest)

        chart = _chart_obj(version="0.x")
        out = env.chart(chart)
        assert _cond(out, "Ready")["status"] == "True", out.status
        art = out.status["artifact"]
        assert art["revision"] == "0.2.0"
        pulled = (root / "hello-0.2.0.tgz").read_bytes()
        assert art["digest"] == "sha256:" + hashlib.sha256(pulled).hexdigest()
        assert out.status["observedChartName"] == "hello"
        assert out.status["observedSourceArtifactRevision"] == digest
        assert all(s.authorization for s in srv.requests())  # every request authenticated

        # The consumer's view (HelmRelease later): the chart through the source contract.
        got = asyncio.run(get_artifact(env.kube, env.cache, SOURCES, SERVED,  # type: ignore[arg-type]
                                       "HelmChart", NS, "hello"))
        out_dir = tmp_path / "consumer"
        got.extract(out_dir)
        assert (out_dir / "hello" / "Chart.yaml").is_file()

    # Without the CA the server's certificate is not trusted: a typed, one-line failure.
    env2 = Env(tmp_path / "noca")
    env2.kube.secret(NS, "auth", {"username": b"u", "password": b"p"})
    with helm_repo_server(root, username="u", password="p", tls=(cert, key)) as srv:
        out = env2.repo(_repo_obj(srv.url, secretRef={"name": "auth"}))
        assert _cond(out, "Ready")["status"] == "False"
        assert "certificate" in _cond(out, "Ready")["message"].lower()
    # Wrong password: AuthenticationFailed, and the password is in no message.
    env3 = Env(tmp_path / "badpw")
    env3.kube.secret(NS, "auth", {"username": b"u", "password": b"s3cr3t-wrong"})
    env3.kube.secret(NS, "ca", {"ca.crt": ca.read_bytes()})
    with helm_repo_server(root, username="u", password="p", tls=(cert, key)) as srv:
        out = env3.repo(_repo_obj(srv.url, secretRef={"name": "auth"},
                                  certSecretRef={"name": "ca"}))
        assert _cond(out, "Ready")["reason"] == "AuthenticationFailed"
        assert "s3cr3t" not in str(out.status) and "s3cr3t" not in str(out.events)


def test_one_conditional_request_per_interval(tmp_path: Path) -> None:
    root = _build_repo(tmp_path / "repo", tmp_path / "helm", ("0.1.0",))
    env = Env(tmp_path)
    with helm_repo_server(root) as srv:
        repo = _repo_obj(srv.url)
        env.repo(repo)
        chart = _chart_obj()
        assert env.chart(chart).status["artifact"]["revision"] == "0.1.0"
        srv.clear()
        for _ in range(3):  # three intervals, nothing changed
            out = env.repo(repo)
            assert _cond(out, "Ready")["status"] == "True" and not out.changed
            out = env.chart(chart)
            assert not out.changed
        seen = srv.requests()
        assert [s.status for s in seen] == [304, 304, 304], seen
        assert all(s.path == "/index.yaml" and s.if_none_match for s in seen)

        # A new version: the next interval fetches the index in full, the chart follows.
        src = make_chart(tmp_path / "helm" / "src2", "hello", "0.3.0")
        helm("package", str(src), "-d", str(root), home=tmp_path / "helm")
        helm("repo", "index", str(root), home=tmp_path / "helm")
        srv.clear()
        out = env.repo(repo)
        assert out.changed and [s.status for s in srv.requests()] == [200]
        out = env.chart(chart)
        assert out.changed and out.status["artifact"]["revision"] == "0.3.0"
        assert [s.path for s in srv.requests()] == ["/index.yaml", "/hello-0.3.0.tgz"]


def test_credentials_only_to_the_index_host(tmp_path: Path) -> None:
    charts = tmp_path / "elsewhere"
    with helm_repo_server(charts, host="localhost") as other:
        # The index names chart URLs on another host (localhost is not 127.0.0.1).
        root = _build_repo(tmp_path / "repo", tmp_path / "helm", ("0.1.0",), url=other.url)
        charts.mkdir(exist_ok=True)
        (charts / "hello-0.1.0.tgz").write_bytes((root / "hello-0.1.0.tgz").read_bytes())
        env = Env(tmp_path)
        env.kube.secret(NS, "auth", {"username": b"u", "password": b"p"})
        with helm_repo_server(root, username="u", password="p") as srv:
            repo = _repo_obj(srv.url, secretRef={"name": "auth"})
            env.repo(repo)
            out = env.chart(_chart_obj())
            assert _cond(out, "Ready")["status"] == "True", out.status
            (seen,) = other.requests("/hello-0.1.0.tgz")
            assert seen.authorization is None  # not sent to another host
            assert all(s.authorization for s in srv.requests())

            other.clear()
            repo = _repo_obj(srv.url, generation=2, secretRef={"name": "auth"},
                             passCredentials=True)
            env.repo(repo)
            out = env.chart(_chart_obj(generation=2))
            (seen,) = other.requests("/hello-0.1.0.tgz")
            assert seen.authorization and seen.authorization.startswith("Basic ")

            # A redirect to another host does not carry them either.
            other.clear()
            srv.redirects["/hello-0.1.0.tgz"] = f"{other.url}/hello-0.1.0.tgz"
            helm("repo", "index", str(root), home=tmp_path / "helm")  # relative URLs now
            env.repo(_repo_obj(srv.url, generation=3, secretRef={"name": "auth"}))
            out = env.chart(_chart_obj(generation=3))
            assert _cond(out, "Ready")["status"] == "True", out.status
            (seen,) = other.requests("/hello-0.1.0.tgz")
            assert seen.authorization is None


def _rewrite_index(root: Path, **entry: Any) -> None:
    doc = yaml.safe_load((root / "index.yaml").read_text())
    doc["entries"]["hello"][0].update(entry)
    (root / "index.yaml").write_text(yaml.safe_dump(doc))


def test_digest_mismatch_refused(tmp_path: Path) -> None:
    root = _build_repo(tmp_path / "repo", tmp_path / "helm", ("0.1.0",))
    _rewrite_index(root, digest="0" * 64)
    env = Env(tmp_path)
    with helm_repo_server(root) as srv:
        env.repo(_repo_obj(srv.url))
        out = env.chart(_chart_obj())
    ready = _cond(out, "Ready")
    assert ready["status"] == "False" and "index says sha256:000" in ready["message"]
    assert "artifact" not in out.status


def test_oversized_index_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    with open(root / "index.yaml", "wb") as f:  # 50 MiB + 1 byte: over Flux's default cap
        f.truncate(50 * 1024 * 1024 + 1)
    env = Env(tmp_path)
    with helm_repo_server(root) as srv:
        out = env.repo(_repo_obj(srv.url))
    ready = _cond(out, "Ready")
    assert ready["status"] == "False" and "52428800-byte limit" in ready["message"]
    assert "artifact" not in out.status


def _tgz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(buf.getvalue(), mtime=0)


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


CHART_YAML = b"apiVersion: v2\nname: hello\nversion: 0.1.0\n"


@pytest.mark.parametrize("case", ["traversal", "symlink", "huge-file", "two-tops"])
def test_hostile_chart_refused(tmp_path: Path, case: str) -> None:
    members = [_file("hello/Chart.yaml", CHART_YAML)]
    if case == "traversal":
        members.append(_file("hello/../../escape.yaml", b"x"))
    elif case == "symlink":
        link = tarfile.TarInfo("hello/templates/passwd.yaml")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        members.append((link, None))
    elif case == "huge-file":  # over Helm's 5 MiB per-file limit
        members.append(_file("hello/templates/big.yaml", b"a" * (5 * 1024 * 1024 + 1)))
    else:
        members.append(_file("other/Chart.yaml", CHART_YAML))
    data = _tgz(members)
    root = tmp_path / "repo"
    root.mkdir()
    (root / "hello-0.1.0.tgz").write_bytes(data)
    (root / "index.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "entries": {
        "hello": [{"name": "hello", "version": "0.1.0", "urls": ["hello-0.1.0.tgz"],
                   "digest": hashlib.sha256(data).hexdigest()}]}}))
    env = Env(tmp_path)
    with helm_repo_server(root) as srv:
        env.repo(_repo_obj(srv.url))
        out = env.chart(_chart_obj())
    ready = _cond(out, "Ready")
    assert ready["status"] == "False", out.status
    expected = {"traversal": "path traversal", "symlink": "links are not allowed",
                "huge-file": "per-file limit", "two-tops": "one top-level folder"}[case]
    assert expected in ready["message"], ready["message"]
    assert "artifact" not in out.status
    assert not (tmp_path / "escape.yaml").exists()


def test_unreachable_index_keeps_the_last_chart(tmp_path: Path) -> None:
    root = _build_repo(tmp_path / "repo", tmp_path / "helm", ("0.1.0",))
    env = Env(tmp_path)
    with helm_repo_server(root) as srv:
        repo = _repo_obj(srv.url, timeout="5s")
        env.repo(repo)
        chart = _chart_obj()
        first = env.chart(chart).status["artifact"]
    # The server is gone: the index fetch fails, the last index and chart stay.
    out = env.repo(repo)
    assert _cond(out, "Ready")["status"] == "False"
    assert _cond(out, "FetchFailed")["status"] == "True"
    assert "the last index is kept" in _cond(out, "Ready")["message"]
    assert out.status["artifact"]["digest"]
    out = env.chart(chart)
    assert _cond(out, "Ready")["status"] == "True", out.status
    assert out.status["artifact"] == first


def test_server_requests_carry_no_ambient_credentials(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``.netrc`` in the controller's home never authenticates a tenant's repository."""
    root = _build_repo(tmp_path / "repo", tmp_path / "helm", ("0.1.0",))
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine 127.0.0.1 login admin password hunter2\n")
    (home / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    env = Env(tmp_path)
    with helm_repo_server(root) as srv:
        env.repo(_repo_obj(srv.url))
        assert [s.authorization for s in srv.requests()] == [None]
