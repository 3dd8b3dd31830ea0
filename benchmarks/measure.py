"""Measuring one command run: wall time, peak RSS and CPU, shared by the benchmarks."""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"


@dataclass
class Sample:
    """One process run: wall seconds, peak RSS in MiB, user+sys CPU seconds."""

    wall: float
    rss_mib: float
    cpu: float


class CommandFailed(RuntimeError):
    """A measured command exited non-zero."""


def run_measured(argv: list[str], log: Path, env: dict[str, str] | None = None, *,
                 sync: bool = False) -> tuple[Sample, str]:
    """Run ``argv`` to completion: its wall time, peak RSS, CPU time, and its stdout.

    On Linux ``ru_maxrss`` survives ``exec``: a child forked straight from this benchmark
    would start with *our* peak RSS as its floor (~70 MiB here, more than a whole ``flux``
    run). So when GNU ``/usr/bin/time`` exists the command runs under it (a tiny C
    process; the rusage it gets from ``wait4`` is exact). Otherwise ``os.wait4`` on a
    direct child is used and the RSS has that floor. The command line, its stdout and
    stderr go to ``log``. ``sync`` flushes earlier runs' dirty pages first (pulled trees,
    deleted directories) so their writeback is not billed to this run.
    """
    via_time = os.access(GNU_TIME, os.X_OK)
    with tempfile.NamedTemporaryFile("r", suffix=".rusage") as ru_file, \
            tempfile.TemporaryFile("w+b") as stdout, open(log, "ab") as out:
        out.write(("\n$ " + " ".join(argv) + "\n").encode())
        out.flush()
        if sync:
            os.sync()
        full = [GNU_TIME, "-f", "%M %U %S %x", "-o", ru_file.name, *argv] if via_time \
            else argv
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=stdout, stderr=out, stdin=subprocess.DEVNULL,
                                env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from re-waiting
        if via_time:
            # "Command exited with non-zero status N" may precede the numbers.
            fields = ru_file.read().split()[-4:]
            rss_kib, cpu = int(fields[0]), float(fields[1]) + float(fields[2])
        else:
            rss_kib, cpu = ru.ru_maxrss, ru.ru_utime + ru.ru_stime  # Linux: KiB
        stdout.seek(0)
        text = stdout.read().decode(errors="replace")
        out.write(text.encode())
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise CommandFailed(f"{Path(argv[0]).name} exited {proc.returncode}:\n{tail}")
    return Sample(wall=wall, rss_mib=rss_kib / 1024, cpu=cpu), text


def med(samples: list[Sample]) -> dict[str, float]:
    """Medians of each field."""
    return {
        "wall_s": statistics.median(s.wall for s in samples),
        "rss_mib": statistics.median(s.rss_mib for s in samples),
        "cpu_s": statistics.median(s.cpu for s in samples),
        "n": len(samples),
    }


def rss_via() -> str:
    """How peak RSS is measured here: ``gnu-time`` (exact) or ``wait4`` (with a floor)."""
    return "gnu-time" if os.access(GNU_TIME, os.X_OK) else "wait4"


def console_script(name: str = "ocigitops") -> str | None:
    """The installed console script ``name``: the one beside this interpreter first, else
    the one on ``PATH``.

    Under pyenv, ``PATH`` finds a *shim*: a bash script that runs ``pyenv exec`` to choose
    an interpreter and then the real script, which costs about 0.4 s per start on this
    machine, more than a whole ``pull artifact`` of the benchmark tree. A user of a venv,
    pipx or the controller image runs the real script, so that is what is measured.
    """
    import shutil
    import sys

    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def scrape(port: int, timeout: float = 10.0) -> str:
    """The Prometheus text a local process serves on ``127.0.0.1:port/metrics`` ("" when
    it cannot be read: a metric that is missing is reported as missing, not as zero)."""
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout).text
    except httpx.HTTPError:
        return ""


def wait_ready(port: int, proc: subprocess.Popen[bytes], deadline: float, log: Path,
               what: str = "controller") -> None:
    """Wait until the local process ``proc`` answers 200 on ``127.0.0.1:port/readyz``;
    RuntimeError with the tail of its ``log`` when it exits or ``deadline`` (monotonic)
    passes first."""
    import httpx

    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready:\n"
                               + log.read_text(errors="replace")[-3000:])
        time.sleep(0.2)


def byte_compile() -> int:
    """Write the bytecode of every ocigitops module, as ``pip install`` and the controller
    image do; the number of folders compiled.

    A development checkout run with ``PYTHONDONTWRITEBYTECODE`` (set on some machines)
    never caches bytecode, so every start compiles our modules again: about 0.5 s of a
    ``pull artifact`` here, a cost no installed copy pays. Measured commands get the
    cached bytecode a user's install has.
    """
    import compileall

    root = Path(__file__).resolve().parent.parent
    folders = [root / "ocigitops", *(root / d / "ocigitops" for d in
                                     ("publisher", "verifier", "puller"))]
    done = 0
    for folder in folders:
        if folder.is_dir():
            compileall.compile_dir(folder, quiet=1, workers=1)
            done += 1
    return done
