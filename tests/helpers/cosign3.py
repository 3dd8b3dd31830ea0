"""The real cosign v3.0.2 binary (``cosign3`` in the tools cache), offline, in its own HOME:
the peer of the attestation and provenance interop tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ocigitops.verifier.bundles import PUBLIC_GOOD_TRUSTED_ROOT
from tests.helpers.cli import run
from tests.helpers.tools import tool

#: The password of the key pairs the tests generate with cosign (``COSIGN_PASSWORD``).
PASSWORD = "attest-pw"


class Cosign3:
    """cosign v3.0.2, offline, in its own HOME."""

    def __init__(self, tmp: Path) -> None:
        self.cwd = tmp
        (tmp / "home").mkdir(exist_ok=True)
        self.env = {
            "HOME": str(tmp / "home"), "COSIGN_PASSWORD": PASSWORD,
            "TUF_ROOT": str(tmp / "tuf"), "COSIGN_YES": "true", "SIGSTORE_ID_TOKEN": "",
            "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([tool("cosign3", "cosign"), *args], check=check, cwd=self.cwd,
                   env=self.env, timeout=120)

    def attest(self, key: Path, ref: str, predicate: Path, type_: str) -> None:
        self("attest", "--key", str(key), "--type", type_, "--predicate", str(predicate),
             "--new-bundle-format", "--tlog-upload=false", "--use-signing-config=false",
             "--allow-insecure-registry", "--allow-http-registry", "-y", ref)

    def verify_attestation(self, pub: Path, ref: str, type_: str
                           ) -> subprocess.CompletedProcess[str]:
        return self("verify-attestation", "--key", str(pub), "--type", type_,
                    "--insecure-ignore-tlog=true", "--trusted-root",
                    str(PUBLIC_GOOD_TRUSTED_ROOT), "--allow-insecure-registry",
                    "--allow-http-registry", ref, check=False)
