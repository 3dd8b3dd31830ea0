"""Run the fuzz targets, each in its own atheris process, for a bounded time.

For each target the worker (:mod:`fuzz.worker`) gets libFuzzer's options and corpus
directories: first a scratch directory that receives the new inputs (a temporary one, or
``fuzz/out/<target>/corpus`` with ``--keep-corpus``), then the committed seeds in
``fuzz/corpus/<target>/`` (only read: libFuzzer writes to the first directory alone), then
upstream test vectors when ``../shared/testvectors`` exists (copied to a temporary
directory with their mode byte, never into the repository).

A crash, a timeout (``-timeout``, seconds per input) or an out-of-memory stops that target;
libFuzzer writes the input to ``fuzz/out/<target>/`` and the run ends non-zero after every
target had its turn, naming each reproducer and the exception.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.seeds import testvector_seeds
from fuzz.targets import TARGETS, TestOneInput

FUZZ_DIR = Path(__file__).resolve().parent
REPO = FUZZ_DIR.parent
CORPUS = FUZZ_DIR / "corpus"
REGRESSIONS = FUZZ_DIR / "regressions"
OUT = FUZZ_DIR / "out"
DEFAULT_VECTORS = REPO.parent / "shared" / "testvectors"

#: Seconds one input may take before libFuzzer calls it a hang.
INPUT_TIMEOUT = 5
RSS_LIMIT_MB = 2048
#: Extra wall time a worker gets over its budget (start-up, seed corpus) before it is killed.
GRACE = 120
#: libFuzzer's -max_len (largest generated input) where the 4096-byte default is too small.
MAX_LEN = {"extract": 16384, "bundles": 16384, "notation": 16384}
_ARTIFACT_RE = re.compile(r"^(crash|timeout|oom|leak)-[0-9a-f]+$")


@dataclass
class Result:
    """What one target's run left behind."""

    target: str
    returncode: int
    seconds: float
    log: Path
    reproducers: list[Path] = field(default_factory=list)
    stats: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.reproducers


def _vector_dir(target: str, vectors: Path | None, scratch: Path) -> Path | None:
    if vectors is None or not vectors.is_dir():
        return None
    seeds = list(testvector_seeds(target, vectors))
    if not seeds:
        return None
    out = scratch / "vectors"
    out.mkdir()
    for name, data in seeds:
        (out / name).write_bytes(data)
    return out


def _stats(log_text: str) -> str:
    """The last libFuzzer status line (runs, coverage, corpus)."""
    lines = [x for x in log_text.splitlines() if re.match(r"^#\d+\s", x)]
    if not lines:
        return ""
    parts = lines[-1].split()
    keep = {"cov:", "ft:", "corp:", "exec/s:"}
    shown = [f"{parts[i]} {parts[i + 1]}" for i in range(len(parts) - 1) if parts[i] in keep]
    return f"{parts[0][1:]} runs, " + ", ".join(shown)


def failure_excerpt(log_text: str) -> str:
    """The Python exception (or libFuzzer's complaint) from a worker log."""
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        if "Uncaught Python exception" in line or "=== Timeout:" in line:
            end = next((j for j in range(i + 1, len(lines))
                        if lines[j].startswith(("==", "MS:", "SUMMARY"))), len(lines))
            return "\n".join(lines[i:end]).strip()
    for i, line in enumerate(lines):
        if "ERROR: libFuzzer" in line or line.startswith("ALARM:"):
            return "\n".join(lines[max(0, i - 30):i + 3]).strip()
    return "\n".join(lines[-30:]).strip()


def run_target(target: str, seconds: int, *, keep_corpus: bool = False,
               vectors: Path | None = DEFAULT_VECTORS, extra: Sequence[str] = ()) -> Result:
    """Fuzz ``target`` for ``seconds``; the result names any reproducer written."""
    out = OUT / target
    out.mkdir(parents=True, exist_ok=True)
    started = time.time() - 1  # a reproducer is (re)written after this
    log = out / "fuzz.log"
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix=f"ocigitops-fuzz-{target}-") as tmp, \
            tempfile.TemporaryDirectory(prefix=f"ocigitops-fuzz-{target}-", dir=shm) as fast:
        scratch = Path(tmp)
        work = out / "corpus" if keep_corpus else scratch / "corpus"
        work.mkdir(parents=True, exist_ok=True)
        dirs = [work]
        if (CORPUS / target).is_dir():
            dirs.append(CORPUS / target)
        vector_dir = _vector_dir(target, vectors, scratch)
        if vector_dir is not None:
            dirs.append(vector_dir)
        cmd = [sys.executable, "-m", "fuzz.worker", target,
               f"-max_total_time={seconds}", f"-timeout={INPUT_TIMEOUT}",
               f"-rss_limit_mb={RSS_LIMIT_MB}", f"-max_len={MAX_LEN.get(target, 4096)}",
               f"-artifact_prefix={out}/", "-print_final_stats=1", *extra, *map(str, dirs)]
        env = dict(os.environ, OCIGITOPS_FUZZ_SCRATCH=fast, PYTHONPATH=os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
        start = time.monotonic()
        with open(log, "wb") as fh:
            try:
                rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    timeout=seconds + GRACE).returncode
                reason = ""
            except subprocess.TimeoutExpired:
                rc, reason = -1, f"the worker did not stop within {seconds + GRACE} s"
        elapsed = time.monotonic() - start
    text = log.read_text(errors="replace")
    found = sorted(p for p in out.iterdir()
                   if _ARTIFACT_RE.match(p.name) and p.stat().st_mtime >= started)
    if (rc != 0 and not reason) or found:
        reason = failure_excerpt(text)
    return Result(target, rc, elapsed, log, found, _stats(text), reason)


