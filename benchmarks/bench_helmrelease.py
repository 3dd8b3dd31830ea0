#!/usr/bin/env python3
"""Benchmark HelmRelease: N releases of a small chart from OCIRepositories on the dev cluster.

Run on demand (not part of the test suite)::

    python benchmarks/bench_helmrelease.py [--releases 100,500] [--concurrent 4]
        [--concurrent-helm 2] [--helm-engine binary|sdk]

For each N it starts a fresh dev cluster (``ocigitops.puller.devcluster.cluster_up``) in a
temp state dir, applies the CRDs, runs ``ocigitops controller run --concurrent C`` as a
subprocess, and creates N HelmReleases (``chartRef`` to an OCIRepository: one per release,
or one per namespace with ``--shared-source``) of one small chart (a ConfigMap and a
one-replica Deployment that kwok makes Ready, so Helm's wait has something to wait for)
pushed once with ``ocigitops push chart`` to the embedded registry
(``ocigitops.regserver.BackgroundRegistry``, in this process). It reports the time from
creation until every HelmRelease is Ready=True, the controller's peak RSS (VmHWM of the
Python process) and the peak RSS of the controller with its helm processes (sampled sum,
what a pod's memory limit sees), the controller's and the helm processes' CPU, and the
most helm processes seen at once.

The engine is the controller's ``--helm-engine`` (default ``binary``: the helm 4 binary,
at most ``--concurrent-helm`` processes at once, default 2; ``sdk``: Helm's Go SDK in the
controller process). helm 4 comes from ``scripts/install-tools helm4`` (found as the
controller finds it: ``$OCIGITOPS_HELM4``, the tools cache, then PATH).

A table, PASS/MISS per target (100 Ready within 60 s, controller RSS < 300 MiB), Flux's
published reference figures, and a final ``BENCH_JSON {...}`` line. It exits 0 when the
measurements ran: benchmarks report, they don't gate. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import yaml  # noqa: E402
from bench_controller import (  # noqa: E402
    _log_summary,
    add_nodes,
    controller_metrics,
    count_ready,
    cpu_seconds,
    kube_http,
    vm_hwm_kib,
)
from measure import wait_ready  # noqa: E402

from ocigitops.puller.api.meta import API_VERSION  # noqa: E402
from ocigitops.puller.devcluster import cluster_down, cluster_up, free_port  # noqa: E402
from ocigitops.puller.helm.binary import find_helm4  # noqa: E402
from ocigitops.puller.kube import DynamicClient  # noqa: E402
from ocigitops.regserver import BackgroundRegistry  # noqa: E402

READY_TARGET_RELEASES = 100
READY_TARGET_S = 60.0
RSS_TARGET_MIB = 300.0
# Flux's published figures for its helm-controller (Flux 2.x benchmark, GitHub runner with
# 16 cores): 100 HelmReleases Ready in 26 s, the controller at 286 MiB.
FLUX_REFERENCE = {"releases": 100, "ready_s": 26.0, "rss_mib": 286.0, "cpus": 16,
                  "note": "Flux helm-controller, published benchmark, 16-core runner"}
CHART_REPO = "bench/charts"
CHART_LAYER = {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
               "operation": "copy"}

# --------------------------------------------------------------------------------------
# The chart
# --------------------------------------------------------------------------------------


def write_chart(root: Path) -> Path:
    """``tiny`` 0.1.0: a ConfigMap and a one-replica Deployment."""
    d = root / "tiny"
    (d / "templates").mkdir(parents=True)
    (d / "Chart.yaml").write_text('apiVersion: v2\nname: tiny\nversion: 0.1.0\n'
                                  'appVersion: "1.0.0"\n')
    (d / "values.yaml").write_text("message: hello\n")
    (d / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  message: {{ .Values.message | quote }}\n")
    (d / "templates" / "deploy.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-app\n"
        "spec:\n  replicas: 1\n  selector:\n    matchLabels: {app: {{ .Release.Name }}}\n"
        "  template:\n    metadata:\n      labels: {app: {{ .Release.Name }}}\n    spec:\n"
        "      containers:\n      - name: app\n        image: registry.example/app:1\n")
    return d


def push_chart(chart: Path, host: str, log: Path) -> str:
    """``ocigitops push chart`` (the CLI, as a person runs it); the chart's OCI URL."""
    with open(log, "ab") as f:
        subprocess.run([sys.executable, "-m", "ocigitops.cli", "push", "chart", str(chart),
                        f"oci://{host}/{CHART_REPO}"], stdout=f, stderr=f, check=True,
                       timeout=120)
    return f"oci://{host}/{CHART_REPO}/tiny"


