"""push-artifact's reports, from the CLI's JSON documents (no jq needed).

- ``report.py scan SCAN.json FAIL_ON``: print the findings, exit 1 when one is at a FAIL_ON
  severity (comma-separated; empty: report only);
- ``report.py push PUSH.json``: write the step outputs (pushed, digest, digest-url, url);
- ``report.py summary WORK``: the job summary's Markdown, from what the steps left in WORK.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

LEVELS = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")


def findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for result in report.get("Results") or []:
        for m in result.get("Misconfigurations") or []:
            out.append({"target": result.get("Target", ""), **m})
    return out


def scan(path: str, fail_on: str) -> int:
    found = findings(json.loads(Path(path).read_text()))
    gate = {s.strip().upper() for s in fail_on.split(",") if s.strip()}
    for f in found:
        print(f"{f.get('Severity')}: {f['target']}: {f.get('ID')} {f.get('Title')}")
    failing = [f for f in found if f.get("Severity") in gate]
    print(f"{len(found)} finding(s); {len(failing)} at {', '.join(sorted(gate)) or '(none)'}")
    if failing:
        print(f"::error title=ocigitops scan::{len(failing)} misconfiguration(s) at"
              f" {', '.join(sorted(gate))}: nothing was pushed")
        return 1
    return 0


def push(path: str) -> int:
    doc = json.loads(Path(path).read_text())
    repo, tag = doc["repository"], os.environ["OCIGITOPS_FIRST_TAG"]
    outputs = {"pushed": "true" if doc["pushed"] else "false", "digest": doc["digest"],
               "digest-url": f"oci://{repo}@{doc['digest']}", "url": f"oci://{repo}:{tag}"}
    with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as f:
        f.writelines(f"{k}={v}\n" for k, v in outputs.items())
    same = os.environ.get("DIFF_TAG", "")
    verb = "pushed" if doc["pushed"] else f"unchanged (same content as {same})"
    print(f"{outputs['url']} {verb}: {outputs['digest-url']}")
    return 0


def _load(work: Path, name: str) -> dict[str, Any] | None:
    try:
        doc = json.loads((work / name).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def summary(work_dir: str) -> int:
    work, env = Path(work_dir), os.environ
    lines = [f"### ocigitops push-artifact: `{env.get('REPOSITORY', '')}`", ""]
    doc = _load(work, "push.json")
    scanned = _load(work, "scan.json")
    if env.get("SCAN") == "trivy":
        if scanned is None:
            lines.append("- **Scan**: trivy did not finish")
        else:
            counts = Counter(f.get("Severity", "UNKNOWN") for f in findings(scanned))
            text = ", ".join(f"{counts[s]} {s}" for s in LEVELS if counts[s]) or "no findings"
            lines.append(f"- **Scan** (trivy {scanned.get('Trivy', {}).get('Version', '')}):"
                         f" {text}")
    if doc is None:
        lines.append("- **Pushed**: nothing (the job stopped before the push finished)")
    else:
        state = "yes" if doc["pushed"] else "no: the content is unchanged"
        lines += [f"- **Pushed**: {state}", f"- **Digest**: `{doc['digest']}`"]
        if doc["pushed"]:
            lines.append(f"- **Tags**: {', '.join(f'`{t}`' for t in _tags(work))}")
        sig, prov = doc.get("signature"), doc.get("provenance")
        if sig:
            lines.append(f"- **Signed** ({env.get('SIGN')}): {sig.get('kind', '')}"
                         f" {sig.get('signer', '')}".rstrip())
        elif env.get("SIGN", "none") != "none":
            lines.append("- **Signed**: no (nothing new was pushed)")
        if prov:
            lines.append("- **Attested**: SLSA provenance v1 of this run")
    rollout = work / "rollout.txt"
    if rollout.is_file():
        last = (rollout.read_text().strip().splitlines() or ["(no output)"])[-1]
        lines.append(f"- **Rollout**: {last.removeprefix('error: ')}")
    print("\n".join(lines) + "\n")
    return 0


def _tags(work: Path) -> list[str]:
    tags = [os.environ.get("OCIGITOPS_FIRST_TAG", "")]
    if _load(work, "tags.json") is not None:
        tags += os.environ.get("OCIGITOPS_MORE_TAGS", "").split()
    return tags


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "scan":
        sys.exit(scan(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""))
    if cmd == "push":
        sys.exit(push(sys.argv[2]))
    if cmd == "summary":
        sys.exit(summary(sys.argv[2]))
    sys.exit(f"unknown report {cmd!r}")
