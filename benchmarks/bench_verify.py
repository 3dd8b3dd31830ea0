#!/usr/bin/env python3
"""Benchmark ``ocigitops verify artifact`` against ``cosign verify`` and ``notation verify``.

Run on demand (not part of the test suite)::

    python benchmarks/bench_verify.py [--repeat 5] [--artifacts 500] [--concurrency 32]

It starts olareg (a third-party registry with the referrers API) via
``tests.helpers.registries.olareg``, pushes one artifact and signs it three ways: ``cosign sign
--key`` (v2, legacy ``.sig`` image), ``ocigitops sign artifact --key`` (our key bundle, a
referrer) and ``notation sign`` (JWS, ``notation cert generate-test`` certificate). Each
verifier then runs as a separate process, alternating ours/peer, under GNU
``/usr/bin/time`` for an exact peak RSS (see :func:`run_measured`). A throughput phase
verifies ``--artifacts`` signed artifacts concurrently in one Python process and compares
it with sequential ``cosign verify`` runs of a sample, extrapolated. It prints a table,
``ours/peer`` ratios, PASS/MISS per target and a final ``BENCH_JSON {...}`` line, and always
exits 0: benchmarks report, they don't gate. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from measure import CommandFailed, Sample, byte_compile, console_script, med, rss_via, run_measured  # noqa: E402

PASSWORD = "bench-verify-pw"
#: Cheapest scrypt cost cosign accepts (only used for the in-memory throughput key).
FAST_N = 1 << 15
NOTATION_KEY = "ocigitops-bench"
NOTATION_STORE = "bench"
NOTATION_IDENTITY = f"x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN={NOTATION_KEY}"
SOURCE = "https://github.com/example/bench"
REVISION = "main@sha1:" + "0" * 40

# --------------------------------------------------------------------------------------
# Peers (measurement itself is in measure.py)
# --------------------------------------------------------------------------------------


def ours_exe() -> str:
    """The real ``ocigitops`` entry script (:func:`measure.console_script`)."""
    byte_compile()  # what an installed copy has (see measure.byte_compile)
    found = console_script()
    if not found:
        raise RuntimeError("ocigitops is not installed (pip install -e .)")
    return found


def offline_env(home: Path) -> dict[str, str]:
    """One environment for every process: a private HOME and XDG config (notation), the
    cosign settings of the interop tests, and a dead HTTPS proxy so that anything a tool
    would fetch from the internet (TUF, Rekor) fails at once; 127.0.0.1 is not proxied."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
        "COSIGN_PASSWORD": PASSWORD, "COSIGN_EXPERIMENTAL": "0",
        "TUF_ROOT": str(home / "tuf"), "SIGSTORE_NO_CACHE": "1", "COSIGN_YES": "true",
        "SIGSTORE_ID_TOKEN": "",
        "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }


# --------------------------------------------------------------------------------------
# Throughput worker (a separate process, so its ru_maxrss is its own)
# --------------------------------------------------------------------------------------


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def _verify_many(refs: list[str], pub: Path, concurrency: int) -> dict[str, Any]:
    from ocigitops.reference import parse_reference
    from ocigitops.registry import RegistryClient
    from ocigitops.verifier.verify import policy_from_flags, verify_artifact

    policy = policy_from_flags(keys=[pub])
    sem = asyncio.Semaphore(concurrency)
    rss_ready = _rss_mib()
    failures: list[str] = []

    async with RegistryClient(insecure=True) as client:
        async def one(text: str) -> bool:
            async with sem:
                try:
                    out = await verify_artifact(client, parse_reference(text), policy)
                except Exception as e:  # counted and reported, never raised
                    failures.append(f"{text}: {type(e).__name__}: {e}")
                    return False
                if not out.passed:
                    failures.append(f"{text}: {out.result.summary()}")
                return out.passed

        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(r) for r in refs))
        total = time.perf_counter() - t0
    return {"total_s": total, "verified": sum(results), "count": len(refs),
            "rss_after_imports_mib": rss_ready, "peak_rss_mib": _rss_mib(),
            "failures": failures[:5]}


def worker_main(refs_file: Path, pub: Path, concurrency: int) -> int:
    """``--worker``: verify every reference in ``refs_file``; print one JSON line."""
    t0 = time.perf_counter()
    refs = json.loads(refs_file.read_text())
    doc = asyncio.run(_verify_many(refs, pub, concurrency))
    doc["process_s"] = time.perf_counter() - t0
    print(json.dumps(doc))
    return 0


