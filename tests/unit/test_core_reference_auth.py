"""OCI references, ``--creds``, docker config / credential helpers and auth challenges.

Credential helpers are exercised with a real executable ``docker-credential-test``
written into a temporary directory that is put on PATH: the product runs it exactly
as it runs ``docker-credential-desktop`` or ``-ecr-login``.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from ocigitops.auth import (
    CredentialResolver,
    Credentials,
    DockerConfig,
    parse_challenge,
    parse_creds,
    run_credential_helper,
)
from ocigitops.errors import CredentialsError, InvalidReferenceError, UsageError
from ocigitops.reference import Reference, parse_reference, validate_digest, validate_tag

pytestmark = pytest.mark.unit

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"


# ------------------------------------------------------------------ references


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("oci://ghcr.io/org/app:v1.2.3", "ghcr.io", "org/app", "v1.2.3", None),
        ("ghcr.io/org/team/app", "ghcr.io", "org/team/app", None, None),
        # Docker Hub defaults
        ("nginx", "docker.io", "library/nginx", None, None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("library/nginx:latest", "docker.io", "library/nginx", "latest", None),
        ("stefanprodan/podinfo", "docker.io", "stefanprodan/podinfo", None, None),
        ("docker.io/nginx", "docker.io", "library/nginx", None, None),
        ("index.docker.io/library/nginx", "docker.io", "library/nginx", None, None),
        ("registry-1.docker.io/fluxcd/flux", "docker.io", "fluxcd/flux", None, None),
        # hosts with ports, localhost, IPv4, IPv6
        ("oci://localhost:5000/repo:tag", "localhost:5000", "repo", "tag", None),
        ("localhost/repo", "localhost", "repo", None, None),
        ("oci://127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000", "a/b/c", "v1", None),
        ("oci://[::1]:5000/repo:v1", "[::1]:5000", "repo", "v1", None),
        ("oci://[fe80::1]/repo", "[fe80::1]", "repo", None, None),
        ("oci://registry.example.com:443/x/y", "registry.example.com:443", "x/y", None, None),
        # tag and digest
        (f"oci://ghcr.io/org/app:v1@{DIGEST}", "ghcr.io", "org/app", "v1", DIGEST),
        (f"oci://ghcr.io/org/app@{DIGEST}", "ghcr.io", "org/app", None, DIGEST),
        (f"localhost:5000/app@{DIGEST}", "localhost:5000", "app", None, DIGEST),
        # separators allowed by the distribution grammar
        ("oci://h.io/a.b/c_d/e__f/g-h/i--j:T_a.g-1", "h.io", "a.b/c_d/e__f/g-h/i--j",
         "T_a.g-1", None),
        ("  oci://h.io/app:v1  ", "h.io", "app", "v1", None),
    ],
)
def test_parse_reference(text: str, registry: str, repository: str, tag: str | None,
                         digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry, repository, tag, digest)


def test_reference_properties() -> None:
    hub = parse_reference("nginx:1.25")
    assert hub.api_host == "registry-1.docker.io"
    assert hub.name == "docker.io/library/nginx"
    assert str(hub) == "docker.io/library/nginx:1.25"
    assert hub.url() == "oci://docker.io/library/nginx:1.25"
    assert hub.identifier == "1.25"

    ref = parse_reference(f"oci://localhost:5000/app:v1@{DIGEST}")
    assert ref.api_host == "localhost:5000"
    assert ref.identifier == DIGEST  # the digest wins over the tag
    assert str(ref) == f"localhost:5000/app:v1@{DIGEST}"
    assert ref.repo_only() == Reference("localhost:5000", "app")
    assert ref.with_tag("v2") == Reference("localhost:5000", "app", tag="v2")
    other = "sha256:" + "f" * 64
    assert ref.with_digest(other).digest == other
    assert ref.with_digest(other).tag == "v1"

    # A parsed reference prints back to something that parses to the same value.
    for text in ("oci://[::1]:5000/repo:v1", f"oci://h.io/a/b:t@{DIGEST}", "nginx"):
        r = parse_reference(text)
        assert parse_reference(r.url()) == r


def test_identifier_needs_tag_or_digest() -> None:
    ref = parse_reference("oci://h.io/app")
    with pytest.raises(InvalidReferenceError, match="neither a tag nor a digest"):
        _ = ref.identifier


def test_require_scheme() -> None:
    with pytest.raises(InvalidReferenceError, match=r"must start with oci://") as e:
        parse_reference("ghcr.io/org/app:v1", require_scheme=True)
    assert "ghcr.io/org/app:v1" in str(e.value)
    assert parse_reference("oci://ghcr.io/org/app:v1", require_scheme=True).tag == "v1"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty OCI reference"),
        ("oci://", "empty OCI reference"),
        ("https://ghcr.io/org/app", "only oci:// URLs are supported"),
        ("docker://ghcr.io/org/app", "only oci:// URLs are supported"),
        ("oci://ghcr.io/Org/App:v1", "invalid repository name 'Org/App'"),
        ("oci://ghcr.io/org//app", "invalid repository name"),
        ("oci://ghcr.io/org/app/", "invalid repository name"),
        ("oci://ghcr.io/-app", "invalid repository name"),
        ("oci://ghcr.io/a___b", "invalid repository name"),
        ("oci://ghcr.io/org/app:", "invalid tag ''"),
        ("oci://ghcr.io/org/app:.hidden", "invalid tag '.hidden'"),
        ("oci://ghcr.io/org/app:-x", "invalid tag '-x'"),
        ("oci://ghcr.io/org/app:a+b", "invalid tag 'a+b'"),
        ("oci://ghcr.io/org/app:" + "t" * 129, "up to 128"),
        ("oci://ghcr.io/org/app@sha256:abc", "invalid digest 'sha256:abc'"),
        ("oci://ghcr.io/org/app@sha256:" + "A" * 64, "64 lowercase hex"),
        ("oci://ghcr.io/org/app@md5:" + "a" * 32, "invalid digest"),
        ("oci://ghcr.io/org/app@", "invalid digest ''"),
        ("oci://ho_st:5000/app", "invalid registry host 'ho_st:5000'"),
        ("oci://host:port/app", "invalid registry host 'host:port'"),
        ("oci://[::1/app", "invalid registry host"),
    ],
)
def test_invalid_references(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as e:
        parse_reference(text)
    message = str(e.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(e.value, UsageError)  # exit code 2 at the CLI
    assert e.value.exit_code == 2


def test_tag_of_128_characters_is_valid() -> None:
    tag = "t" * 128
    assert parse_reference(f"oci://h.io/app:{tag}").tag == tag
    assert validate_tag(tag) == tag


def test_invalid_tag_message_says_what_is_allowed() -> None:
    with pytest.raises(InvalidReferenceError) as e:
        parse_reference("oci://h.io/app:bad/tag!")
    assert "letters, digits" in str(e.value)
    with pytest.raises(InvalidReferenceError, match=r"not starting with '\.' or '-'"):
        parse_reference("h.io/app").with_tag(".x")
    with pytest.raises(InvalidReferenceError, match="sha256: followed by 64"):
        parse_reference("h.io/app").with_digest("sha256:xyz")


def test_trailing_newline_is_not_a_valid_tag_or_digest() -> None:
    with pytest.raises(InvalidReferenceError):
        validate_tag("v1\n")
    with pytest.raises(InvalidReferenceError):
        validate_digest(DIGEST + "\n")
    with pytest.raises(InvalidReferenceError):
        parse_reference(f"oci://h.io/app:v1\n@{DIGEST}")


# ------------------------------------------------------------------ --creds


def test_parse_creds() -> None:
    c = parse_creds("user:pa:ss")
    assert (c.username, c.password, c.registry_token) == ("user", "pa:ss", "")
    assert parse_creds("user:") == Credentials(username="user", password="")
    token = parse_creds("ghp_abcdef")
    assert token.registry_token == "ghp_abcdef"
    assert not token.username and not token.password
    assert not token.empty
    assert Credentials().empty
    with pytest.raises(UsageError, match="--creds is empty"):
        parse_creds("")
    with pytest.raises(UsageError, match="empty username"):
        parse_creds(":secret")


def test_secrets_never_in_repr_or_str() -> None:
    c = Credentials(username="alice", password="pw-SECRET-1", identity_token="it-SECRET-2",
                    registry_token="rt-SECRET-3")
    for text in (repr(c), str(c), f"{c}", f"{c!r}", repr([c]), str({"c": c})):
        assert "alice" in text
        assert "SECRET" not in text
    assert "SECRET" not in repr(parse_creds("bob:pw-SECRET"))
    assert "SECRET" not in str(parse_creds("tok-SECRET"))


def test_docker_config_repr_hides_secrets() -> None:
    auth = base64.b64encode(b"alice:pw-SECRET").decode()
    cfg = DockerConfig.from_bytes(json.dumps({"auths": {
        "h.io": {"auth": auth}, "k.io": {"identitytoken": "tok-SECRET"}}}))
    text = repr(cfg) + str(cfg)
    assert auth not in text
    assert "SECRET" not in text


# ------------------------------------------------------------------ docker config


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_auths_base64_auth_and_key_forms() -> None:
    cfg = DockerConfig.from_bytes(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": _b64("hubuser:hub:pass")},
        "http://127.0.0.1:5000/v2/": {"auth": _b64("local:pw")},
        "ghcr.io": {"username": "gh", "password": "ghpw"},
        "https://quay.io": {"identitytoken": "refresh-123", "username": "q"},
        "reg.example.com": {"registrytoken": "bearer-xyz"},
        "empty.example.com": {},
    }}))
    for host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        assert cfg.lookup(host) == Credentials(username="hubuser", password="hub:pass")
    assert cfg.lookup("127.0.0.1:5000") == Credentials(username="local", password="pw")
    assert cfg.lookup("ghcr.io") == Credentials(username="gh", password="ghpw")
    quay = cfg.lookup("quay.io")
    assert quay is not None
    assert (quay.username, quay.identity_token, quay.password) == ("q", "refresh-123", "")
    assert cfg.lookup("reg.example.com") == Credentials(registry_token="bearer-xyz")
    assert cfg.lookup("empty.example.com") is None
    assert cfg.lookup("other.example.com") is None
    assert cfg.lookup("127.0.0.1:5001") is None  # the port is part of the host


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ("not json", "is not valid JSON"),
        ("[]", "is not a JSON object"),
        ('{"auths": []}', "'auths' is not an object"),
        ('{"credHelpers": "x"}', "'credHelpers' is not an object"),
    ],
)
def test_malformed_docker_config(doc: str, fragment: str) -> None:
    with pytest.raises(CredentialsError, match=fragment) as e:
        DockerConfig.from_bytes(doc, source="/tmp/cfg.json")
    assert "/tmp/cfg.json" in str(e.value)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"auth": _b64("no-colon")}, "'auth' is not user:password"),
        ({"auth": "abc"}, "'auth' is not base64"),
        ("a string", "is not an object"),
    ],
)
def test_malformed_auth_entries(entry: object, fragment: str) -> None:
    cfg = DockerConfig.from_bytes(json.dumps({"auths": {"h.io": entry}}))
    with pytest.raises(CredentialsError, match=fragment) as e:
        cfg.lookup("h.io")
    assert "h.io" in str(e.value)


def test_load_from_docker_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {"h.io": {"auth": _b64("u:p")}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    cfg = DockerConfig.load()
    assert cfg.source == str(tmp_path / "config.json")
    assert cfg.lookup("h.io") == Credentials(username="u", password="p")
    # An absent file is an empty config, not an error.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nowhere"))
    assert DockerConfig.load().lookup("h.io") is None


HELPER = r"""#!/bin/sh
# A docker credential helper speaking the real protocol: "get" reads the server
# URL on stdin and prints {"ServerURL","Username","Secret"} JSON.
server=$(cat)
echo "$1 $server" >> "$HELPER_LOG"
[ "$1" = get ] || { echo "unsupported action $1" >&2; exit 1; }
case "$server" in
  helped.example.com)
    printf '{"ServerURL":"%s","Username":"helper-user","Secret":"helper-secret"}' "$server";;
  token.example.com)
    printf '{"ServerURL":"%s","Username":"<token>","Secret":"refresh-tok"}' "$server";;
  https://index.docker.io/v1/)
    printf '{"ServerURL":"%s","Username":"hub-user","Secret":"hub-secret"}' "$server";;
  store.example.com)
    printf '{"ServerURL":"%s","Username":"store-user","Secret":"store-secret"}' "$server";;
  broken.example.com)
    echo "first line" >&2
    echo "keychain is locked" >&2
    exit 3;;
  garbage.example.com)
    echo "this is not json";;
  *)
    echo "credentials not found in native keychain"
    exit 1;;
