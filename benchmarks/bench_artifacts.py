#!/usr/bin/env python3
"""Benchmark ``ocigitops`` against ``flux`` for push/pull of artifacts and CLI start-up.

Run on demand (not part of the test suite)::

    python benchmarks/bench_artifacts.py [--files 1000] [--size-mb 20] [--repeat 3]

It generates a deterministic tree of Kubernetes YAML, starts one Debian
``docker-registry`` (plain HTTP) via ``tests.helpers.registries.debian`` and times each command
as a separate process, alternating ours/flux. Wall time, peak RSS (``ru_maxrss`` of the
command itself, via GNU ``/usr/bin/time``; see :func:`run_measured`) and CPU time are
reported as medians, with ``ours/flux`` ratios, a PASS/MISS line per target and a final
``BENCH_JSON {...}`` line. It always exits 0 when the measurements ran: benchmarks
report, they don't gate. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import random
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from measure import Sample, byte_compile, console_script, med, rss_via, run_measured  # noqa: E402

from tests.helpers.registries import debian  # noqa: E402
from tests.helpers.tools import tool  # noqa: E402

STARTUP_RUNS = 10
STARTUP_TARGET_S = 0.3

# --------------------------------------------------------------------------------------
# Content generation
# --------------------------------------------------------------------------------------

_WORDS = [
    "api", "gateway", "billing", "cart", "catalog", "checkout", "frontend", "inventory",
    "ledger", "payments", "search", "session", "shipping", "user", "auth", "cache", "queue",
    "worker", "scheduler", "notifier", "metrics", "tracing", "logging", "export", "import",
    "report", "audit", "backup", "sync", "index", "ingest", "stream", "batch", "admin",
]
_ENVS = ["dev", "staging", "prod", "canary", "qa"]
_REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1", "eu-central-1"]
_LEVELS = ["debug", "info", "warn", "error"]
_IMAGES = ["nginx", "redis", "postgres", "busybox", "envoyproxy/envoy", "ghcr.io/acme/app"]


def _name(rng: random.Random) -> str:
    return "-".join(rng.sample(_WORDS, rng.randint(1, 3)))


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _deployment(rng: random.Random, name: str, ns: str) -> str:
    lines = [
        "apiVersion: apps/v1", "kind: Deployment", "metadata:", f"  name: {name}",
        f"  namespace: {ns}", "  labels:", f"    app.kubernetes.io/name: {name}",
        f"    app.kubernetes.io/part-of: {rng.choice(_WORDS)}",
        f"    environment: {rng.choice(_ENVS)}", "  annotations:",
        f"    checksum/config: {_hex(rng, 64)}",
        f"    deployment.kubernetes.io/revision: \"{rng.randint(1, 400)}\"",
        "spec:", f"  replicas: {rng.randint(1, 12)}",
        f"  revisionHistoryLimit: {rng.randint(2, 10)}", "  selector:", "    matchLabels:",
        f"      app.kubernetes.io/name: {name}", "  template:", "    metadata:",
        "      labels:", f"        app.kubernetes.io/name: {name}", "    spec:",
        f"      serviceAccountName: {name}-sa", "      containers:",
    ]
    for c in range(rng.randint(1, 3)):
        img = rng.choice(_IMAGES)
        lines += [
            f"      - name: {name}-{c}",
            f"        image: {img}:{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
            f"@sha256:{_hex(rng, 64)}",
            "        ports:", f"        - containerPort: {rng.choice([80, 443, 8080, 9090])}",
            "          protocol: TCP", "        env:",
        ]
        for _ in range(rng.randint(4, 14)):
            key = "_".join(rng.sample(_WORDS, 2)).upper()
            val = rng.choice([str(rng.randint(0, 100000)), _name(rng), _hex(rng, 16),
                              f"https://{_name(rng)}.{rng.choice(_REGIONS)}.example.com"])
            lines += [f"        - name: {key}", f"          value: \"{val}\""]
        lines += [
            "        resources:", "          requests:",
            f"            cpu: {rng.randint(10, 2000)}m",
            f"            memory: {rng.randint(16, 4096)}Mi", "          limits:",
            f"            cpu: {rng.randint(100, 4000)}m",
            f"            memory: {rng.randint(64, 8192)}Mi", "        readinessProbe:",
            "          httpGet:", f"            path: /{rng.choice(_WORDS)}/healthz",
            f"            port: {rng.choice([80, 8080, 9090])}",
            f"          periodSeconds: {rng.randint(5, 60)}",
        ]
    return "\n".join(lines) + "\n"


def _configmap(rng: random.Random, name: str, ns: str, target: int) -> str:
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata:", f"  name: {name}-config",
             f"  namespace: {ns}", "data:"]
    size = sum(len(x) + 1 for x in lines)
    n = 0
    seen: list[list[str]] = []
    while size < target:
        n += 1
        kind = rng.random()
        if seen and rng.random() < 0.4:
            # Per-environment variants of an earlier block, as real config repeats itself.
            prev = rng.choice(seen)
            env = rng.choice(_ENVS)
            block = [f"  {env}-{n}-{prev[0].strip()}"]
            block += [x.replace("true", "false") if rng.random() < 0.1 else x
                      for x in prev[1:]]
        elif kind < 0.5:
            # An application properties / INI-like block.
            block = [f"  {_name(rng)}-{n}.properties: |"]
            for _ in range(rng.randint(5, 25)):
                key = ".".join(rng.sample(_WORDS, rng.randint(2, 4)))
                val = rng.choice([
                    str(rng.randint(0, 10**6)), rng.choice(["true", "false"]),
                    rng.choice(_LEVELS), _hex(rng, 8),
                    f"{_name(rng)}.{rng.choice(_ENVS)}.svc.cluster.local:"
                    f"{rng.randint(1024, 65535)}",
                    " ".join(rng.choices(_WORDS, k=rng.randint(2, 8))),
                ])
                block.append(f"    {key}={val}")
        elif kind < 0.8:
            # A JSON document.
            block = [f"  {_name(rng)}-{n}.json: |", "    {"]
            for i in range(rng.randint(4, 16)):
                sep = "," if i else ""
                block.append(f"      {sep}\"{rng.choice(_WORDS)}_{i}\": "
                             f"{json.dumps(rng.choice([rng.randint(0, 9999), _name(rng), True]))}")
            block.append("    }")
        else:
            # A log-format / rules snippet.
            block = [f"  {_name(rng)}-{n}.rules: |"]
            for _ in range(rng.randint(3, 12)):
                block.append(f"    - match: \"{rng.choice(_WORDS)}/{_hex(rng, 6)}\" "
                             f"action: {rng.choice(['allow', 'deny', 'log'])} "
                             f"weight: {rng.randint(1, 100)} "
                             f"region: {rng.choice(_REGIONS)}")
        seen.append(block)
        lines += block
        size += sum(len(x) + 1 for x in block)
    return "\n".join(lines) + "\n"


def generate_tree(root: Path, files: int, size_mb: float, seed: int = 20240601) -> int:
    """Write ``files`` YAML files totalling about ``size_mb`` MB under ``root``; bytes."""
    rng = random.Random(seed)
    per_file = int(size_mb * 1024 * 1024 / max(files, 1))
    total = 0
    for i in range(files):
        ns = f"team-{i % 17:02d}"
        app = f"{_name(rng)}-{i:04d}"
        d = root / ns / app.split("-")[0]
        d.mkdir(parents=True, exist_ok=True)
        deploy = _deployment(rng, app, ns)
        body = deploy + "---\n" + _configmap(rng, app, ns, max(per_file - len(deploy), 200))
        p = d / f"{app}.yaml"
        p.write_text(body)
        total += len(body.encode())
    return total


def gzip_ratio(root: Path) -> tuple[int, int]:
    """(tar bytes, tar.gz bytes) of the tree, to show the compressibility."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(root, arcname=".")
    raw = buf.getvalue()
    return len(raw), len(gzip.compress(raw, compresslevel=6))


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