# --------------------------------------------------------------------------------------
# Cluster helpers
# --------------------------------------------------------------------------------------


async def apply_crds(kubeconfig: Path) -> None:
    dyn = DynamicClient.from_kubeconfig(str(kubeconfig))
    try:
        for path in sorted((REPO_ROOT / "deploy" / "crds").glob("*.yaml")):
            await dyn.apply(yaml.safe_load(path.read_text()), force=True)
        deadline = time.monotonic() + 60
        for name in ("ocirepositories.ocigitops.dev", "helmreleases.ocigitops.dev",
                     "helmcharts.ocigitops.dev"):
            while True:
                crd = await dyn.get("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                    name) or {}
                conds = (crd.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in conds):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"CRD {name} not Established")
                await asyncio.sleep(0.2)
    finally:
        await dyn.aclose()


def release_objects(i: int, args: argparse.Namespace, url: str,
                    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The namespace, the OCIRepository (``tiny``, one per namespace, when shared) and the
    HelmRelease of release ``i``."""
    name = f"r{i:04d}"
    ns = f"bench-hr-{i // args.per_namespace:03d}"
    src_name = "tiny" if args.shared_source else name
    src = {"apiVersion": API_VERSION, "kind": "OCIRepository",
           "metadata": {"name": src_name, "namespace": ns},
           "spec": {"url": url, "ref": {"tag": "0.1.0"}, "interval": args.source_interval,
                    "insecure": True, "layerSelector": CHART_LAYER}}
    hr = {"apiVersion": API_VERSION, "kind": "HelmRelease",
          "metadata": {"name": name, "namespace": ns},
          "spec": {"interval": args.interval, "timeout": args.timeout,
                   "chartRef": {"kind": "OCIRepository", "name": src_name},
                   "values": {"message": f"release {i}"}}}
    return ns, src, hr


async def create_objects(kubeconfig: Path, objs: list[dict[str, Any]],
                         namespaces: list[str]) -> None:
    dyn = DynamicClient.from_kubeconfig(str(kubeconfig))
    try:
        for ns in namespaces:
            await dyn.apply({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": ns}}, force=True)
        sem = asyncio.Semaphore(16)

        async def one(o: dict[str, Any]) -> None:
            async with sem:
                await dyn.apply(o, force=True)

        await asyncio.gather(*(one(o) for o in objs))
    finally:
        await dyn.aclose()


# --------------------------------------------------------------------------------------
# The controller's process tree
# --------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, comm) of every process."""
    out: dict[int, tuple[int, str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            head, tail = (d / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        out[int(d.name)] = (int(tail.split()[1]), head.split("(", 1)[1])
    return out


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_sample(root: int) -> tuple[int, int]:
    """(RSS KiB of ``root`` and all its descendants, number of helm processes among them)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, helms, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_kib(pid)
        if pid != root and table.get(pid, (0, ""))[1] == "helm":
            helms += 1
        todo += children.get(pid, [])
    return total, helms


def children_cpu_seconds(pid: int) -> float | None:
    """user+sys CPU seconds of ``pid``'s finished (waited-for) children: the helm runs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------


def run_one(n: int, args: argparse.Namespace, tmp: Path, url: str) -> dict[str, Any]:
    out: dict[str, Any] = {"releases": n}
    state = tmp / f"cluster-{n}"
    t0 = time.perf_counter()
    cluster = cluster_up(state, timeout=180)
    out["cluster_up_s"] = round(time.perf_counter() - t0, 1)
    print(f"[N={n}] cluster {cluster.server} up in {out['cluster_up_s']}s", flush=True)
    proc: subprocess.Popen[bytes] | None = None
    log_path = tmp / f"controller-{n}.log"
    http = kube_http(cluster)
    try:
        asyncio.run(apply_crds(cluster.kubeconfig))
        out["nodes"] = add_nodes(http, n)
        namespaces = sorted({f"bench-hr-{i // args.per_namespace:03d}" for i in range(n)})
        sources: dict[tuple[str, str], dict[str, Any]] = {}
        releases: list[dict[str, Any]] = []
        for i in range(n):
            ns, src, hr = release_objects(i, args, url)
            sources[(ns, src["metadata"]["name"])] = src  # shared: once per namespace
            releases.append(hr)
        out["sources"] = len(sources)
        # Sources first, so no HelmRelease starts on a source that does not exist yet.
        objs = [*sources.values(), *releases]

        metrics_port, health_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "ocigitops.cli", "controller", "run", "--kubeconfig",
               str(cluster.kubeconfig), "--concurrent", str(args.concurrent),
               "--concurrent-helm", str(args.concurrent_helm),
               "--helm-engine", args.helm_engine,
               "--metrics-addr", f"127.0.0.1:{metrics_port}",
               "--health-addr", f"127.0.0.1:{health_port}",
               "--storage-path", str(tmp / f"cache-{n}"), "--log-level", args.log_level]
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_ready(health_port, proc, time.monotonic() + 60, log_path)
        hwm_idle = vm_hwm_kib(proc.pid) or 0
        cpu_idle = cpu_seconds(proc.pid) or 0.0
        ccpu_idle = children_cpu_seconds(proc.pid) or 0.0

        # ---- creation -> all Ready
        t_create = time.monotonic()
        asyncio.run(create_objects(cluster.kubeconfig, objs, namespaces))
        out["create_s"] = round(time.monotonic() - t_create, 2)
        print(f"[N={n}] created {len(sources)} OCIRepositories and {n} HelmReleases in "
              f"{out['create_s']}s", flush=True)
        progress: list[tuple[float, int]] = []
        hwm = hwm_idle
        tree_peak, helm_peak = 0, 0
        ready_s: float | None = None
        next_list = 0.0
        while time.monotonic() - t_create < args.ready_timeout:
            el = time.monotonic() - t_create
            rss, helms = tree_sample(proc.pid)
            tree_peak, helm_peak = max(tree_peak, rss), max(helm_peak, helms)
            hwm = max(hwm, vm_hwm_kib(proc.pid) or 0)
            if el >= next_list:  # the list call once a second, the tree 4 times
                next_list = el + 1.0
                ready, total = count_ready(http, "helmreleases")
                progress.append((round(el, 1), ready))
                if len(progress) % 10 == 0:
                    print(f"[N={n}]   {el:6.1f}s  {ready}/{n} Ready, {helms} helm running, "
                          f"tree RSS {rss / 1024:.0f} MiB", flush=True)
                if total == n and ready == n:
                    ready_s = el
                    break
            if proc.poll() is not None:
                raise RuntimeError("controller exited:\n"
                                   + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.25)
        out["ready_s"] = round(ready_s, 1) if ready_s is not None else None
        out["timed_out"] = ready_s is None
        out["controller_cpu_to_ready_s"] = round((cpu_seconds(proc.pid) or 0.0) - cpu_idle, 1)
        out["helm_cpu_to_ready_s"] = round(
            (children_cpu_seconds(proc.pid) or 0.0) - ccpu_idle, 1)
        for frac in (0.5, 0.9):
            hit = next((t for t, r in progress if r >= math.ceil(frac * n)), None)
            out[f"ready_{int(frac * 100)}pct_s"] = hit
        if ready_s is None:
            r = http.get("/apis/ocigitops.dev/v1/helmreleases")
            reasons: dict[str, int] = {}
            for o in r.json().get("items") or []:
                conds: list[dict[str, Any]] = (o.get("status") or {}).get("conditions") or []
                c = next((c for c in conds if c.get("type") == "Ready"), {})
                key = f"{c.get('status')}/{c.get('reason')}"
                reasons[key] = reasons.get(key, 0) + 1
            out["not_ready_reasons"] = reasons
        src_ready, _ = count_ready(http, "ocirepositories")
        out["sources_ready"] = src_ready
        secrets = http.get("/api/v1/secrets",
                           params={"labelSelector": "owner=helm"}).json().get("items") or []
        out["release_secrets"] = len(secrets)
        print(f"[N={n}] all Ready: {out['ready_s']}s (50% {out['ready_50pct_s']}s, 90% "
              f"{out['ready_90pct_s']}s); sources Ready {src_ready}/{len(sources)}; release "
              f"Secrets {len(secrets)}; CPU controller {out['controller_cpu_to_ready_s']}s, "
              f"helm {out['helm_cpu_to_ready_s']}s", flush=True)

        # ---- steady state: a short window, nothing changing (no helm should run)
        ccpu0 = children_cpu_seconds(proc.pid) or 0.0
        cpu0 = cpu_seconds(proc.pid) or 0.0
        w0 = time.monotonic()
        while time.monotonic() - w0 < args.window:
            rss, helms = tree_sample(proc.pid)
            tree_peak, helm_peak = max(tree_peak, rss), max(helm_peak, helms)
            time.sleep(0.5)
        out["window_s"] = round(time.monotonic() - w0, 1)
        out["window_controller_cpu_s"] = round((cpu_seconds(proc.pid) or 0.0) - cpu0, 2)
        out["window_helm_cpu_s"] = round((children_cpu_seconds(proc.pid) or 0.0) - ccpu0, 2)
        hwm = max(hwm, vm_hwm_kib(proc.pid) or 0)
        out["rss_peak_mib"] = round(hwm / 1024, 1)
        out["rss_idle_mib"] = round(hwm_idle / 1024, 1)
        out["tree_rss_peak_mib"] = round(tree_peak / 1024, 1)
        out["helm_processes_peak"] = helm_peak
        out["controller_metrics"] = {k: v for k, v in controller_metrics(metrics_port).items()
                                     if "HelmRelease" in k or "OCIRepository" in k}
        out["controller_log_lines"] = _log_summary(log_path)
        print(f"[N={n}] peak RSS: controller {out['rss_peak_mib']} MiB (idle "
              f"{out['rss_idle_mib']}), controller + helm processes {out['tree_rss_peak_mib']}"
              f" MiB, at most {helm_peak} helm at once; steady window {out['window_s']}s: "
              f"controller CPU {out['window_controller_cpu_s']}s, helm CPU "
              f"{out['window_helm_cpu_s']}s", flush=True)
        return out
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        http.close()
        cluster_down(state)  # stops every component; the logs stay under state/logs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--releases", default="100", help="comma-separated N values")
    ap.add_argument("--concurrent", type=int, default=4,
                    help="controller --concurrent (its default: 4)")
    ap.add_argument("--concurrent-helm", type=int, default=2,
                    help="controller --concurrent-helm (its default: 2)")
    ap.add_argument("--helm-engine", default="binary", choices=["binary", "sdk"],
                    help="controller --helm-engine (its default: binary)")
    ap.add_argument("--per-namespace", type=int, default=50, help="releases per namespace")
    ap.add_argument("--shared-source", action="store_true",
                    help="one OCIRepository per namespace instead of one per HelmRelease")
    ap.add_argument("--interval", default="10m", help="HelmRelease interval")
    ap.add_argument("--timeout", default="5m", help="HelmRelease timeout (Helm's wait)")
    ap.add_argument("--source-interval", default="10m", help="OCIRepository interval")
    ap.add_argument("--window", type=float, default=20.0,
                    help="seconds of steady state measured after all Ready")
    ap.add_argument("--ready-timeout", type=float, default=600.0)
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (prints it)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ns_list = [int(x) for x in args.releases.split(",") if x.strip()]

    helm = find_helm4()  # fails early, naming scripts/install-tools helm4
    helm_version = subprocess.run([str(helm), "version", "--template", "{{.Version}}"],
                                  capture_output=True, text=True, check=True,
                                  timeout=30).stdout.strip()
    print(f"engine: {args.helm_engine} (helm binary {helm}, {helm_version};"
          f" --concurrent {args.concurrent}, --concurrent-helm {args.concurrent_helm})",
          flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="ocigitops-bench-hr-"))
    results: list[dict[str, Any]] = []
    error: str | None = None
    keep = args.keep
    try:
        with BackgroundRegistry(tmp / "registry") as reg:
            url = push_chart(write_chart(tmp / "chart"), reg.host, tmp / "push.log")
            print(f"registry: embedded at {reg.host}, chart {url}:0.1.0", flush=True)
            for n in ns_list:
                results.append(run_one(n, args, tmp, url))
    except Exception as e:  # report what ran, keep the logs
        error = f"{type(e).__name__}: {e}"
        keep = True
        print(f"ERROR: {error}", file=sys.stderr)
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- report
    print()
    hdr = (f"{'releases':>8} {'create':>7} {'all Ready':>10} {'50%':>6} {'90%':>6} "
           f"{'ctrl RSS':>9} {'+helm RSS':>10} {'helm max':>9} {'ctrl CPU':>9} {'helm CPU':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        ready = f"{r['ready_s']:.1f}s" if r.get("ready_s") is not None else "TIMEOUT"
        print(f"{r['releases']:>8} {r['create_s']:>6.1f}s {ready:>10} "
              f"{_fmt(r.get('ready_50pct_s'))} {_fmt(r.get('ready_90pct_s'))} "
              f"{r['rss_peak_mib']:>6.1f}MiB {r['tree_rss_peak_mib']:>7.1f}MiB "
              f"{r['helm_processes_peak']:>9} {r['controller_cpu_to_ready_s']:>8.1f}s "
              f"{r['helm_cpu_to_ready_s']:>8.1f}s")
    f = FLUX_REFERENCE
    print(f"{'Flux ref':>8} {'':>7} {f['ready_s']:>9.1f}s {'':>6} {'':>6} "
          f"{f['rss_mib']:>6.1f}MiB  ({f['note']})")
    print()
    targets: dict[str, bool] = {}
    for r in results:
        n = r["releases"]
        if n == READY_TARGET_RELEASES:
            targets[f"{n} HelmReleases all Ready < {READY_TARGET_S:.0f}s"] = \
                r.get("ready_s") is not None and r["ready_s"] < READY_TARGET_S
        targets[f"N={n}: controller peak RSS < {RSS_TARGET_MIB:.0f} MiB"] = \
            r["rss_peak_mib"] < RSS_TARGET_MIB
        targets[f"N={n}: controller + helm processes peak RSS < {RSS_TARGET_MIB:.0f} MiB"] = \
            r["tree_rss_peak_mib"] < RSS_TARGET_MIB
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    if error:
        print(f"ERROR  {error}")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
          f"{os.cpu_count()} CPUs (the cluster, registry, controller and helm share them)")
    doc = {
        "engine": args.helm_engine, "helm": helm_version,
        "concurrent": args.concurrent, "concurrent_helm": args.concurrent_helm,
        "per_namespace": args.per_namespace,
        "shared_source": args.shared_source, "interval": args.interval,
        "timeout": args.timeout, "cpus": os.cpu_count(),
        "python": platform.python_version(), "loadavg": [round(x, 2) for x in load],
        "results": results, "error": error,
        "flux_reference": FLUX_REFERENCE,
        "target": {"releases": READY_TARGET_RELEASES, "ready_s": READY_TARGET_S,
                   "rss_mib": RSS_TARGET_MIB},
        "targets": {k: ("PASS" if v else "MISS") for k, v in targets.items()},
    }
    print("BENCH_JSON " + json.dumps(doc, sort_keys=True))
    return 0


def _fmt(v: float | None) -> str:
    return f"{v:>5.1f}s" if v is not None else f"{'-':>6}"


if __name__ == "__main__":
    sys.exit(main())