esac
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install ``docker-credential-test`` on PATH; returns the invocation log."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "docker-credential-test"
    exe.write_text(HELPER)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    slow = bindir / "docker-credential-slow"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    log = tmp_path / "helper.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("HELPER_LOG", str(log))
    return log


def test_cred_helpers(helper: Path) -> None:
    cfg = DockerConfig.from_bytes(json.dumps({
        "auths": {"helped.example.com": {"auth": _b64("from-auths:ignored")}},
        "credHelpers": {"helped.example.com": "test", "token.example.com": "test",
                        "missing.example.com": "test", "docker.io": "test"},
    }))
    # credHelpers win over auths for the same host
    assert cfg.lookup("helped.example.com") == Credentials(username="helper-user",
                                                           password="helper-secret")
    # "<token>" as username means the secret is an identity (refresh) token
    tok = cfg.lookup("token.example.com")
    assert tok == Credentials(identity_token="refresh-tok")
    # "credentials not found" is no credentials, not an error
    assert cfg.lookup("missing.example.com") is None
    # Docker Hub is asked for by its historic server URL
    assert cfg.lookup("registry-1.docker.io") == Credentials(username="hub-user",
                                                             password="hub-secret")
    calls = helper.read_text().splitlines()
    assert calls == ["get helped.example.com", "get token.example.com",
                     "get missing.example.com", "get https://index.docker.io/v1/"]