def run(targets: Sequence[str], seconds: int, *, jobs: int = 1, keep_corpus: bool = False,
        vectors: Path | None = DEFAULT_VECTORS, seed: int | None = None) -> int:
    """Fuzz every target; print one line each and the details of each failure.

    ``seed`` fixes libFuzzer's random seed: the short pass in ``make test`` uses one, so a
    CI run replays the same mutations every time (a regression fails it, a new finding of
    a random walk does not fail an unrelated change); ``make fuzz-long`` explores at random.
    """
    extra = [f"-seed={seed}"] if seed is not None else []
    names = list(targets) or list(TARGETS)
    for name in names:
        if name not in TARGETS:
            print(f"fuzz: unknown target {name!r} (known: {', '.join(TARGETS)})",
                  file=sys.stderr)
            return 2
    if vectors is not None and not vectors.is_dir():
        print(f"fuzz: no upstream test vectors at {vectors}; seeding from fuzz/corpus only")
        vectors = None
    print(f"fuzz: {len(names)} target(s), {seconds} s each, {jobs} at a time")
    start = time.monotonic()

    def one(name: str) -> Result:
        result = run_target(name, seconds, keep_corpus=keep_corpus, vectors=vectors,
                            extra=extra)
        status = "ok" if result.ok else "FAILED"
        print(f"fuzz: {name:<14} {status:<6} {result.seconds:5.1f} s  {result.stats}",
              flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, names))
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(f"\n=== fuzz target {r.target} FAILED (exit {r.returncode}; log {r.log}) ===")
        for path in r.reproducers:
            print(f"reproducer: {path}")
        print(r.reason)
        if r.reproducers:
            rel = r.reproducers[0].relative_to(REPO)
            shrink_cmd = (f"python3 -m fuzz minimize {r.target} {rel}"
                          if rel.name.startswith("crash-") else
                          f"python3 -m fuzz.worker {r.target} -minimize_crash=1"
                          f" -max_total_time=120 -timeout={INPUT_TIMEOUT}"
                          f" -exact_artifact_path={rel}.min {rel}")
            print(f"\nreplay:   python3 -m fuzz replay {r.target} {rel}\n"
                  f"minimize: {shrink_cmd}\n"
                  f"then fix the parser and keep the minimized input in"
                  f" fuzz/regressions/{r.target}/")
    print(f"\nfuzz: {len(names)} target(s) fuzzed in {time.monotonic() - start:.0f} s")
    print(f"fuzz: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def replay(target: str, paths: Sequence[Path]) -> int:
    """Run ``target`` on each file in-process, without atheris; print any exception."""
    import traceback

    from fuzz.targets import load

    fn = load(target)
    failed = 0
    for path in paths:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if not file.is_file():
                continue
            start = time.monotonic()
            try:
                fn(file.read_bytes())
            except BaseException as e:  # report everything, including RecursionError
                failed += 1
                first = str(e).splitlines()[0][:200] if str(e).strip() else ""
                print(f"{file}: {type(e).__name__}: {first}")
                traceback.print_exc()
            else:
                print(f"{file}: ok ({time.monotonic() - start:.2f} s)")
    return 1 if failed else 0


def _signature(fn: TestOneInput, data: bytes) -> tuple[str, str, int] | None:
    """(exception type, file, line of the innermost project frame) of a failing input."""
    import traceback

    try:
        fn(data)
    except Exception as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if "site-packages" not in f.filename]
        last = frames[-1] if frames else None
        return type(e).__name__, last.filename if last else "", (last.lineno or 0) if last else 0
    return None


def shrink(fn: TestOneInput, data: bytes, deadline: float) -> bytes:
    """Delta debugging: drop ever smaller chunks while the input still fails the same way
    (same exception type at the same line), until nothing more can go or time is up."""
    want = _signature(fn, data)
    if want is None:
        raise ValueError("the input does not fail")
    chunk = max(1, len(data) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        pos, changed = 0, False
        while pos < len(data) and time.monotonic() < deadline:
            candidate = data[:pos] + data[pos + chunk:]
            if candidate and _signature(fn, candidate) == want:
                data, changed = candidate, True
            else:
                pos += chunk
        if not changed:
            chunk //= 2
    return data


def minimize(target: str, crash: Path, seconds: int, output: Path | None) -> int:
    """Shrink a reproducer of a raised exception in-process (it keeps failing the same
    way); for a timeout or out-of-memory use libFuzzer's ``-minimize_crash`` instead."""
    from fuzz.targets import load

    dest = output or crash.with_name(crash.name + ".min")
    data = crash.read_bytes()
    try:
        small = shrink(load(target), data, time.monotonic() + seconds)
    except ValueError:
        print(f"fuzz: {crash} does not raise in {target} (a hang? try libFuzzer:"
              f" python3 -m fuzz.worker {target} -minimize_crash=1 -exact_artifact_path=OUT"
              f" {crash})", file=sys.stderr)
        return 1
    dest.write_bytes(small)
    print(f"fuzz: {crash} ({len(data)} bytes) -> {dest} ({len(small)} bytes)")
    return 0


def merge(target: str, source: Path) -> int:
    """Add the inputs of ``source`` that bring new coverage to ``fuzz/corpus/<target>``."""
    dest = CORPUS / target
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "fuzz.worker", target, "-merge=1",
           f"-timeout={INPUT_TIMEOUT}", f"-rss_limit_mb={RSS_LIMIT_MB}", str(dest),
           str(source)]
    rc = subprocess.run(cmd, cwd=REPO, stdin=subprocess.DEVNULL).returncode
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"fuzz: {dest} now holds {len(list(dest.iterdir()))} files, {size} bytes")
    return rc
