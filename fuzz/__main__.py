"""``python3 -m fuzz``: run the fuzz targets, replay or minimize reproducers, build seeds.

    python3 -m fuzz run [--seconds N] [--jobs J] [--keep-corpus] [TARGET...]
    python3 -m fuzz replay TARGET FILE_OR_DIR...
    python3 -m fuzz minimize TARGET CRASH_FILE [--seconds N] [-o OUT]
    python3 -m fuzz merge TARGET DIR      (add new-coverage inputs to fuzz/corpus/TARGET)
    python3 -m fuzz seed [TARGET...]      (rebuild fuzz/corpus with the project's code)
    python3 -m fuzz list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fuzz import runner
from fuzz.targets import TARGETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="fuzz targets for a bounded time")
    p_run.add_argument("--seconds", type=int, default=10, help="per target (default 10)")
    p_run.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    p_run.add_argument("--keep-corpus", action="store_true",
                       help="grow fuzz/out/<target>/corpus across runs (else a temp dir)")
    p_run.add_argument("--no-vectors", action="store_true",
                       help="do not seed from ../shared/testvectors")
    p_run.add_argument("--seed", type=int, default=None,
                       help="libFuzzer's random seed (fixed in make test; default random)")
    p_run.add_argument("targets", nargs="*", metavar="TARGET")
    p_replay = sub.add_parser("replay", help="run inputs through a target without atheris")
    p_replay.add_argument("target", choices=list(TARGETS))
    p_replay.add_argument("paths", nargs="+", type=Path)
    p_min = sub.add_parser("minimize", help="shrink a crashing input")
    p_min.add_argument("target", choices=list(TARGETS))
    p_min.add_argument("crash", type=Path)
    p_min.add_argument("--seconds", type=int, default=60)
    p_min.add_argument("-o", "--output", type=Path)
    p_merge = sub.add_parser("merge", help="merge new-coverage inputs into fuzz/corpus")
    p_merge.add_argument("target", choices=list(TARGETS))
    p_merge.add_argument("source", type=Path)
    p_seed = sub.add_parser("seed", help="rebuild the committed seed corpus")
    p_seed.add_argument("targets", nargs="*", metavar="TARGET")
    sub.add_parser("list", help="list the targets")
    args = parser.parse_args(argv)

    if args.command == "run":
        return runner.run(args.targets, args.seconds, jobs=args.jobs,
                          keep_corpus=args.keep_corpus,
                          vectors=None if args.no_vectors else runner.DEFAULT_VECTORS,
                          seed=args.seed)
    if args.command == "replay":
        return runner.replay(args.target, args.paths)
    if args.command == "minimize":
        return runner.minimize(args.target, args.crash, args.seconds, args.output)
    if args.command == "merge":
        return runner.merge(args.target, args.source)
    if args.command == "seed":
        from fuzz.seeds import write_corpus

        for path in write_corpus(runner.CORPUS, args.targets or list(TARGETS)):
            print(f"{path.relative_to(runner.REPO)} ({path.stat().st_size} bytes)")
        return 0
    for name, what in TARGETS.items():
        print(f"{name:<14} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
