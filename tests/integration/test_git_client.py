"""The Git client (ocigitops.puller.git) against real servers on 127.0.0.1: git http-backend
behind basic auth, a bearer token, TLS with a private CA and mutual TLS; OpenSSH's sshd
with key auth; commits and tags signed with ssh-keygen (gpg.format=ssh) and gpg."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ocigitops.extract import Limits, extract_stream
from ocigitops.puller.git.auth import GitAuth, Proxy, auth_from_secret
from ocigitops.puller.git.client import (
    FetchResult,
    InvalidVerificationModeError,
    VerifyMode,
    fetch_artifact,
    lookup,
)
from ocigitops.puller.git.errors import (
    BadSignatureError,
    GitAuthError,
    GitLimitError,
    GitUnreachableError,
    GitURLError,
    HostKeyError,
    RefNotFoundError,
    UnknownKeyError,
    UnsignedObjectError,
)
from ocigitops.puller.git.refs import RefSpec
from ocigitops.puller.git.signatures import TrustedKeys, trusted_keys, verify_signature
from ocigitops.puller.git.transport import Remote, fetch_object, open_scratch_repo
from ocigitops.puller.git.url import parse_git_url
from tests.helpers.gitservers import (
    GitHTTPServer,
    GitRepo,
    GPGKey,
    SSHKey,
    SSHServer,
    git,
    gpg_key,
    http_server,
    proxy_server,
    ssh_key,
    ssh_server,
    stop_gpg_agent,
)

pytestmark = pytest.mark.timeout(600)


@dataclass
class World:
    root: Path
    repo: GitRepo
    commits: dict[str, str]
    signer_ssh: SSHKey
    stranger_ssh: SSHKey
    signer_gpg: GPGKey
    stranger_gpg: GPGKey


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("gitrepos")
    keys = tmp_path_factory.mktemp("keys")
    signer_ssh, stranger_ssh = ssh_key(keys, "signer"), ssh_key(keys, "stranger")
    signer_gpg, stranger_gpg = gpg_key(keys, "Signer"), gpg_key(keys, "Stranger")
    repo = GitRepo.create(root)
    c: dict[str, str] = {}
    c["first"] = repo.commit("first", {"app/a.yaml": "a: 1\n", "run.sh": "#!/bin/sh\n",
                                       ".github/ci.yaml": "x: 1\n", "logo.png": b"\x89PNG"})
    os.chmod(repo.work / "run.sh", 0o755)
    os.symlink("/etc/passwd", repo.work / "escape")
    c["second"] = repo.commit("second", {"app/b.yaml": "b: 2\n"})
    repo.tag("v1.0.0")  # annotated, unsigned
    repo.tag("light", annotated=False)
    c["ssh"] = repo.commit("ssh signed", {"app/c.yaml": "c: 3\n"}, ssh=signer_ssh)
    repo.tag("v1.1.0", ssh=signer_ssh)
    c["gpg"] = repo.commit("gpg signed", {"app/d.yaml": "d: 4\n"}, gpg=signer_gpg)
    repo.tag("v1.2.0", gpg=signer_gpg)
    repo.tag("v1.3.0", gpg=stranger_gpg)
    repo.tag("v2.0.0-rc.1")
    c["stranger-ssh"] = repo.commit("stranger", ssh=stranger_ssh, branch="stranger-ssh")
    c["stranger-gpg"] = repo.commit("stranger", gpg=stranger_gpg, branch="stranger-gpg")
    git("checkout", "-q", "main", cwd=repo.work)
    repo.push_ref("refs/pull/1/head", c["second"])
    c["main"] = git("rev-parse", "refs/heads/main", cwd=repo.work)
    # A second repository: a huge file and many files, for the bounds.
    big = GitRepo.create(root, "big")
    big.commit("big", {"huge.bin": os.urandom(1024) * 2048,
                       **{f"many/f{i}.txt": str(i) for i in range(300)}})
    yield World(root, repo, c, signer_ssh, stranger_ssh, signer_gpg, stranger_gpg)
    stop_gpg_agent(signer_gpg)
    stop_gpg_agent(stranger_gpg)


@pytest.fixture(scope="module")
def basic(world: World) -> Iterator[GitHTTPServer]:
    with http_server(world.root, username="alice", password="s3cret") as srv:
        yield srv


@pytest.fixture(scope="module")
def bearer(world: World) -> Iterator[GitHTTPServer]:
    with http_server(world.root, bearer="tok-123") as srv:
        yield srv


@pytest.fixture(scope="module")
def tls(world: World) -> Iterator[GitHTTPServer]:
    with http_server(world.root, username="alice", password="s3cret", tls=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def mtls(world: World) -> Iterator[GitHTTPServer]:
    with http_server(world.root, mtls=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    with ssh_server(tmp_path_factory.mktemp("sshd")) as srv:
        yield srv


def _remote(url: str, data: dict[str, bytes] | None = None, *, http: bool = False,
            timeout: float = 30.0) -> Remote:
    u = parse_git_url(url, allow_http=http)
    return Remote(url=u, auth=auth_from_secret(data, u), timeout=timeout)


def _basic_remote(srv: GitHTTPServer, repo: str = "repo") -> Remote:
    return _remote(srv.url(repo), {"username": b"alice", "password": b"s3cret"}, http=True)


def _fetch(remote: Remote, ref: RefSpec, **kw: object) -> tuple[FetchResult, dict[str, bytes]]:
    _, resolved = lookup(remote, ref)
    buf = io.BytesIO()
    result = fetch_artifact(remote, resolved, buf, **kw)  # type: ignore[arg-type]
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue()), mode="r:gz") as tf:
        for m in tf.getmembers():
            assert not m.issym() and not m.islnk()
            if m.isfile():
                f = tf.extractfile(m)
                assert f is not None
                files[m.name] = f.read()
    return result, files


# -- URLs ------------------------------------------------------------------------------------

def test_url_with_embedded_credentials_is_refused_with_a_secretref_hint() -> None:
    with pytest.raises(GitURLError, match=r"spec.secretRef") as e:
        parse_git_url("https://alice:hunter2@example.com/repo.git")
    assert "hunter2" not in str(e.value)
    with pytest.raises(GitURLError, match=r"spec.secretRef"):
        parse_git_url("https://token@example.com/repo.git")
    with pytest.raises(GitURLError, match=r"secretRef"):
        parse_git_url("ssh://git:pw@example.com/repo.git")


def test_plain_http_needs_the_opt_in_and_scp_form_is_refused() -> None:
    with pytest.raises(GitURLError, match=r"plain HTTP"):
        parse_git_url("http://example.com/repo.git")
    assert parse_git_url("http://example.com/repo.git", allow_http=True).scheme == "http"
    with pytest.raises(GitURLError, match=r"ssh://git@github.com/org/repo"):
        parse_git_url("git@github.com:org/repo")
    with pytest.raises(GitURLError, match=r"scheme"):
        parse_git_url("file:///etc/repo")
    assert parse_git_url("ssh://git@example.com:2222/r.git").user == "git"


# -- auth ------------------------------------------------------------------------------------

def test_basic_auth_lookup_is_one_request_and_fetch_is_shallow(world: World,
                                                               basic: GitHTTPServer) -> None:
    remote = _basic_remote(basic)
    basic.reset()
    refs, resolved = lookup(remote, RefSpec(branch="main"))
    assert basic.count() == 1
    assert resolved.revision == f"main@sha1:{world.commits['main']}"
    assert refs.symrefs.get("HEAD") == "refs/heads/main"
    with open_scratch_repo(world.root.parent / "scratch-shallow") as repo:
        fetch_object(remote, world.commits["second"], repo, depth=1)
        store = repo.object_store
        commit = store[world.commits["second"].encode()]  # type: ignore[index]
        assert commit.parents == [world.commits["first"].encode()]  # type: ignore[attr-defined]
        assert world.commits["first"].encode() not in store  # depth 1: the parent was not sent


def test_wrong_basic_credentials_are_refused_without_echoing_them(world: World,
                                                                  basic: GitHTTPServer) -> None:
    remote = _remote(basic.url(), {"username": b"alice", "password": b"wrong-pw"}, http=True)
    with pytest.raises(GitAuthError, match=r"401") as e:
        lookup(remote, RefSpec())
    assert "wrong-pw" not in str(e.value)


def test_bearer_token(world: World, bearer: GitHTTPServer) -> None:
    remote = _remote(bearer.url(), {"bearerToken": b"tok-123"}, http=True)
    _result, files = _fetch(remote, RefSpec(branch="main"))
    assert "app/b.yaml" in files
    with pytest.raises(GitAuthError):
        lookup(_remote(bearer.url(), {"bearerToken": b"nope"}, http=True), RefSpec())
    with pytest.raises(GitAuthError):
        lookup(_remote(bearer.url(), None, http=True), RefSpec())


def test_secret_with_basic_and_bearer_together_is_refused() -> None:
    u = parse_git_url("https://example.com/r.git")
    with pytest.raises(GitAuthError, match=r"both"):
        auth_from_secret({"username": b"a", "password": b"b", "bearerToken": b"t"}, u)
    with pytest.raises(GitAuthError, match=r"tls.key"):
        auth_from_secret({"tls.crt": b"x"}, u)


def test_tls_with_private_ca_and_refused_without_it(world: World, tls: GitHTTPServer) -> None:
    assert tls.ca_file is not None
    data = {"username": b"alice", "password": b"s3cret", "ca.crt": tls.ca_file.read_bytes()}
    _, files = _fetch(_remote(tls.url(), data), RefSpec(tag="v1.0.0"))
    assert "app/b.yaml" in files
    with pytest.raises(GitUnreachableError, match=r"certificate|TLS"):
        lookup(_remote(tls.url(), {"username": b"alice", "password": b"s3cret"}), RefSpec())


def test_mutual_tls(world: World, mtls: GitHTTPServer) -> None:
    assert mtls.ca_file and mtls.client_cert and mtls.client_key
    ca = mtls.ca_file.read_bytes()
    data = {"ca.crt": ca, "tls.crt": mtls.client_cert.read_bytes(),
            "tls.key": mtls.client_key.read_bytes()}
    _, resolved = lookup(_remote(mtls.url(), data), RefSpec(branch="main"))
    assert resolved.ref == "refs/heads/main"
    with pytest.raises((GitUnreachableError, GitAuthError)):
        lookup(_remote(mtls.url(), {"ca.crt": ca}), RefSpec(branch="main"))


# -- SSH -------------------------------------------------------------------------------------

def _ssh_data(sshd: SSHServer, known_hosts: str | None = None) -> dict[str, bytes]:
    return {"identity": sshd.client_key.path.read_bytes(),
            "identity.pub": sshd.client_key.public.encode(),
            "known_hosts": (known_hosts or sshd.known_hosts).encode()}


def test_ssh_key_auth_with_pinned_host_key(world: World, sshd: SSHServer) -> None:
    remote = _remote(sshd.url(world.repo.bare), _ssh_data(sshd))
    result, files = _fetch(remote, RefSpec(branch="main"))
    assert result.resolved.revision == f"main@sha1:{world.commits['main']}"
    assert files["app/a.yaml"] == b"a: 1\n"


def test_ssh_wrong_or_unknown_host_key_is_refused(world: World, sshd: SSHServer,
                                                  tmp_path: Path) -> None:
    other = ssh_key(tmp_path, "impostor")
    kind, blob = other.public.split()[:2]
    wrong = f"[{sshd.host}]:{sshd.port} {kind} {blob}\n"
    with pytest.raises(HostKeyError, match=r"does not match|not in"):
        lookup(_remote(sshd.url(world.repo.bare), _ssh_data(sshd, wrong)), RefSpec())
    elsewhere = sshd.known_hosts.replace(f"[{sshd.host}]:{sshd.port}", "[example.org]:22")
    with pytest.raises(HostKeyError, match=r"not in the Secret's known_hosts"):
        lookup(_remote(sshd.url(world.repo.bare), _ssh_data(sshd, elsewhere)), RefSpec())


def test_ssh_wrong_client_key_and_missing_known_hosts(world: World, sshd: SSHServer,
                                                      tmp_path: Path) -> None:
    stranger = ssh_key(tmp_path, "notauthorized")
    data = {**_ssh_data(sshd), "identity": stranger.path.read_bytes()}
    with pytest.raises(GitAuthError, match=r"refused the key"):
        lookup(_remote(sshd.url(world.repo.bare), data), RefSpec())
    u = parse_git_url(sshd.url(world.repo.bare))
    with pytest.raises(GitAuthError, match=r"known_hosts"):
        auth_from_secret({"identity": sshd.client_key.path.read_bytes()}, u)


# -- proxySecretRef: a real HTTP proxy (tinyproxy) -------------------------------------------

def _via(remote: Remote, proxy: Proxy) -> Remote:
    return Remote(url=remote.url, auth=remote.auth, proxy=proxy, timeout=remote.timeout)


def test_http_https_and_ssh_through_a_proxy_with_basic_auth(
        world: World, basic: GitHTTPServer, tls: GitHTTPServer, sshd: SSHServer,
        tmp_path: Path) -> None:
    with proxy_server(tmp_path) as px:
        proxy = Proxy(px.address, px.username, px.password)
        # http://: the proxy forwards absolute-URI requests (its log names each one).
        result, files = _fetch(_via(_basic_remote(basic), proxy), RefSpec(branch="main"))
        assert result.resolved.revision == f"main@sha1:{world.commits['main']}"
        assert files["app/a.yaml"] == b"a: 1\n"
        assert f"GET {basic.url()}/info/refs" in px.log()
        # https://: a CONNECT tunnel, TLS with the private CA end to end.
        assert tls.ca_file is not None
        data = {"username": b"alice", "password": b"s3cret", "ca.crt": tls.ca_file.read_bytes()}
        _, resolved = lookup(_via(_remote(tls.url(), data), proxy), RefSpec(branch="main"))
        assert resolved.revision == f"main@sha1:{world.commits['main']}"
        tls_port = tls.url().split("//", 1)[1].split("/", 1)[0]
        assert f"CONNECT {tls_port}" in px.log()
        # ssh://: our paramiko vendor opens a CONNECT tunnel to sshd.
        _, resolved = lookup(_via(_remote(sshd.url(world.repo.bare), _ssh_data(sshd)), proxy),
                             RefSpec(branch="main"))
        assert resolved.revision == f"main@sha1:{world.commits['main']}"
        assert f"CONNECT 127.0.0.1:{sshd.port}" in px.log()


def test_proxy_refusing_the_credentials_is_a_clear_error(world: World, basic: GitHTTPServer,
                                                        sshd: SSHServer,
                                                        tmp_path: Path) -> None:
    with proxy_server(tmp_path) as px:
        wrong = Proxy(px.address, px.username, "not-the-proxy-pw")
        # tinyproxy answers wrong proxy credentials with 401, not 407: the error names both.
        with pytest.raises(GitAuthError, match=r"or the proxy refused the credentials") as e:
            lookup(_via(_basic_remote(basic), wrong), RefSpec())
        assert "not-the-proxy-pw" not in str(e.value)
        with pytest.raises(GitUnreachableError, match=r"proxy .*refused CONNECT") as e2:
            lookup(_via(_remote(sshd.url(world.repo.bare), _ssh_data(sshd)), wrong), RefSpec())
        assert "not-the-proxy-pw" not in str(e2.value)


# -- refs ------------------------------------------------------------------------------------

def test_each_ref_kind_and_flux_revision_strings(world: World, basic: GitHTTPServer) -> None:
    remote = _basic_remote(basic)
    c = world.commits
    cases = [
        (RefSpec(branch="main"), f"main@sha1:{c['main']}"),
        (RefSpec(tag="v1.0.0"), f"v1.0.0@sha1:{c['second']}"),
        (RefSpec(tag="light"), f"light@sha1:{c['second']}"),
        (RefSpec(semver=">=1.0.0 <2.0.0"), f"v1.3.0@sha1:{c['gpg']}"),
        (RefSpec(semver="~1.1"), f"v1.1.0@sha1:{c['ssh']}"),
        (RefSpec(name="refs/pull/1/head"), f"refs/pull/1/head@sha1:{c['second']}"),
        (RefSpec(name="refs/tags/v1.0.0"), f"refs/tags/v1.0.0@sha1:{c['second']}"),
        (RefSpec(branch="main", commit=c["first"]), f"main@sha1:{c['first']}"),
        (RefSpec(commit=c["second"]), f"sha1:{c['second']}"),
        # precedence: commit > name > semver > tag > branch
        (RefSpec(branch="main", tag="v1.0.0"), f"v1.0.0@sha1:{c['second']}"),
        (RefSpec(tag="v1.0.0", semver="~1.1"), f"v1.1.0@sha1:{c['ssh']}"),
        (RefSpec(semver="~1.1", name="refs/pull/1/head"), f"refs/pull/1/head@sha1:{c['second']}"),
    ]
    for spec, revision in cases:
        _, resolved = lookup(remote, spec)
        assert resolved.revision == revision, spec
    # A non-tip commit of a branch, fetched (the server may not allow it directly).
    _, files = _fetch(remote, RefSpec(branch="main", commit=c["first"]))
    assert "app/a.yaml" in files and "app/b.yaml" not in files
    _result, files = _fetch(remote, RefSpec(name="refs/pull/1/head"))
    assert "app/b.yaml" in files and "app/c.yaml" not in files
    # Default: the branch master (Flux's API default), absent here.
    with pytest.raises(RefNotFoundError, match=r"'master'"):
        lookup(remote, RefSpec())
    with pytest.raises(RefNotFoundError, match=r"semver"):
        lookup(remote, RefSpec(semver=">=9"))
    with pytest.raises(RefNotFoundError):
        _fetch(remote, RefSpec(branch="main", commit="0" * 40))
    with pytest.raises(GitURLError):
        lookup(remote, RefSpec(commit="abc"))


def test_artifact_format_ignores_and_links(world: World, basic: GitHTTPServer,
                                           tmp_path: Path) -> None:
    result, files = _fetch(_basic_remote(basic), RefSpec(branch="main"))
    assert ".github/ci.yaml" not in files and "logo.png" not in files  # default exclusions
    assert "escape" not in files  # symbolic links are left out, as Flux's archive does
    assert result.archive.digest.startswith("sha256:")
    # The consumers' extraction (the cache's) accepts it, modes as Flux writes them.
    _, resolved = lookup(_basic_remote(basic), RefSpec(branch="main"))
    buf = io.BytesIO()
    fetch_artifact(_basic_remote(basic), resolved, buf)
    out = tmp_path / "x"
    out.mkdir()
    extract_stream(io.BytesIO(buf.getvalue()), out)
    assert (out / "app" / "b.yaml").read_text() == "b: 2\n"
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue()), mode="r:gz") as tf:
        modes = {m.name: m.mode for m in tf.getmembers()}
    assert modes["run.sh"] == 0o700 and modes["app/b.yaml"] == 0o600 and modes["app"] == 0o750
    # Same commit, same bytes.
    again = io.BytesIO()
    assert fetch_artifact(_basic_remote(basic), resolved, again).archive.digest \
        == result.archive.digest
    # spec.ignore replaces the default exclusions (VCS files stay excluded).
    _, files = _fetch(_basic_remote(basic), RefSpec(branch="main"), ignore="app/\n")
    assert "logo.png" in files and not any(f.startswith("app/") for f in files)
    # sparse checkout keeps only the listed folders
    _, files = _fetch(_basic_remote(basic), RefSpec(branch="main"), sparse=["app"])
    assert files and all(f.startswith("app/") for f in files)


def test_bounds_refuse_a_huge_file_and_too_many_files(world: World,
                                                      basic: GitHTTPServer) -> None:
    remote = _basic_remote(basic, "big")
    with pytest.raises(GitLimitError, match=r"per-file limit"):
        _fetch(remote, RefSpec(branch="main"), limits=Limits(max_file=1024 * 1024))
    with pytest.raises(GitLimitError, match=r"entries|objects"):
        _fetch(remote, RefSpec(branch="main"), limits=Limits(max_entries=100))
    with pytest.raises(GitLimitError):
        _fetch(remote, RefSpec(branch="main"), limits=Limits(max_total=1024 * 1024))


# -- signatures ------------------------------------------------------------------------------

def _keys(world: World, *, ssh: bool = True, gpg: bool = True) -> TrustedKeys:
    data: dict[str, bytes] = {}
    if ssh:
        data["author.sshpub"] = world.signer_ssh.public.encode()
    if gpg:
        data["author.asc"] = world.signer_gpg.armored_public()
    return trusted_keys(data)


@pytest.mark.parametrize("ref,mode,ok", [
    (RefSpec(branch="main"), "HEAD", None),  # main's tip: the GPG-signed commit
    (RefSpec(tag="v1.1.0"), "Tag", None),
    (RefSpec(tag="v1.1.0"), "TagAndHEAD", None),
    (RefSpec(tag="v1.2.0"), "TagAndHEAD", None),
    (RefSpec(semver="~1.2"), "Tag", None),
    (RefSpec(name="refs/tags/v1.2.0"), "head", None),
    (RefSpec(tag="v1.0.0"), "Tag", UnsignedObjectError),
    (RefSpec(tag="v1.0.0"), "HEAD", UnsignedObjectError),
    (RefSpec(tag="v1.3.0"), "Tag", UnknownKeyError),
    (RefSpec(branch="stranger-ssh"), "HEAD", UnknownKeyError),
    (RefSpec(branch="stranger-gpg"), "HEAD", UnknownKeyError),
    (RefSpec(branch="main"), "Tag", InvalidVerificationModeError),
    (RefSpec(tag="light"), "Tag", InvalidVerificationModeError),
])
def test_signature_modes(world: World, basic: GitHTTPServer, ref: RefSpec, mode: VerifyMode,
                         ok: type[Exception] | None) -> None:
    remote = _basic_remote(basic)
    if ok is None:
        result, _ = _fetch(remote, ref, verify=mode, keys=_keys(world))
        assert result.verified and all("with key" in v for v in result.verified)
    else:
        with pytest.raises(ok) as e:
            _fetch(remote, ref, verify=mode, keys=_keys(world))
        assert len(str(e.value).splitlines()) == 1


def test_each_signature_kind_needs_its_own_keys(world: World, basic: GitHTTPServer) -> None:
    remote = _basic_remote(basic)
    result, _ = _fetch(remote, RefSpec(tag="v1.1.0"), verify="TagAndHEAD",
                       keys=_keys(world, gpg=False))
    assert any("SHA256:" in v for v in result.verified)
    with pytest.raises(UnknownKeyError, match=r"no SSH key"):
        _fetch(remote, RefSpec(tag="v1.1.0"), verify="Tag", keys=_keys(world, ssh=False))
    with pytest.raises(UnknownKeyError, match=r"no OpenPGP key"):
        _fetch(remote, RefSpec(branch="main"), verify="HEAD", keys=_keys(world, gpg=False))
    result, _ = _fetch(remote, RefSpec(branch="main"), verify="HEAD",
                       keys=_keys(world, ssh=False))
    assert world.signer_gpg.fingerprint[-16:] in result.verified[0]


def test_tampered_payload_fails_for_both_kinds(world: World) -> None:
    from dulwich.repo import Repo

    with Repo(str(world.repo.bare)) as repo:
        for name in ("ssh", "gpg"):
            commit = repo[world.commits[name].encode()]
            payload = commit.raw_without_sig().replace(b"signed", b"SIGNED")  # type: ignore[attr-defined]
            with pytest.raises(BadSignatureError, match=r"does not"):
                verify_signature(payload, commit.gpgsig, _keys(world), f"commit {name}")  # type: ignore[attr-defined]


def test_secret_keys_are_read_as_source_controller_reads_them(world: World) -> None:
    # Any name but *.sshpub is an OpenPGP key ring (backward compatibility).
    keys = trusted_keys({"keys": world.signer_gpg.armored_public(),
                         "a.sshpub": (world.signer_ssh.public + "\n"
                                      + world.stranger_ssh.public).encode()})
    assert len(keys.pgp) == 1 and len(keys.ssh) == 2
    from ocigitops.puller.git.errors import TrustedKeysError

    with pytest.raises(TrustedKeysError):
        trusted_keys({"a.sshpub": b"not a key"})
    with pytest.raises(TrustedKeysError):
        trusted_keys({"a.asc": b"garbage"})
    with pytest.raises(TrustedKeysError, match=r"no OpenPGP or SSH"):
        trusted_keys({})


def test_auth_values_never_in_repr() -> None:
    auth = GitAuth(username="u", password="pw-secret", bearer_token="tok-secret",
                   identity=b"KEY", key=b"TLSKEY")
    text = repr(auth)
    assert "pw-secret" not in text and "tok-secret" not in text and "KEY" not in text
