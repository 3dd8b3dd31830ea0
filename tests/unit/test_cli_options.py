"""What the CLI hands to the library: shared option values (``ocigitops.options``), tables
(``ocigitops.table``), the cosign password and key-pair files (``ocigitops.publisher``),
and verification requests (``ocigitops.verifier.request``). No servers."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from ocigitops.errors import UsageError
from ocigitops.ignore import DEFAULT_IGNORE
from ocigitops.options import RegistryOptions, ignore_patterns, parse_annotations
from ocigitops.publisher.keygen import write_key_pair
from ocigitops.publisher.signing import cosign_password
from ocigitops.table import format_table
from ocigitops.verifier.errors import PolicyError
from ocigitops.verifier.keys import load_private_key
from ocigitops.verifier.policy import CosignKeyAuthority, CosignKeylessAuthority
from ocigitops.verifier.request import VerifyRequest, build_policy

pytestmark = pytest.mark.unit


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- options -------------------------------------------------------------------------------

def test_parse_annotations() -> None:
    assert parse_annotations(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    assert parse_annotations({"k": "v"}) == {"k": "v"}
    assert parse_annotations("k=v") == {"k": "v"}  # one string is one annotation
    assert parse_annotations(()) == {}
    for bad in ("novalue", "=v"):
        with pytest.raises(UsageError, match=f"--annotation '{bad}': use key=value"):
            parse_annotations(["ok=1", bad])


def test_ignore_patterns() -> None:
    assert ignore_patterns(None) == list(DEFAULT_IGNORE)
    assert ignore_patterns("a/, *.md") == ["a/", "*.md"]  # replaces the default
    assert ignore_patterns(None, ["x,y", "z"]) == [*DEFAULT_IGNORE, "x", "y", "z"]
    assert ignore_patterns("", ["z"]) == ["z"]


def test_registry_options_read_the_docker_config_when_the_client_is_made(
        tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("not json")
    opts = RegistryOptions(docker_config=bad)  # only a value: nothing is read yet
    with pytest.raises(Exception, match="neither JSON nor a Secret"):
        opts.client()


def test_format_table() -> None:
    assert format_table([("A", "BB"), ("long", "x"), ("y", "")]) == "A     BB\nlong  x\ny"
    assert format_table([("ONLY",)]) == "ONLY"


# -- the cosign password and key pairs --------------------------------------------------------

def test_cosign_password_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    # An empty variable is an empty password, as in cosign: the prompt is not asked.
    assert cosign_password(lambda confirm: pytest.fail("prompted")) == b""


def test_cosign_password_prompts_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    asked: list[bool] = []

    def prompt(confirm: bool) -> str:
        asked.append(confirm)
        return "typed"

    monkeypatch.setattr("sys.stdin", io.StringIO())
    with pytest.raises(UsageError, match="set COSIGN_PASSWORD"):
        cosign_password(prompt)
    assert asked == []
    monkeypatch.setattr("sys.stdin", _Tty())
    assert cosign_password(prompt, confirm=True) == b"typed"
    assert asked == [True]
    with pytest.raises(UsageError, match="set COSIGN_PASSWORD"):
        cosign_password(None)  # no way to ask


def test_write_key_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    files = write_key_pair()
    assert files == type(files)(Path("cosign.key"), Path("cosign.pub"))
    assert files.lines() == ["Private key written to cosign.key",
                             "Public key written to cosign.pub"]
    assert stat.S_IMODE((tmp_path / "cosign.key").stat().st_mode) == 0o600
    assert b"ENCRYPTED" in (tmp_path / "cosign.key").read_bytes()
    load_private_key((tmp_path / "cosign.key").read_bytes(), b"pw")  # decrypts with it
    before = (tmp_path / "cosign.key").read_bytes()
    monkeypatch.delenv("COSIGN_PASSWORD")
    # Existing files are refused before the password is asked for (no variable, no tty).
    with pytest.raises(UsageError, match=r"cosign\.key exists: pass --force"):
        write_key_pair()
    assert (tmp_path / "cosign.key").read_bytes() == before
    monkeypatch.setenv("COSIGN_PASSWORD", "pw2")
    again = write_key_pair("cosign", force=True)
    assert again.private_key.read_bytes() != before
    sub = write_key_pair(str(tmp_path / "keys-release"))
    assert sub.public_key == tmp_path / "keys-release.pub" and sub.public_key.exists()


# -- verification requests ------------------------------------------------------------------

def _pub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    return write_key_pair().public_key


def test_build_policy_from_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pub = _pub(tmp_path, monkeypatch)
    policy = build_policy(VerifyRequest(url="oci://r/a:v1", keys=[pub],
                                        annotations=["env=prod"], require_tlog=True))
    (auth,) = policy.authorities
    assert isinstance(auth, CosignKeyAuthority)
    assert auth.annotations == {"env": "prod"} and auth.require_tlog
    both = build_policy(VerifyRequest(
        url="oci://r/a:v1", keys=[pub], identity="me@example.com",
        issuer="https://issuer.example", github_workflow_repository="acme/app",
        github_workflow_sha="abc", rule="all"))
    assert [type(a) for a in both.authorities] == [CosignKeyAuthority, CosignKeylessAuthority]
    keyless = both.authorities[1]
    assert isinstance(keyless, CosignKeylessAuthority)
    assert keyless.identities[0].github == {"repository": "acme/app", "sha": "abc"}


def test_build_policy_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pub = _pub(tmp_path, monkeypatch)
    with pytest.raises(PolicyError, match="nothing to verify with"):
        build_policy(VerifyRequest(url="oci://r/a:v1"))
    with pytest.raises(PolicyError, match="keyless verification needs both"):
        build_policy(VerifyRequest(url="oci://r/a:v1", identity="x"))
    with pytest.raises(PolicyError):
        build_policy(VerifyRequest(url="oci://r/a:v1", keys=[pub], rule="2"))
    with pytest.raises(UsageError, match="--annotation 'bad'"):
        build_policy(VerifyRequest(url="oci://r/a:v1", keys=[pub], annotations=["bad"]))


def test_build_policy_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pub = _pub(tmp_path, monkeypatch)
    doc = tmp_path / "policy.yaml"
    doc.write_text(f"rule: any\nauthorities:\n  - name: release\n    cosign: {{keys: [{pub}]}}\n")
    policy = build_policy(VerifyRequest(url="oci://r/a:v1", policy_file=doc,
                                        annotations=["not-parsed-with-a-file"]))
    assert [a.name for a in policy.authorities] == ["release"]
    with pytest.raises(UsageError, match="--require applies to flag authorities"):
        build_policy(VerifyRequest(url="oci://r/a:v1", policy_file=doc, rule="all"))