def test_creds_store(helper: Path) -> None:
    cfg = DockerConfig.from_bytes(json.dumps({
        "auths": {"direct.example.com": {"auth": _b64("d:dp")}, "store.example.com": {}},
        "credsStore": "test",
    }))
    # auths entries with credentials win; empty entries (docker login with a store) and
    # unknown hosts go to the store
    assert cfg.lookup("direct.example.com") == Credentials(username="d", password="dp")
    assert cfg.lookup("store.example.com") == Credentials(username="store-user",
                                                          password="store-secret")
    assert cfg.lookup("nothing.example.com") is None
    assert helper.read_text().splitlines() == ["get store.example.com",
                                               "get nothing.example.com"]


def test_helper_failures(helper: Path) -> None:
    cfg = DockerConfig.from_bytes(json.dumps({"credHelpers": {
        "broken.example.com": "test", "garbage.example.com": "test",
        "absent.example.com": "not-installed-anywhere"}}))
    with pytest.raises(CredentialsError) as e:
        cfg.lookup("broken.example.com")
    assert str(e.value) == ("credential helper docker-credential-test failed for"
                            " broken.example.com: keychain is locked")
    with pytest.raises(CredentialsError, match="docker-credential-test returned invalid JSON"):
        cfg.lookup("garbage.example.com")
    with pytest.raises(CredentialsError,
                       match=r"docker-credential-not-installed-anywhere .*not on PATH"):
        cfg.lookup("absent.example.com")