# --------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------


def run_setup(argv: list[str], log: Path, env: dict[str, str], *,
              cwd: Path | None = None) -> str:
    """Run a set-up command (not measured); stdout, or CommandFailed with the log tail."""
    with open(log, "ab") as out:
        out.write(("\n$ " + " ".join(argv) + "\n").encode())
        proc = subprocess.run(argv, capture_output=True, env=env, cwd=cwd, timeout=300,
                              check=False, stdin=subprocess.DEVNULL)
        out.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise CommandFailed(f"{Path(argv[0]).name} {' '.join(argv[1:3])} exited "
                            f"{proc.returncode}:\n{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc.stdout.decode(errors="replace")


def write_tree(root: Path, index: int = 0) -> None:
    """A small config tree: one Deployment and one ConfigMap."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "deploy.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bench\n"
        "spec:\n  replicas: 2\n  selector:\n    matchLabels: {app: bench}\n"
        "  template:\n    metadata:\n      labels: {app: bench}\n    spec:\n"
        "      containers:\n      - name: app\n        image: nginx:1.27\n")
    (root / "cm.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bench-{index}\n"
        f"data:\n  index: \"{index}\"\n")


def trust_policy_doc(scope: str) -> dict[str, Any]:
    """The notation trust policy both verifiers get."""
    return {"version": "1.0", "trustPolicies": [{
        "name": "ocigitops-bench", "registryScopes": [scope],
        "signatureVerification": {"level": "strict"},
        "trustStores": [f"ca:{NOTATION_STORE}"], "trustedIdentities": [NOTATION_IDENTITY]}]}


async def setup_throughput(host: str, count: int, fmt: str, tmp: Path,
                           concurrency: int = 16) -> tuple[list[str], Path]:
    """Push and sign ``count`` artifacts with the library; (digest references, pub file)."""
    from ocigitops.artifact import Metadata
    from ocigitops.publisher.artifacts import push_artifact
    from ocigitops.publisher.sign_cosign import sign_cosign_key
    from ocigitops.reference import Reference
    from ocigitops.registry import RegistryClient
    from ocigitops.verifier.keys import generate_key_pair

    pair = generate_key_pair(PASSWORD, scrypt_n=FAST_N)
    pub = tmp / "throughput.pub"
    pub.write_bytes(pair.public_pem)
    src = tmp / "tp-tree"
    write_tree(src)
    sem = asyncio.Semaphore(concurrency)

    async with RegistryClient(insecure=True) as client:
        async def one(i: int) -> str:
            async with sem:
                ref = Reference(host, f"tp/a{i:04d}", tag="v1")
                meta = Metadata(source=SOURCE, revision=REVISION,
                                annotations={"bench.index": str(i)})
                res = await push_artifact(client, ref, src, meta)
                await sign_cosign_key(client, ref.repo_only(), res.digest, pair.private_key,
                                      fmt=fmt)  # type: ignore[arg-type]
                return f"{host}/tp/a{i:04d}@{res.digest}"

        refs = await asyncio.gather(*(one(i) for i in range(count)))
    return list(refs), pub


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per verifier and pair")
    ap.add_argument("--artifacts", type=int, default=500, help="throughput: artifacts")
    ap.add_argument("--concurrency", type=int, default=32,
                    help="throughput: concurrent verifications in our process")
    ap.add_argument("--peer-sample", type=int, default=20,
                    help="throughput: sequential cosign runs to extrapolate from")
    ap.add_argument("--throughput-format", choices=["bundle", "legacy"], default="bundle",
                    help="throughput: signature format (peer: cosign v3 / cosign v2)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (prints it)")
    ap.add_argument("--worker", nargs=3, metavar=("REFS", "PUB", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(Path(args.worker[0]), Path(args.worker[1]), int(args.worker[2]))

    tmp = Path(tempfile.mkdtemp(prefix="ocigitops-bench-verify-"))
    doc: dict[str, Any] = {"repeat": args.repeat, "cpus": os.cpu_count(),
                           "python": platform.python_version(),
                           "rss_via": rss_via()}
    try:
        bench(args, tmp, doc)
    except Exception as e:  # report, don't gate (the brief: always exit 0)
        print(f"\nERROR: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()
        doc["error"] = f"{type(e).__name__}: {str(e)[:500]}"
        print(f"commands log: {tmp / 'commands.log'} (kept)")
        args.keep = True
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    doc["loadavg"] = [round(x, 2) for x in load]
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
          f"{os.cpu_count()} CPUs (other work on the machine adds noise)")
    print("BENCH_JSON " + json.dumps(doc, sort_keys=True))
    return 0


def bench(args: argparse.Namespace, tmp: Path, doc: dict[str, Any]) -> None:
    """Everything between start-up and the final JSON line; fills ``doc``."""
    from ocigitops.verifier.bundles import PUBLIC_GOOD_TRUSTED_ROOT
    from tests.helpers.registries import olareg
    from tests.helpers.tools import tool

    ours = ours_exe()
    cosign2, cosign3 = tool("cosign"), tool("cosign3", "cosign")
    notation = tool("notation")
    log = tmp / "commands.log"
    env = offline_env(tmp / "home")
    notation_cfg = tmp / "home" / "config" / "notation"
    doc["versions"] = {
        "cosign2": Path(cosign2).parent.parent.name, "cosign3": Path(cosign3).parent.parent.name,
        "notation": Path(notation).parent.parent.name}

    with olareg(tmp / "registry") as reg:
        host = reg.host
        print(f"registry: olareg at {host} (plain HTTP, referrers API)", flush=True)

        # ---- one artifact, three signatures.
        src = tmp / "tree"
        write_tree(src)
        repo = f"{host}/bench/verify"
        pushed = json.loads(run_setup([ours, "push", "artifact", f"oci://{repo}:v1", "--path",
                                       str(src), "--source", SOURCE, "--revision", REVISION,
                                       "-o", "json", "--insecure-registry"], log, env))
        digest = pushed["digest"]
        target = f"{repo}@{digest}"
        print(f"artifact: {target}", flush=True)

        keys = tmp / "keys"
        keys.mkdir()
        # (a) cosign v2, legacy .sig image, with a cosign-generated key.
        run_setup([cosign2, "generate-key-pair"], log, env, cwd=keys)
        cosign_pub = keys / "cosign.pub"
        run_setup([cosign2, "sign", "--key", str(keys / "cosign.key"), "--tlog-upload=false",
                   "-y", "--allow-insecure-registry", "--allow-http-registry", target], log, env)
        # (b) ours, key bundle (the default --format), with our own key pair: a different
        # key, so `verify --key ours.pub` really takes the bundle path (the legacy layer
        # fails for that key first, one ECDSA check).
        run_setup([ours, "generate", "key-pair", "--output-key-prefix", str(keys / "ours")],
                  log, env)
        ours_pub = keys / "ours.pub"
        run_setup([ours, "sign", "artifact", f"oci://{target}", "--key", str(keys / "ours.key"),
                   "--insecure-registry"], log, env)
        # (c) notation JWS with a generate-test certificate. olareg 0.1.2 loses referrers
        # when notation writes its tag-schema index too (tests/integration/
        # test_notation_interop.py), hence --force-referrers-tag=false.
        run_setup([notation, "cert", "generate-test", "--default", NOTATION_KEY], log, env)
        cert = notation_cfg / "localkeys" / f"{NOTATION_KEY}.crt"
        run_setup([notation, "cert", "add", "--type", "ca", "--store", NOTATION_STORE,
                   str(cert)], log, env)
        policy_file = tmp / "trustpolicy.json"
        policy_file.write_text(json.dumps(trust_policy_doc("*"), indent=2))
        run_setup([notation, "policy", "import", "--force", str(policy_file)], log, env)
        run_setup([notation, "sign", "--insecure-registry", "--signature-format", "jws",
                   "--force-referrers-tag=false", target], log, env)
        trust_store = notation_cfg / "truststore"
        print("signed: cosign v2 legacy, ocigitops key bundle, notation JWS", flush=True)

        peer_flags = ["--insecure-ignore-tlog=true", "--allow-insecure-registry",
                      "--allow-http-registry"]
        pairs: dict[str, dict[str, list[str]]] = {
            "cosign-legacy": {
                "ours": [ours, "verify", "artifact", f"oci://{target}", "--key",
                         str(cosign_pub), "--insecure-registry"],
                "peer": [cosign2, "verify", "--key", str(cosign_pub), *peer_flags, target],
            },
            "cosign-bundle": {
                "ours": [ours, "verify", "artifact", f"oci://{target}", "--key",
                         str(ours_pub), "--insecure-registry"],
                "peer": [cosign3, "verify", "--key", str(ours_pub), *peer_flags,
                         "--trusted-root", str(PUBLIC_GOOD_TRUSTED_ROOT), target],
            },
            "notation": {
                "ours": [ours, "verify", "artifact", f"oci://{target}", "--trust-policy",
                         str(policy_file), "--trust-store", str(trust_store),
                         "--insecure-registry"],
                "peer": [notation, "verify", "--insecure-registry", target],
            },
        }
        peer_name = {"cosign-legacy": "cosign v2", "cosign-bundle": "cosign v3",
                     "notation": "notation"}
        expect = {"cosign-legacy": "legacy signature by", "cosign-bundle": "bundle signed by",
                  "notation": "signed by"}

        # ---- sanity: every verifier passes, and ours through the intended signature kind.
        skipped: dict[str, str] = {}
        for name, cmds in pairs.items():
            try:
                _, out = run_measured([*cmds["ours"], "-o", "json"], log, env)
                res = json.loads(out)
                reasons = [a["reason"] for a in res["authorities"] if a["passed"]]
                if not res["verified"] or not reasons[0].startswith(expect[name]):
                    raise CommandFailed(f"ours verified via {reasons!r}")
                run_measured(cmds["peer"], log, env)
            except CommandFailed as e:
                skipped[name] = str(e).splitlines()[0]
                print(f"  SKIP {name}: {e}", flush=True)
        for name in skipped:
            del pairs[name]

        # ---- single verifications, alternating.
        samples: dict[str, dict[str, list[Sample]]] = {
            n: {"ours": [], "peer": []} for n in pairs}
        for i in range(args.repeat):
            for name, cmds in pairs.items():
                order = ["ours", "peer"] if i % 2 == 0 else ["peer", "ours"]
                for who in order:
                    s, _ = run_measured(cmds[who], log, env)
                    samples[name][who].append(s)
                print(f"  #{i} {name:<14} ours {samples[name]['ours'][-1].wall:6.3f}s "
                      f"{samples[name]['ours'][-1].rss_mib:6.1f} MiB   "
                      f"{peer_name[name]} {samples[name]['peer'][-1].wall:6.3f}s "
                      f"{samples[name]['peer'][-1].rss_mib:6.1f} MiB", flush=True)
        single = {n: {k: med(v) for k, v in d.items()} for n, d in samples.items()}

        # ---- throughput.
        tp: dict[str, Any] | None = None
        if not args.skip_throughput:
            try:
                tp = throughput(args, host, tmp, log, env, cosign2, cosign3,
                                PUBLIC_GOOD_TRUSTED_ROOT)
            except Exception as e:  # keep the single-verification results
                print(f"  throughput failed: {type(e).__name__}: {e}", flush=True)
                doc["throughput_error"] = f"{type(e).__name__}: {str(e)[:500]}"

    # ---- report.
    print()
    hdr = (f"{'verify':<14} {'peer':<10} {'ours wall':>10} {'peer wall':>10} {'ratio':>6}   "
           f"{'ours RSS':>9} {'peer RSS':>9} {'ratio':>6}   {'ours CPU':>9} {'peer CPU':>9}")
    print(hdr)
    print("-" * len(hdr))
    ratios: dict[str, dict[str, float]] = {}
    for name, r in single.items():
        o, p = r["ours"], r["peer"]
        rw, rr = o["wall_s"] / p["wall_s"], o["rss_mib"] / p["rss_mib"]
        ratios[name] = {"wall": rw, "rss": rr}
        print(f"{name:<14} {peer_name[name]:<10} {o['wall_s']:>9.3f}s {p['wall_s']:>9.3f}s "
              f"{rw:>6.2f}   {o['rss_mib']:>7.1f}Mi {p['rss_mib']:>7.1f}Mi {rr:>6.2f}   "
              f"{o['cpu_s']:>8.3f}s {p['cpu_s']:>8.3f}s")
    for name, why in skipped.items():
        print(f"{name:<14} skipped: {why}")
    targets: dict[str, bool] = {}
    for name, r in ratios.items():
        targets[f"{name} wall ratio <= 1.0"] = r["wall"] <= 1.0
        targets[f"{name} RSS ratio <= 1.0"] = r["rss"] <= 1.0
    if tp is not None:
        print()
        print(f"throughput ({tp['count']} artifacts, {tp['format']} signatures, one process, "
              f"semaphore {tp['concurrency']}, one RegistryClient):")
        print(f"  ours: {tp['ours_total_s']:.2f}s, {tp['ours_per_s']:.1f} artifacts/s, "
              f"{tp['verified']}/{tp['count']} verified, peak RSS "
              f"{tp['ours_peak_rss_mib']:.1f} MiB ({tp['ours_rss_after_imports_mib']:.1f} MiB"
              f" after imports; whole process {tp['ours_process_s']:.2f}s incl. start-up)")
        print(f"  {tp['peer']} verify, sequential: {tp['peer_sample']} runs took "
              f"{tp['peer_sample_s']:.2f}s (median {tp['peer_median_s']:.3f}s, "
              f"{tp['peer_median_rss_mib']:.1f} MiB each); EXTRAPOLATED to {tp['count']}: "
              f"{tp['peer_extrapolated_s']:.1f}s, {tp['peer_per_s']:.1f} artifacts/s")
        print(f"  ratio ours/peer (total seconds): {tp['ratio']:.3f}")
        if tp["failures"]:
            print("  failures: " + "; ".join(tp["failures"]))
        ratios["throughput"] = {"wall": tp["ratio"]}
        targets["throughput ratio <= 1.0 (peer extrapolated)"] = (
            tp["ratio"] <= 1.0 and tp["verified"] == tp["count"])
    print()
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    doc.update({"artifact": target, "results": single, "ratios": ratios,
                "throughput": tp, "skipped": skipped,
                "targets": {k: ("PASS" if v else "MISS") for k, v in targets.items()}})


def throughput(args: argparse.Namespace, host: str, tmp: Path, log: Path,
               env: dict[str, str], cosign2: str, cosign3: str,
               trusted_root: Path) -> dict[str, Any]:
    """Push and sign ``--artifacts`` artifacts, verify them all in one process (a child,
    so its peak RSS is its own), and time sequential cosign runs on a sample."""
    t0 = time.perf_counter()
    refs, pub = asyncio.run(setup_throughput(host, args.artifacts, args.throughput_format,
                                             tmp))
    print(f"throughput: pushed and signed {len(refs)} artifacts "
          f"({args.throughput_format}) in {time.perf_counter() - t0:.1f}s", flush=True)
    refs_file = tmp / "refs.json"
    refs_file.write_text(json.dumps(refs))
    s, out = run_measured([sys.executable, str(Path(__file__).resolve()), "--worker",
                           str(refs_file), str(pub), str(args.concurrency)], log, env)
    res = json.loads(out.strip().splitlines()[-1])
    print(f"  ours: {res['total_s']:.2f}s for {res['verified']}/{res['count']}, "
          f"peak RSS {res['peak_rss_mib']:.1f} MiB (GNU time: {s.rss_mib:.1f} MiB)", flush=True)

    if args.throughput_format == "legacy":
        peer, extra = cosign2, []
    else:
        peer, extra = cosign3, ["--trusted-root", str(trusted_root)]
    n = max(1, min(args.peer_sample, len(refs)))
    step = len(refs) / n
    sample = [refs[int(i * step)] for i in range(n)]
    peer_samples: list[Sample] = []
    for ref in sample:
        ps, _ = run_measured([peer, "verify", "--key", str(pub), "--insecure-ignore-tlog=true",
                              "--allow-insecure-registry", "--allow-http-registry", *extra,
                              ref], log, env)
        peer_samples.append(ps)
    peer_sum = sum(p.wall for p in peer_samples)
    extrapolated = peer_sum * len(refs) / n
    print(f"  {Path(peer).parent.parent.name} verify: {n} sequential runs {peer_sum:.2f}s, "
          f"extrapolated to {len(refs)}: {extrapolated:.1f}s", flush=True)
    return {
        "count": len(refs), "format": args.throughput_format,
        "concurrency": args.concurrency, "verified": res["verified"],
        "failures": res["failures"],
        "ours_total_s": res["total_s"], "ours_per_s": len(refs) / res["total_s"],
        "ours_peak_rss_mib": res["peak_rss_mib"],
        "ours_rss_after_imports_mib": res["rss_after_imports_mib"],
        "ours_process_s": s.wall, "ours_process_rss_gnu_time_mib": s.rss_mib,
        "peer": Path(peer).parent.parent.name, "peer_sample": n,
        "peer_sample_s": peer_sum, "peer_median_s": statistics.median(p.wall for p in
                                                                      peer_samples),
        "peer_median_rss_mib": statistics.median(p.rss_mib for p in peer_samples),
        "peer_extrapolated": True, "peer_extrapolated_s": extrapolated,
        "peer_per_s": len(refs) / extrapolated, "ratio": res["total_s"] / extrapolated,
    }


if __name__ == "__main__":
    sys.exit(main())
