"""``ocigitops quickstart``: the whole publish path on this machine, nothing else needed.

Starts the embedded registry in the background (it keeps running so the commands it
prints next work), packages the shipped examples (rendered with kustomize when it is
installed, as plain trees otherwise), pushes them, pulls them back and compares.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ocigitops.artifact import Metadata
from ocigitops.errors import OcigitopsError, ToolNotFoundError, UsageError
from ocigitops.ignore import DEFAULT_IGNORE
from ocigitops.publisher.artifacts import push_artifact
from ocigitops.publisher.gitinfo import detect
from ocigitops.pull import pull_artifact
from ocigitops.reference import parse_reference
from ocigitops.registry import RegistryClient
from ocigitops.regserver import parse_address

Say = Callable[[str], None]


def default_state_dir() -> Path:
    """``$XDG_CACHE_HOME/ocigitops/quickstart`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ocigitops" / "quickstart"


def shipped_examples() -> Path:
    """The examples shipped as package data (``ocigitops/examples``), wherever the package
    is installed: a wheel, an editable install, or the source tree."""
    import ocigitops

    for base in ocigitops.__path__:
        candidate = Path(base) / "examples"
        if (candidate / "app").is_dir():
            return candidate
    raise UsageError("the examples are missing from this installation of ocigitops"
                     " (ocigitops/examples): reinstall it, or pass --examples DIR")


def _answers(host: str, port: int) -> bool:
    try:
        import httpx

        return httpx.get(f"http://{host}:{port}/v2/", timeout=1.0).status_code == 200
    except Exception:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_registry(address: str, state_dir: Path, say: Say) -> str:
    """Start (or reuse) the background registry; returns ``host:port``."""
    host, port = parse_address(address)  # a malformed address is a usage error, at once
    port_s = str(port)
    pidfile = state_dir / "registry.pid"
    addrfile = state_dir / "registry.address"
    if pidfile.exists() and addrfile.exists():
        prev = addrfile.read_text().strip()
        ph, _, pp = prev.rpartition(":")
        if _answers(ph, int(pp)):
            say(f"registry already running at {prev} (pid {pidfile.read_text().strip()})")
            return prev
    if not _port_free(host, port):
        port = _free_port(host)
        say(f"port {port_s} is busy, using {port}")
    storage = state_dir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    log = open(state_dir / "registry.log", "ab")  # noqa: SIM115 (handed to the child)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocigitops.regserver", "--storage", str(storage),
         "--address", f"{host}:{port}"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _answers(host, port):
            break
        if proc.poll() is not None:
            raise OcigitopsError(f"the registry exited at start; see {state_dir/'registry.log'}")
        time.sleep(0.1)
    else:
        proc.kill()
        raise OcigitopsError(f"the registry did not answer in 15s; see {state_dir/'registry.log'}")
    pidfile.write_text(str(proc.pid))
    addrfile.write_text(f"{host}:{port}")
    say(f"started the embedded registry at {host}:{port} (storage {storage}, pid {proc.pid})")
    return f"{host}:{port}"


def stop_registry(state_dir: Path | None = None) -> bool:
    """Stop the background registry (of ``state_dir``, default :func:`default_state_dir`);
    False when none was running."""
    pidfile = (state_dir or default_state_dir()) / "registry.pid"
    if not pidfile.exists():
        return False
    try:
        os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        stopped = True
    except (ProcessLookupError, ValueError):
        stopped = False
    pidfile.unlink(missing_ok=True)
    return stopped


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


async def _publish(registry: str, examples: Path, work: Path, say: Say) -> list[str]:
    from ocigitops.render import render

    origin = detect(examples)
    meta = Metadata(source=origin.source or "https://example.invalid/ocigitops-quickstart",
                    revision=origin.revision or "quickstart@sha1:" + "0" * 40)
    pushed: list[str] = []
    async with RegistryClient(insecure=True) as client:
        for env in ("staging", "production"):
            overlay = examples / "app" / "overlays" / env
            content: Path = overlay
            try:
                out = work / f"rendered-{env}"
                out.mkdir()
                files = render(overlay, "kustomize", out, root=examples)
                content = out
                say(f"rendered {overlay} with kustomize: {len(files)} file(s)")
            except ToolNotFoundError:
                say(f"kustomize is not installed: packaging {overlay} unrendered")
            ref = parse_reference(f"oci://{registry}/quickstart/app-{env}:latest")
            result = await push_artifact(client, ref, content, meta,
                                         ignore=list(DEFAULT_IGNORE))
            say(f"pushed {ref.url()} -> {result.digest}")
            back = work / f"pulled-{env}"
            pulled = await pull_artifact(client, ref, back)
            if _files(back) != _files(content):
                raise OcigitopsError(f"pulled content of {ref} differs from what was pushed")
            say(f"pulled it back: {pulled.files} file(s), identical;"
                f" revision {pulled.metadata.revision}")
            pushed.append(ref.url())
    return pushed


def run_quickstart(address: str, state_dir: Path | None, examples: Path | None,
                   say: Say) -> None:
    """Run the quickstart, printing each step with ``say``.

    ``state_dir`` (default :func:`default_state_dir`) holds the registry's storage and
    logs; ``examples`` defaults to the examples shipped with the package.
    """
    state_dir = state_dir or default_state_dir()
    examples = examples or shipped_examples()
    if not (examples / "app" / "overlays").is_dir():
        raise UsageError(f"examples not found at {examples}: pass --examples DIR (the"
                         " examples/ folder of the ocigitops source tree)")
    state_dir.mkdir(parents=True, exist_ok=True)
    registry = start_registry(address, state_dir, say)
    with tempfile.TemporaryDirectory(prefix="ocigitops-quickstart-") as tmp:
        pushed = asyncio.run(_publish(registry, examples, Path(tmp), say))
    say("")
    say("Done. Next, try:")
    say(f"  ocigitops list artifacts oci://{registry}/quickstart/app-staging --insecure-registry")
    say(f"  ocigitops pull artifact {pushed[0]} --output ./staging --insecure-registry")
    say(f"  ocigitops push artifact oci://{registry}/my/app:v1 --path examples/app/base"
        " --source https://example.com/me/app --revision main@sha1:"
        + "1" * 40 + " --insecure-registry")
    say("  ocigitops registry stop     # stops the background registry")