def test_helper_timeout(helper: Path) -> None:
    with pytest.raises(CredentialsError, match="docker-credential-slow did not answer in 1s"):
        run_credential_helper("slow", "h.io", timeout=1.0)


def test_credential_resolver_order(helper: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    home_cfg = tmp_path / "dockercfg"
    home_cfg.mkdir()
    (home_cfg / "config.json").write_text(json.dumps({"auths": {
        "a.io": {"auth": _b64("home:a")}, "b.io": {"auth": _b64("home:b")}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(home_cfg))
    secret_cfg = DockerConfig.from_bytes(json.dumps({"auths": {
        "a.io": {"auth": _b64("secret:a")}}}))

    flag = Credentials(username="flag", password="f")
    assert CredentialResolver(creds=flag, configs=[secret_cfg])("a.io") is flag
    resolver = CredentialResolver(configs=[secret_cfg])
    assert resolver("a.io") == Credentials(username="secret", password="a")
    assert resolver("b.io") == Credentials(username="home", password="b")
    assert resolver("c.io") is None
    only_given = CredentialResolver(configs=[secret_cfg], use_docker_config=False)
    assert only_given("b.io") is None


# ------------------------------------------------------------------ Kubernetes secrets


def test_kubernetes_dockerconfigjson(tmp_path: Path) -> None:
    doc = {"auths": {"registry.example.com": {
        "username": "robot", "password": "robot-pw", "email": "r@example.com",
        "auth": _b64("robot:robot-pw")}}}
    raw = json.dumps(doc).encode()
    cfg = DockerConfig.from_bytes(raw, source="secret flux-system/regcred")
    assert cfg.lookup("registry.example.com") == Credentials(username="robot",
                                                             password="robot-pw")

    # --docker-config accepts the JSON document itself...
    as_json = tmp_path / "dockerconfig.json"
    as_json.write_bytes(raw)
    assert DockerConfig.from_file(as_json).lookup("registry.example.com") == Credentials(
        username="robot", password="robot-pw")
    # ...or a Secret manifest of type kubernetes.io/dockerconfigjson.
    secret = tmp_path / "secret.yaml"
    secret.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Secret
        metadata:
          name: regcred
          namespace: flux-system
        type: kubernetes.io/dockerconfigjson
        data:
          .dockerconfigjson: {base64.b64encode(raw).decode()}
        """))
    cfg2 = DockerConfig.from_file(secret)
    assert cfg2.lookup("registry.example.com") == Credentials(username="robot",
                                                              password="robot-pw")
    assert cfg2.source == str(secret)

    not_a_secret = tmp_path / "cm.yaml"
    not_a_secret.write_text("apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n")
    with pytest.raises(CredentialsError, match="neither JSON nor a Secret"):
        DockerConfig.from_file(not_a_secret)


# ------------------------------------------------------------------ challenges


def test_parse_bearer_challenge() -> None:
    c = parse_challenge('Bearer realm="https://auth.docker.io/token",'
                        'service="registry.docker.io",'
                        'scope="repository:library/nginx:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/nginx:pull,push"}


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ("BEARER Realm=https://h/token, Service=h", "bearer",
         {"realm": "https://h/token", "service": "h"}),
        ('Bearer realm="https://h/token" , service="a b"', "bearer",
         {"realm": "https://h/token", "service": "a b"}),
        ("Bearer", "bearer", {}),
        ('  Basic   realm="x"  ', "basic", {"realm": "x"}),
        ('Bearer realm="",service=""', "bearer", {"realm": "", "service": ""}),
    ],
)
def test_parse_challenge_forms(header: str, scheme: str, params: dict[str, str]) -> None:
    c = parse_challenge(header)
    assert c.scheme == scheme
    assert c.params == params


def test_parse_challenge_unescapes_quoted_pairs() -> None:
    c = parse_challenge(r'Bearer realm="https://h/token",service="my \"quoted\" reg"')
    assert c.params["service"] == 'my "quoted" reg'
    assert c.params["realm"] == "https://h/token"
