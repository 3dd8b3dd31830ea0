"""push-artifact, step 1: check the inputs, write the signing keys to a private work folder
and hand the tags to the later steps through GITHUB_ENV. Reads only its environment; prints
no secret. Exit 1 with a GitHub ``::error::`` line on a bad input."""

from __future__ import annotations

import os
import re
import sys
import tempfile

TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
CHOICES = {"SIGN": ("none", "keyless", "key", "notation"), "SCAN": ("none", "trivy"),
           "RENDER": ("none", "kustomize", "helm"), "PROVENANCE": ("true", "false")}


def fail(message: str) -> None:
    print(f"::error title=ocigitops push-artifact::{message}")
    sys.exit(1)


def write_secret(folder: str, name: str, text: str) -> None:
    fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")


def main() -> None:
    env = os.environ
    repo = env.get("REPOSITORY", "").strip()
    if not repo:
        fail("repository is required (e.g. ghcr.io/acme/app-manifests)")
    if "://" in repo:
        fail(f"repository must not have a scheme: give {repo.split('://', 1)[1]!r}, without oci://")
    if repo != repo.lower():
        fail(f"repository must be lowercase (OCI repository names are): {repo.lower()!r}")
    if ":" in repo.split("/", 1)[-1] or "@" in repo:
        fail("repository must not carry a tag or digest: put the tags in 'tags'")
    for name, allowed in CHOICES.items():
        if env.get(name, "") not in allowed:
            fail(f"{name.lower()} must be one of {', '.join(allowed)}, not {env.get(name, '')!r}")
    tags = [t.strip() for t in re.split(r"[,\s]+", env.get("TAGS", "")) if t.strip()]
    if not tags:
        fail("tags must name at least one tag")
    for t in tags:
        if not TAG.match(t):
            fail(f"invalid tag {t!r}")
    sign = env["SIGN"]
    if env["PROVENANCE"] == "true" and sign not in ("key", "keyless"):
        fail("provenance is signed with cosign: set sign to key or keyless")
    work = tempfile.mkdtemp(prefix="ocigitops-", dir=env.get("RUNNER_TEMP") or None)
    if sign == "key":
        if not env.get("COSIGN_KEY_PEM"):
            fail("sign: key needs cosign-key (the private key, from a secret)")
        write_secret(work, "cosign.key", env["COSIGN_KEY_PEM"])
    if sign == "notation":
        if not env.get("NOTATION_KEY_PEM") or not env.get("NOTATION_CERT_PEM"):
            fail("sign: notation needs notation-key and notation-cert")
        write_secret(work, "notation.key", env["NOTATION_KEY_PEM"])
        write_secret(work, "notation.crt", env["NOTATION_CERT_PEM"])
    with open(env["GITHUB_ENV"], "a", encoding="utf-8") as f:
        f.write(f"OCIGITOPS_WORK={work}\nOCIGITOPS_FIRST_TAG={tags[0]}\n"
                f"OCIGITOPS_MORE_TAGS={' '.join(dict.fromkeys(tags[1:]))}\n")
    print(f"oci://{repo}: tags {', '.join(tags)}; sign {sign}; scan {env['SCAN']}")


if __name__ == "__main__":
    main()
