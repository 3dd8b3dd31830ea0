"""``generate key-pair``, ``push --sign``, ``sign artifact`` and ``verify artifact`` through
the real CLI on a registry with the referrers API (olareg) and one without (distribution)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import ocigitops
from tests.helpers.registries import Registry

pytestmark = pytest.mark.integration

REV = "main@sha1:0123456789abcdef0123456789abcdef01234567"
ENV = {"COSIGN_PASSWORD": "correct horse"}


@pytest.fixture(params=["olareg_registry", "debian_plain"])
def registry(request: pytest.FixtureRequest) -> Registry:
    reg: Registry = request.getfixturevalue(request.param)
    return reg


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two cosign key pairs made by ``ocigitops generate key-pair``: (dir, key, pub)."""
    d = tmp_path_factory.mktemp("keys")
    ocigitops("generate", "key-pair", cwd=d, env=ENV)
    ocigitops("generate", "key-pair", "--output-key-prefix", "other", cwd=d, env=ENV)
    assert (d / "cosign.key").read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE")
    return d, d / "cosign.key", d / "cosign.pub"


def _push(reg: Registry, repo: str, tmp: Path, *extra: str) -> str:
    tree = tmp / "tree"
    tree.mkdir(exist_ok=True)
    name = repo.replace("/", "-")
    (tree / "ns.yaml").write_text(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
    out = json.loads(ocigitops("push", "artifact", reg.url(repo) + ":v1", "--path", str(tree),
                               "--source", "s", "--revision", REV, "-o", "json",
                               *reg.cli_flags(), *extra, env=ENV).stdout)
    return str(out["digest"])


def _verify(reg: Registry, ref: str, *args: str) -> tuple[int, dict[str, object]]:
    res = ocigitops("verify", "artifact", ref, "-o", "json", *reg.cli_flags(), *args,
                    check=False)
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout)


def test_push_sign_then_verify(registry: Registry, keys: tuple[Path, Path, Path],
                               tmp_path: Path) -> None:
    d, key, pub = keys
    digest = _push(registry, "signed/bundle", tmp_path, "--sign", "--key", str(key))
    code, doc = _verify(registry, registry.url("signed/bundle") + ":v1", "--key", str(pub))
    assert code == 0 and doc["verified"] is True and doc["digest"] == digest
    (auth,) = doc["authorities"]  # type: ignore[misc]
    assert auth["passed"] and auth["signer"].startswith("key sha256:")
    assert [s["kind"] for s in doc["signatures"]] == ["cosign-bundle"]  # type: ignore[index]
    # the other key did not sign it
    code, doc = _verify(registry, registry.url("signed/bundle") + ":v1", "--key",
                        str(d / "other.pub"))
    assert code == 1 and doc["verified"] is False
    assert "signature" in str(doc["authorities"]).lower()


def test_legacy_format_with_annotations(registry: Registry, keys: tuple[Path, Path, Path],
                                        tmp_path: Path) -> None:
    _, key, pub = keys
    _push(registry, "signed/legacy", tmp_path)
    ref = registry.url("signed/legacy") + ":v1"
    ocigitops("sign", "artifact", ref, "--key", str(key), "--format", "legacy", "-a",
              "env=prod", *registry.cli_flags(), env=ENV)
    assert _verify(registry, ref, "--key", str(pub), "-a", "env=prod")[0] == 0
    code, doc = _verify(registry, ref, "--key", str(pub), "-a", "env=dev")
    assert code == 1 and "env" in json.dumps(doc["authorities"])


def test_unsigned_and_human_output(registry: Registry, keys: tuple[Path, Path, Path],
                                   tmp_path: Path) -> None:
    _, _, pub = keys
    _push(registry, "unsigned/app", tmp_path)
    res = ocigitops("verify", "artifact", registry.url("unsigned/app") + ":v1", "--key",
                    str(pub), *registry.cli_flags(), check=False)
    assert res.returncode == 1
    assert "no signatures found" in res.stdout and "NOT verified" in res.stdout


def test_policy_file_rules(registry: Registry, keys: tuple[Path, Path, Path],
                           tmp_path: Path) -> None:
    d, key, _ = keys
    _push(registry, "policy/app", tmp_path, "--sign", "--key", str(key))
    ref = registry.url("policy/app") + ":v1"
    for rule, expected in (("any", 0), ("all", 1), (1, 0), (2, 1)):
        policy = tmp_path / f"policy-{rule}.yaml"
        policy.write_text(
            f"rule: {rule}\n"
            "authorities:\n"
            f"  - name: release-key\n    cosign:\n      keys: [{d / 'cosign.pub'}]\n"
            f"  - name: security-key\n    cosign:\n      keys: [{d / 'other.pub'}]\n")
        code, doc = _verify(registry, ref, "--policy", str(policy))
        assert code == expected, (rule, doc)
        passed = {a["name"]: a["passed"] for a in doc["authorities"]}  # type: ignore[attr-defined]
        assert passed == {"release-key": True, "security-key": False}


def test_bad_inputs_give_one_line_errors(registry: Registry, keys: tuple[Path, Path, Path],
                                         tmp_path: Path) -> None:
    _, key, _ = keys
    ref = registry.url("signed/bundle") + ":v1"
    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n")
    cases = [
        (["verify", "artifact", ref, "--key", str(bad)], {}),
        (["sign", "artifact", ref, "--key", str(key)], {"COSIGN_PASSWORD": "wrong"}),
        (["verify", "artifact", ref, "--certificate-identity-regexp", "([",
          "--certificate-oidc-issuer", "https://token.actions.githubusercontent.com"], {}),
        (["verify", "artifact", ref], {}),
    ]
    for args, env in cases:
        res = ocigitops(*args, *registry.cli_flags(), env=env, check=False)
        assert res.returncode != 0, args
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
        assert "Traceback" not in res.stderr
