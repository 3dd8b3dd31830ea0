"""GitRepository at scale: 100 GitRepositories on one local git http-backend.

Measures, with the real reconcile function, the real Git client and the real artifact
cache (the Secrets come from MemKube, an in-memory fake of the two reads a source makes):

- time to first artifact: 100 sources reconciled concurrently from nothing, wall time
  until every one has its artifact (median and max per source too);
- requests per source per interval when nothing changed (target: 1, the ``ls-remote``),
  counted by the server.

Prints a table and a final ``BENCH_JSON {...}`` line; exits 1 when the requests target
is missed. Run: ``python benchmarks/bench_git.py [--sources N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ocigitops.puller.api.meta import API_VERSION
from ocigitops.puller.cache import ArtifactCache
from ocigitops.puller.sources import git as gitsrc
from tests.helpers.gitservers import GitRepo, http_server
from tests.helpers.memkube import MemKube


def _obj(url: str, i: int) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "GitRepository",
            "metadata": {"name": f"app-{i}", "namespace": "apps", "generation": 1},
            "spec": {"url": url, "interval": "1m", "insecure": True,
                     "secretRef": {"name": "auth"}, "ref": {"branch": "main"}}}


async def _round(objs: list[dict[str, Any]], ctx: gitsrc.GitContext,
                 concurrency: int) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    times: list[float] = []

    async def one(obj: dict[str, Any]) -> None:
        async with sem:
            t = time.perf_counter()
            out = await gitsrc.reconcile(obj, ctx)
            times.append(time.perf_counter() - t)
            if out.failed:
                raise RuntimeError(f"{obj['metadata']['name']}: {out.status}")
            obj["status"] = out.status

    await asyncio.gather(*(one(o) for o in objs))
    return times


def main() -> int:
    """Run the benchmark; 0 when the target is met."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=8, help="workers, as --concurrent")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repos"
        repo = GitRepo.create(root)
        repo.commit("manifests", {f"deploy/cm{i}.yaml": f"kind: ConfigMap\nn: {i}\n"
                                  for i in range(50)})
        with http_server(root, username="u", password="p") as srv:
            kube = MemKube()
            kube.secret("apps", "auth", {"username": b"u", "password": b"p"})
            ctx = gitsrc.GitContext(kube=kube,  # type: ignore[arg-type]
                                    cache=ArtifactCache(Path(tmp) / "cache"))
            objs = [_obj(srv.url(), i) for i in range(args.sources)]
            t0 = time.perf_counter()
            first = asyncio.run(_round(objs, ctx, args.concurrency))
            first_wall = time.perf_counter() - t0
            first_requests = srv.count()
            srv.reset()
            t0 = time.perf_counter()
            steady = asyncio.run(_round(objs, ctx, args.concurrency))
            steady_wall = time.perf_counter() - t0
            per_source = srv.count() / args.sources
    ok = per_source <= 1.0
    doc = {"sources": args.sources, "concurrency": args.concurrency,
           "first_artifact_wall_s": round(first_wall, 3),
           "first_artifact_median_s": round(statistics.median(first), 4),
           "first_artifact_max_s": round(max(first), 4),
           "first_round_requests": first_requests,
           "unchanged_requests_per_source": per_source,
           "unchanged_round_wall_s": round(steady_wall, 3),
           "unchanged_median_s": round(statistics.median(steady), 4),
           "target_requests_per_source": 1, "pass": ok}
    print(f"{'sources':<36}{args.sources}")
    print(f"{'time to first artifact (all, wall)':<36}{first_wall:.2f}s")
    print(f"{'  per source median / max':<36}{statistics.median(first):.3f}s /"
          f" {max(first):.3f}s")
    print(f"{'requests, first round':<36}{first_requests}")
    print(f"{'requests/source, unchanged round':<36}{per_source:g} (target 1)"
          f" {'PASS' if ok else 'MISS'}")
    print(f"{'unchanged round (all, wall)':<36}{steady_wall:.2f}s")
    print("BENCH_JSON " + json.dumps(doc, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