def count_files(root: Path) -> int:
    """Regular files under root."""
    return sum(1 for p in root.rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000, help="YAML files in the tree")
    ap.add_argument("--size-mb", type=float, default=20.0, help="total size of the tree")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and operation")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (prints it)")
    args = ap.parse_args()

    byte_compile()  # what an installed copy has (see measure.byte_compile)
    ours = console_script()
    if not ours:
        print("ocigitops is not on PATH (pip install -e .)", file=sys.stderr)
        return 2
    flux = tool("flux")

    tmp = Path(tempfile.mkdtemp(prefix="ocigitops-bench-"))
    log = tmp / "commands.log"
    try:
        tree = tmp / "tree"
        t0 = time.perf_counter()
        raw_bytes = generate_tree(tree, args.files, args.size_mb)
        tar_bytes, gz_bytes = gzip_ratio(tree)
        print(f"tree: {args.files} files, {raw_bytes / 2**20:.1f} MiB, tar.gz "
              f"{gz_bytes / 2**20:.2f} MiB (ratio {tar_bytes / gz_bytes:.1f}x), "
              f"generated in {time.perf_counter() - t0:.1f}s", flush=True)

        results: dict[str, dict[str, dict[str, float]]] = {}
        with debian(tmp / "registry") as reg:
            host = reg.host
            print(f"registry: docker-registry at {host} (plain HTTP)", flush=True)
            common = ["--source", "bench", "--revision", "main@sha1:" + "0" * 40,
                      "--insecure-registry"]

            # ---- push: a new repository per iteration, so every push uploads its layer.
            push: dict[str, list[Sample]] = {"ours": [], "flux": []}
            refs: dict[str, list[str]] = {"ours": [], "flux": []}
            for i in range(args.repeat):
                order = ["ours", "flux"] if i % 2 == 0 else ["flux", "ours"]
                for who in order:
                    ref = f"oci://{host}/bench/{who}-{i}:v{i}"
                    exe = ours if who == "ours" else flux
                    s, _ = run_measured([exe, "push", "artifact", ref, "--path", str(tree),
                                         *common], log, sync=True)
                    push[who].append(s)
                    refs[who].append(ref)
                    print(f"  push {who:4s} #{i}: {s.wall:6.2f}s {s.rss_mib:7.1f} MiB",
                          flush=True)
            results["push"] = {k: med(v) for k, v in push.items()}

            # ---- pull: the artifact each tool pushed, with both tools, fresh output dirs.
            pull: dict[str, list[Sample]] = {"ours": [], "flux": []}
            pull_by_src: dict[str, list[Sample]] = {}
            n = 0
            for i in range(args.repeat):
                for src in ("flux", "ours"):
                    ref = refs[src][0]
                    order = ["ours", "flux"] if n % 2 == 0 else ["flux", "ours"]
                    n += 1
                    for who in order:
                        out = tmp / f"pull-{who}-{src}-{i}"
                        out.mkdir()  # flux needs it to exist; fresh and empty for both
                        exe = ours if who == "ours" else flux
                        s, _ = run_measured([exe, "pull", "artifact", ref, "--output",
                                             str(out), "--insecure-registry"], log,
                                            sync=True)
                        got = count_files(out)
                        if got != args.files:
                            raise RuntimeError(f"{who} pulled {got} files from {ref}")
                        shutil.rmtree(out)
                        pull[who].append(s)
                        pull_by_src.setdefault(f"{who}<-{src}", []).append(s)
                        print(f"  pull {who:4s} of {src}-pushed #{i}: {s.wall:6.2f}s "
                              f"{s.rss_mib:7.1f} MiB", flush=True)
            results["pull"] = {k: med(v) for k, v in pull.items()}
            results["pull_detail"] = {k: med(v) for k, v in pull_by_src.items()}

        # ---- start-up.
        start: dict[str, list[Sample]] = {"ours": [], "flux": []}
        for i in range(STARTUP_RUNS):
            order = ["ours", "flux"] if i % 2 == 0 else ["flux", "ours"]
            for who in order:
                exe = ours if who == "ours" else flux
                start[who].append(run_measured([exe, "--version"], log, sync=True)[0])
        results["startup"] = {k: med(v) for k, v in start.items()}
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- report.
    print()
    hdr = (f"{'operation':<10} {'ours wall':>10} {'flux wall':>10} {'ratio':>6}   "
           f"{'ours RSS':>9} {'flux RSS':>9} {'ratio':>6}   {'ours CPU':>9} {'flux CPU':>9}")
    print(hdr)
    print("-" * len(hdr))
    ratios: dict[str, dict[str, float]] = {}
    for op in ("push", "pull", "startup"):
        o, f = results[op]["ours"], results[op]["flux"]
        rw, rr = o["wall_s"] / f["wall_s"], o["rss_mib"] / f["rss_mib"]
        ratios[op] = {"wall": rw, "rss": rr}
        print(f"{op:<10} {o['wall_s']:>9.3f}s {f['wall_s']:>9.3f}s {rw:>6.2f}   "
              f"{o['rss_mib']:>7.1f}Mi {f['rss_mib']:>7.1f}Mi {rr:>6.2f}   "
              f"{o['cpu_s']:>8.3f}s {f['cpu_s']:>8.3f}s")
    print()
    print("pull by (puller <- pusher):")
    for k, v in sorted(results["pull_detail"].items()):
        print(f"  {k:<12} {v['wall_s']:.3f}s {v['rss_mib']:.1f} MiB")
    print()
    targets = {
        "push wall ratio <= 1.0": ratios["push"]["wall"] <= 1.0,
        "pull wall ratio <= 1.0": ratios["pull"]["wall"] <= 1.0,
        f"start-up < {STARTUP_TARGET_S}s": results["startup"]["ours"]["wall_s"]
        < STARTUP_TARGET_S,
    }
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
          f"{os.cpu_count()} CPUs (other work on the machine adds noise)")
    doc = {
        "files": args.files, "tree_mib": round(raw_bytes / 2**20, 2),
        "gzip_ratio": round(tar_bytes / gz_bytes, 2), "repeat": args.repeat,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in load],
        "rss_via": rss_via(),
        "results": results, "ratios": ratios,
        "targets": {k: ("PASS" if v else "MISS") for k, v in targets.items()},
    }
    print("BENCH_JSON " + json.dumps(doc, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
