"""verify's report: ``report.py OUT.json EXIT_CODE URL`` reads ``ocigitops verify artifact -o
json``'s document, writes the step outputs and the job summary, and exits 1 unless the
policy passed (exit 0)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def repository(url: str) -> str:
    ref = url.removeprefix("oci://").split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else ref


def main(out: str, code: int, url: str) -> int:
    try:
        doc: dict[str, Any] = json.loads(Path(out).read_text() or "{}")
    except ValueError:
        doc = {}
    passed = code == 0 and doc.get("verified") is True
    digest = str(doc.get("digest") or "")
    outputs = {"verified": "true" if passed else "false", "digest": digest,
               "digest-url": f"oci://{repository(url)}@{digest}" if digest else ""}
    with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as f:
        f.writelines(f"{k}={v}\n" for k, v in outputs.items())
    lines = [f"### ocigitops verify: `{url}`", "",
             f"- **Verified**: {'yes' if passed else 'NO'}"]
    if digest:
        lines.append(f"- **Digest**: `{digest}`")
    for a in doc.get("authorities") or []:
        mark = "passed" if a.get("passed") else f"failed: {a.get('reason', '')}"
        lines.append(f"- authority `{a.get('name')}` ({a.get('kind')}): {mark}")
    for a in doc.get("attestations") or []:
        mark = "passed" if a.get("passed") else f"failed: {a.get('reason', '')}"
        lines.append(f"- attestation `{a.get('name')}` ({a.get('predicateType')}): {mark}")
    if doc.get("error"):
        lines.append(f"- **Error**: {doc['error']}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n\n")
    print("\n".join(lines[2:]))
    if not passed:
        why = doc.get("error") or "the policy did not pass"
        print(f"::error title=ocigitops verify::{url}: {why} (exit {code})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
