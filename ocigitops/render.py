"""Render manifests with kustomize or helm before packaging them as an artifact.

The artifact a cluster pulls should hold plain Kubernetes objects, so overlays and
charts are rendered on the publishing side with the real tools:

* ``none``: nothing to do, the caller packages the source tree as it is;
* ``kustomize``: ``kustomize build`` of an overlay, run in a sandbox (see below);
* ``helm``: ``helm template`` of a local chart, with no network and no user config.

The result is written as ``manifests.yaml`` plus, when the output directory has no
kustomization of its own, a generated ``kustomization.yaml`` listing it, so a Flux
``Kustomization`` pointed at the artifact can consume it unchanged.

Sandboxing kustomize. An overlay is configuration from a repository, and a build
must not reach outside it: no remote bases, no reads of ``~/.ssh`` through
``../../..``, no plugins or exec functions, no credentials in the environment.
So the kustomization directories a build can reach, all of which must lie inside
one tree (the enclosing git work tree, else the overlay itself; ``root=`` chooses
another), are first copied into a private temporary directory; every kustomization
in that copy is checked for remote references and for paths that leave it *before*
kustomize runs; and kustomize then runs there with ``LoadRestrictionsRootOnly``,
without ``--enable-helm`` or alpha plugins, with a scrubbed environment and a
timeout. The static checks are the guard; the scrubbed environment (no proxies,
git protocols disabled) is a second line in case a reference slips past them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from ocigitops.errors import RenderError, ToolNotFoundError, UsageError

__all__ = [
    "KUSTOMIZATION_FILES",
    "MANIFESTS_FILE",
    "RenderMode",
    "find_helm",
    "find_kustomize",
    "find_remote_references",
    "render",
    "validate_manifests",
]

logger = logging.getLogger(__name__)

RenderMode = Literal["none", "kustomize", "helm"]

#: File names kustomize recognises as a kustomization, in its own lookup order.
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

#: Name of the rendered multi-document YAML file written into ``out_dir``.
MANIFESTS_FILE = "manifests.yaml"

# The C loader is several times faster on large rendered outputs; both are "safe".
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A fixed PATH rather than the caller's: a wrapper script given as the tool may need
# /usr/bin/env, but nothing from the user's PATH (a git credential helper, a plugin)
# should be found by the tool.
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# Helm release names: DNS-1123 subdomain, at most 53 characters (helm's own limit).
_RELEASE_MAX = 53


# --------------------------------------------------------------------------- tools


def _tools_root() -> Path:
    """The cache ``scripts/install-tools`` builds into (``OCIGITOPS_TOOLS`` overrides)."""
    env = os.environ.get("OCIGITOPS_TOOLS")
    return Path(env) if env else Path.home() / ".cache" / "ocigitops" / "tools"


def _version_key(path: Path, name: str) -> tuple[tuple[int, ...], str]:
    """Sort key for ``<name>-v1.2.3`` cache dirs: numeric, so v5.10 sorts after v5.9."""
    folder = path.parent.parent.name
    version = folder[len(name) + 1:]
    return tuple(int(n) for n in re.findall(r"\d+", version)), folder


def _executable(candidate: str) -> str | None:
    """Absolute path of ``candidate`` (a path or a name on PATH) if it can be run."""
    found = shutil.which(candidate)
    return str(Path(found).absolute()) if found else None


def _find_tool(name: str, env_var: str) -> str | None:
    """Look ``name`` up: ``$env_var``, then PATH, then the tools cache (newest first)."""
    override = os.environ.get(env_var)
    if override:
        found = _executable(override)
        if found is None:
            raise ToolNotFoundError(
                f"{env_var}={override} is not an executable file; unset it or run "
                f"`scripts/install-tools {name}`")
        return found
    found = _executable(name)
    if found:
        return found
    try:
        cached = [p for p in _tools_root().glob(f"{name}-*/bin/{name}")
                  if os.access(p, os.X_OK)]
    except OSError:
        # A cache this user may not read (another UID's home, as in a container run
        # with a non-default user) holds no tool for it: fall through to kubectl.
        cached = []
    if cached:
        return str(max(cached, key=lambda p: _version_key(p, name)))
    return None


def find_kustomize() -> list[str]:
    """Command prefix that builds a kustomization: ``[kustomize, "build"]``.

    Lookup order: ``$OCIGITOPS_KUSTOMIZE``, ``kustomize`` on PATH, the tools cache
    (``$OCIGITOPS_TOOLS`` or ``~/.cache/ocigitops/tools``, ``kustomize-*/bin``), and
    last ``kubectl kustomize``, whose embedded kustomize accepts the same flags.
    """
    found = _find_tool("kustomize", "OCIGITOPS_KUSTOMIZE")
    if found:
        return [found, "build"]
    kubectl = _executable("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    raise ToolNotFoundError(
        "kustomize is not installed: run `scripts/install-tools kustomize` "
        "or set OCIGITOPS_KUSTOMIZE")


def find_helm() -> list[str]:
    """Command prefix that runs helm: ``$OCIGITOPS_HELM``, PATH, then the tools cache."""
    found = _find_tool("helm", "OCIGITOPS_HELM")
    if found:
        return [found]
    raise ToolNotFoundError(
        "helm is not installed: run `scripts/install-tools helm` or set OCIGITOPS_HELM")


# ----------------------------------------------------------------- running tools


def _sandbox_env(home: Path) -> dict[str, str]:
    """Environment for a rendering tool: built from nothing, so no credentials leak in.

    Proxies, cloud and registry credentials, KUBECONFIG and HELM_* settings of the
    caller are all absent. HOME and the XDG dirs point into the sandbox so the tool
    finds no user config or plugins. Git is told to allow no protocol at all, so a
    remote base that slipped past the static checks fails instead of cloning.
    """
    for sub in ("tmp", "config", "cache", "data"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    return {
        "PATH": _SAFE_PATH,
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_DATA_HOME": str(home / "data"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # Points at a file that does not exist: nothing may talk to a cluster.
        "KUBECONFIG": str(home / "no-kubeconfig"),
        "GIT_ALLOW_PROTOCOL": "none",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }


_NOISE_PREFIXES = ("use --debug flag", "warning:", "# warning:", "walk.go:")

# Longer messages keep their head and tail: the tail says what to fix (kustomize
# ends "...: must specify --enable-helm"), the head where.
_MESSAGE_MAX = 600


def _last_error_line(stderr: str, returncode: int) -> str:
    """What went wrong, from a tool's stderr, as one line without ``Error:``.

    Both tools print ``Error: ...`` as their verdict, sometimes spread over several
    lines (kustomize quotes the offending config) and sometimes followed by hints
    (helm's "Use --debug flag..."). So the message is everything from the last
    ``Error:`` line on, hints dropped, joined into one line; failing an ``Error:``
    line, the last line that is not a warning or a hint.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    meaningful = [line for line in lines if not line.lower().startswith(_NOISE_PREFIXES)]
    starts = [i for i, line in enumerate(meaningful) if line.startswith("Error:")]
    if starts:
        text = " ".join(meaningful[starts[-1]:]).removeprefix("Error:").strip()
    else:
        text = (meaningful or lines or [""])[-1]
    if len(text) > _MESSAGE_MAX:
        text = f"{text[:_MESSAGE_MAX // 3]} ... {text[-2 * _MESSAGE_MAX // 3:]}"
    return text or f"exited with status {returncode}"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the tool and anything it started (git, a helm plugin): its whole group."""
    with contextlib.suppress(ProcessLookupError):  # it already exited
        os.killpg(proc.pid, signal.SIGKILL)


def _run(argv: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float,
         label: str, install_name: str, rewrite: Mapping[str, str]) -> str:
    """Run a rendering tool and return its stdout; failures become one-line errors.

    ``rewrite`` maps sandbox paths back to the user's paths in error messages, so
    "no such file" names a file the user can find.
    """
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as e:
        raise ToolNotFoundError(
            f"cannot run {argv[0]}: {e.strerror or e}; run `scripts/install-tools "
            f"{install_name}`") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        raise RenderError(f"render: {label} did not finish within {timeout:g}s") from None
    except BaseException:
        # Ctrl-C or similar: do not leave the tool running in its own session.
        _kill_group(proc)
        proc.wait()
        raise
    stderr = err.decode("utf-8", "replace")
    for sandbox_path, user_path in rewrite.items():
        stderr = stderr.replace(sandbox_path, user_path)
    if proc.returncode != 0:
        raise RenderError(f"render: {label}: {_last_error_line(stderr, proc.returncode)}")
    for line in stderr.splitlines():
        if line.strip():
            # Deprecation notices and the like: worth seeing, not worth failing.
            logger.warning("%s: %s", label, line.strip())
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise RenderError(f"render: {label} wrote output that is not UTF-8") from None


# ------------------------------------------------------------ kustomize checks


@dataclass(frozen=True)
class _Ref:
    """A location named in a kustomization.

    ``field`` says where (``resources``, ``patches[2].path``); ``may_be_dir`` is true
    for fields whose entries can be other kustomization directories, which kustomize
    then loads with their own root; ``local`` is false for fields that only ever hold
    a remote location (a Helm repository URL).
    """

    field: str
    value: str
    may_be_dir: bool = False
    local: bool = True


# Lists whose entries may be files or directories holding another kustomization.
_DIR_LIST_FIELDS = ("resources", "bases", "components", "generators", "transformers",
                    "validators")
# Lists of file paths (patchesStrategicMerge entries may also be inline patches).
_FILE_LIST_FIELDS = ("crds", "configurations", "patchesStrategicMerge")
# Lists of mappings with a ``path`` key.
_PATH_ITEM_FIELDS = ("patches", "patchesJson6902", "replacements")


def _is_location(value: object) -> bool:
    """True for a string that names a location rather than holding inline content."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    return bool(text) and "\n" not in text and not text.startswith(("{", "["))


def _references(doc: Mapping[str, Any]) -> Iterator[_Ref]:
    """Every path or URL a kustomization can make kustomize read."""
    for field in _DIR_LIST_FIELDS + _FILE_LIST_FIELDS:
        entries = doc.get(field)
        if isinstance(entries, list):
            for entry in entries:
                if _is_location(entry):
                    yield _Ref(field, entry.strip(), may_be_dir=field in _DIR_LIST_FIELDS)
    for field in _PATH_ITEM_FIELDS:
        entries = doc.get(field)
        if isinstance(entries, list):
            for i, entry in enumerate(entries):
                if isinstance(entry, dict) and _is_location(entry.get("path")):
                    yield _Ref(f"{field}[{i}].path", entry["path"].strip())
    openapi = doc.get("openapi")
    if isinstance(openapi, dict) and _is_location(openapi.get("path")):
        yield _Ref("openapi.path", openapi["path"].strip())
    for field in ("configMapGenerator", "secretGenerator"):
        entries = doc.get(field)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            files = entry.get("files")
            for source in files if isinstance(files, list) else []:
                if _is_location(source):
                    # "key=path" names the key explicitly; the path is what is read.
                    yield _Ref(f"{field}[{i}].files", source.split("=", 1)[-1].strip())
            envs = entry.get("envs")
            for source in envs if isinstance(envs, list) else []:
                if _is_location(source):
                    yield _Ref(f"{field}[{i}].envs", source.strip())
            if _is_location(entry.get("env")):
                yield _Ref(f"{field}[{i}].env", entry["env"].strip())
    globals_ = doc.get("helmGlobals")
    if isinstance(globals_, dict):
        for key in ("chartHome", "configHome"):
            if _is_location(globals_.get(key)):
                yield _Ref(f"helmGlobals.{key}", globals_[key].strip())
    for field in ("helmCharts", "helmChartInflationGenerator"):
        entries = doc.get(field)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            for key in ("repo", "chartRepoUrl"):
                if _is_location(entry.get(key)):
                    yield _Ref(f"{field}[{i}].{key}", entry[key].strip(), local=False)
            for key in ("chartHome", "valuesFile", "values"):
                if _is_location(entry.get(key)):
                    yield _Ref(f"{field}[{i}].{key}", entry[key].strip())
            extra = entry.get("additionalValuesFiles")
            for source in extra if isinstance(extra, list) else []:
                if _is_location(source):
                    yield _Ref(f"{field}[{i}].additionalValuesFiles", source.strip())


_REMOTE_PREFIXES = ("git::", "git@", "gh:", "ssh:", "http:", "https:", "file:", "oci:",
                    "github.com/", "gitlab.com/", "bitbucket.org/")
_REMOTE_QUERIES = ("?ref=", "?version=", "?submodules=", "?timeout=", "&ref=")
_HOST = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?$")


def _looks_remote(value: str) -> bool:
    """True when kustomize would fetch ``value`` over the network (git or HTTP).

    Matches URLs of any scheme, go-getter ``git::`` forms, scp-like ``git@host:``,
    the scheme-less GitHub/GitLab/Bitbucket forms kustomize accepts, ``?ref=``
    queries and the ``repo//subdir`` separator; none of these is a sane local path.
    """
    text = value.strip().lower()
    return ("://" in text or text.startswith(_REMOTE_PREFIXES)
            or any(q in text for q in _REMOTE_QUERIES) or "//" in text)


def _looks_like_host_path(value: str) -> bool:
    """True for ``example.com/org/repo``: kustomize tries such a path as a git repo
    when no local file has that name, so a missing one is treated as remote."""
    first, _, rest = value.strip().lower().partition("/")
    return (bool(rest) and _HOST.match(first) is not None
            and not first.endswith((".yaml", ".yml", ".json")))


def _kustomization_file(directory: Path) -> Path | None:
    """The kustomization file of ``directory``, in kustomize's lookup order."""
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _load_kustomization(path: Path, shown: str) -> Mapping[str, Any]:
    """Parse a kustomization; one that cannot be parsed cannot be checked, so refuse."""
    try:
        doc = yaml.load(path.read_bytes(), Loader=_SafeLoader)
    except OSError as e:
        raise RenderError(f"render: {shown}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise RenderError(f"render: {shown}: invalid YAML: {_yaml_problem(e)}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise RenderError(f"render: {shown}: not a mapping (got {_type_name(doc)})")
    return doc


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` for messages, or absolute when outside it."""
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return str(path)


def _user_path(path: Path) -> str:
    """How to name ``path`` to the user: relative to the working directory if below it."""
    shown = _rel(path, Path.cwd().resolve())
    return str(path) if shown == "." else shown


def _mapped_namer(tree: Path, original: Path) -> Callable[[Path], str]:
    """Names for paths in a sandbox copy: those of the originals the user knows."""
    def show(path: Path) -> str:
        try:
            return _user_path(original / path.relative_to(tree))
        except ValueError:
            return str(path)
    return show


def _remote_error(shown: str, ref: _Ref) -> RenderError:
    return RenderError(
        f"render: {shown}: {ref.field}: {ref.value!r} is a remote reference; remote "
        "resources are refused, vendor them into the tree")


def _remote_findings(tree: Path) -> Iterator[tuple[Path, _Ref]]:
    """(kustomization file, reference) for every remote reference under ``tree``."""
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            if name not in KUSTOMIZATION_FILES:
                continue
            path = Path(dirpath, name)
            try:
                doc = _load_kustomization(path, str(path))
            except RenderError:
                continue
            for ref in _references(doc):
                if _looks_remote(ref.value):
                    yield path, ref


def find_remote_references(tree: Path) -> list[str]:
    """Every remote reference in every kustomization file under ``tree``.

    Each finding reads ``<file relative to tree>: <field>: '<value>'``. Files that do
    not parse are skipped here; a build that reaches them refuses them anyway.
    ``.git`` directories are not searched and symlinks are not followed.
    """
    return [f"{_rel(path, tree)}: {ref.field}: {ref.value!r}"
            for path, ref in _remote_findings(tree)]


def _closure(start: Path, root: Path, show: Callable[[Path], str]) -> set[Path]:
    """Paths a build of ``start`` reads, all checked to be local and under ``root``.

    Walks ``start``'s kustomization and, through ``resources``/``components``/...,
    every kustomization directory it reaches. Returns those directories (each is
    copied whole: with ``LoadRestrictionsRootOnly`` a kustomization only reads below
    its own directory) plus any referenced file outside its kustomization, so that
    kustomize, not a missing copy, reports the load-restriction violation.
    Remote, absolute and root-escaping references raise ``RenderError``.
    Both ``start`` and ``root`` must be resolved paths; ``show`` names paths in
    messages.
    """
    needed: set[Path] = set()
    pending = [start]
    seen: set[Path] = set()
    while pending:
        kdir = pending.pop()
        if kdir in seen:
            continue
        seen.add(kdir)
        needed.add(kdir)
        kfile = _kustomization_file(kdir)
        if kfile is None:
            continue  # kustomize reports the missing kustomization in its own words
        shown = show(kfile)
        for ref in _references(_load_kustomization(kfile, shown)):
            if _looks_remote(ref.value):
                raise _remote_error(shown, ref)
            if not ref.local:
                continue
            if os.path.isabs(ref.value):
                raise RenderError(
                    f"render: {shown}: {ref.field}: {ref.value!r} is an absolute path; "
                    "sandboxed builds only read relative paths inside the tree")
            target = (kdir / ref.value).resolve()
            if not target.is_relative_to(root):
                raise RenderError(
                    f"render: {shown}: {ref.field}: {ref.value!r} points outside the "
                    f"tree {show(root)}; sandboxed builds only read files inside it")
            if not target.exists():
                if _looks_like_host_path(ref.value):
                    raise _remote_error(shown, ref)
                continue  # kustomize reports the missing file
            if ref.may_be_dir and target.is_dir():
                pending.append(target)
            elif not target.is_relative_to(kdir):
                needed.add(target)
    return needed


def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    """Skip ``.git`` and anything but files, directories and symlinks (a FIFO in the
    tree would block the copy forever)."""
    skipped = set()
    for name in names:
        if name == ".git":
            skipped.add(name)
            continue
        mode = os.lstat(os.path.join(directory, name)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            skipped.add(name)
    return skipped


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """``paths`` without those inside a directory also listed (a whole directory is copied
    or checked once)."""
    kept: list[Path] = []
    for path in sorted(paths, key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(k) for k in kept if k.is_dir()):
            kept.append(path)
    return kept


def _copy_into(paths: Iterable[Path], root: Path, dest: Path,
               show: Callable[[Path], str]) -> None:
    """Copy ``paths`` (under ``root``) to the same relative places under ``dest``.

    Symlinks are copied as links, then every link in the copy must resolve inside
    ``dest``: an absolute link, or one climbing out of the copy, would let the tool
    read the real filesystem. ``show`` names paths of the copy in messages.
    """
    try:
        for path in _outermost(paths):
            target = dest / path.relative_to(root)
            if path.is_dir():
                shutil.copytree(path, target, symlinks=True, ignore=_copy_ignore,
                                dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    except (OSError, shutil.Error) as e:
        raise RenderError(f"render: cannot copy the tree to the sandbox: {e}") from None
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            link = Path(dirpath, name)
            if link.is_symlink() and not Path(os.path.realpath(link)).is_relative_to(dest):
                raise RenderError(
                    f"render: {show(link)} is a symlink to {os.readlink(link)!r}, "
                    "outside the tree; sandboxed builds only read files inside it")


def _default_root(src: Path) -> Path:
    """The tree a kustomize build may read: the enclosing git work tree, else ``src``."""
    for candidate in (src, *src.parents):
        if (candidate / ".git").exists():
            return candidate
    return src


def build_kustomization(src: Path, *, root: Path | None = None, timeout: float = 120.0,
                        private: bool = False) -> str:
    """Run the sandboxed ``kustomize build`` of ``src`` and return its YAML output.

    Used by the publisher (``--render kustomize``) and by the in-cluster Kustomization:
    a private copy of what the build reads under ``root``, no remote resources, no
    plugins or exec, load restrictor RootOnly, a timeout. ``private``: ``root`` is
    already a directory only this process writes, holding no symlinks (an artifact the
    controller just extracted, which refuses links): the build reads it in place, with
    the same checks, instead of a copy (the copy and its removal were a tenth of the
    controller's CPU).
    """
    return _render_kustomize(src, root=root, timeout=timeout, private=private)


def _render_kustomize(src: Path, *, root: Path | None, timeout: float,
                      private: bool = False) -> str:
    """Build the overlay at ``src`` in a sandbox; return kustomize's stdout."""
    start = src.resolve()
    if not start.is_dir():
        raise UsageError(f"render: {src} is not a directory")
    boundary = (root.resolve() if root is not None else _default_root(start))
    if not start.is_relative_to(boundary):
        raise UsageError(f"render: {src} is not inside the tree {root}")
    if _kustomization_file(start) is None:
        raise RenderError(f"render: {src}: no kustomization.yaml (or .yml, Kustomization)")
    needed = _closure(start, boundary, _user_path)
    if private:
        return _render_in_place(start, boundary, needed, timeout)
    with tempfile.TemporaryDirectory(prefix="ocigitops-render-") as tmp:
        sandbox = Path(tmp).resolve()
        tree, home = sandbox / "tree", sandbox / "home"
        tree.mkdir()
        home.mkdir()
        show = _mapped_namer(tree, boundary)
        _copy_into(needed, boundary, tree, show)
        # The checks that count are on the copy, which is exactly what kustomize reads
        # (the source could have changed since it was walked).
        sandbox_start = tree / start.relative_to(boundary)
        _closure(sandbox_start, tree, show)
        for path, ref in _remote_findings(tree):
            raise _remote_error(show(path), ref)
        argv = [*find_kustomize(), str(sandbox_start),
                "--load-restrictor", "LoadRestrictionsRootOnly"]
        return _run(argv, cwd=tree, env=_sandbox_env(home), timeout=timeout,
                    label="kustomize", install_name="kustomize",
                    rewrite={str(tree): str(boundary),
                             os.path.join(tmp, "tree"): str(boundary)})


def _render_in_place(start: Path, tree: Path, needed: set[Path], timeout: float) -> str:
    """``kustomize build`` of ``start`` reading the private ``tree`` itself. The sandbox
    copy's checks are made on what the build reads (``needed``, from :func:`_closure`):
    no remote reference, and no link at all."""
    for path in _outermost(needed):
        if not path.is_dir():
            if path.is_symlink():
                raise RenderError(f"render: {_user_path(path)} is a symlink; in-place builds"
                                  " read regular files only")
            continue
        for found, ref in _remote_findings(path):
            raise _remote_error(_user_path(found), ref)
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                if Path(dirpath, name).is_symlink():
                    raise RenderError(f"render: {_user_path(Path(dirpath, name))} is a"
                                      " symlink; in-place builds read regular files only")
    with tempfile.TemporaryDirectory(prefix="ocigitops-render-") as tmp:
        home = Path(tmp)
        argv = [*find_kustomize(), str(start), "--load-restrictor",
                "LoadRestrictionsRootOnly"]
        return _run(argv, cwd=tree, env=_sandbox_env(home), timeout=timeout,
                    label="kustomize", install_name="kustomize", rewrite={})


# ------------------------------------------------------------------------- helm


def _default_release_name(chart: Path) -> str:
    """The chart's directory (or archive) name, made a valid helm release name."""
    name = chart.name
    for suffix in (".tgz", ".tar.gz"):
        name = name.removesuffix(suffix)
    name = re.sub(r"[^a-z0-9-]+", "-", name.lower())[:_RELEASE_MAX].strip("-")
    return name or "release"


def _render_helm(src: Path, *, values: Sequence[Path], release_name: str | None,
                 namespace: str | None, timeout: float) -> str:
    """``helm template`` a local chart with no network; return helm's stdout."""
    chart = src.resolve()
    if chart.is_dir():
        if not (chart / "Chart.yaml").is_file():
            raise UsageError(f"render: {src} has no Chart.yaml; it is not a Helm chart")
    elif not (chart.is_file() and chart.name.endswith((".tgz", ".tar.gz"))):
        raise UsageError(f"render: {src} is neither a chart directory nor a .tgz chart")
    value_files = []
    for v in values:
        if not v.is_file():
            raise UsageError(f"render: values file {v} does not exist")
        # Absolute local paths: helm would fetch a --values argument that looks like a URL.
        value_files.append(str(v.resolve()))
    release = release_name or _default_release_name(chart)
    with tempfile.TemporaryDirectory(prefix="ocigitops-render-") as tmp:
        sandbox = Path(tmp).resolve()
        tree, home = sandbox / "tree", sandbox / "home"
        tree.mkdir()
        home.mkdir()
        # A copy, like kustomize's: a chart's symlinks must not read outside it.
        _copy_into([chart], chart.parent, tree, _mapped_namer(tree, chart.parent))
        argv = [*find_helm(), "template", release, str(tree / chart.name),
                # The rendered objects are what the cluster gets, and a Flux
                # HelmRelease would install the chart's CRDs too.
                "--include-crds",
                # Test hooks belong to `helm test`; applied as plain objects they
                # would start test pods in the cluster on every deploy.
                "--skip-tests"]
        if namespace:
            argv += ["--namespace", namespace]
        for f in value_files:
            argv += ["--values", f]
        env = _sandbox_env(home)
        # Empty helm homes: no repositories, plugins or registry logins of the user.
        env.update(HELM_CACHE_HOME=str(home / "helm-cache"),
                   HELM_CONFIG_HOME=str(home / "helm-config"),
                   HELM_DATA_HOME=str(home / "helm-data"))
        return _run(argv, cwd=tree, env=env, timeout=timeout, label="helm template",
                    install_name="helm",
                    rewrite={str(tree): str(chart.parent),
                             os.path.join(tmp, "tree"): str(chart.parent)})


# ---------------------------------------------------------------------- output


def _write_output(text: str, out_dir: Path) -> list[Path]:
    """Write ``manifests.yaml`` and, if ``out_dir`` has none, a kustomization for it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifests = out_dir / MANIFESTS_FILE
    if text and not text.endswith("\n"):
        text += "\n"
    manifests.write_text(text, encoding="utf-8")
    written = [manifests]
    # An existing kustomization is the user's: theirs decides what gets applied, and
    # kustomize refuses a directory holding two.
    if not any((out_dir / name).exists() for name in KUSTOMIZATION_FILES):
        kustomization = out_dir / "kustomization.yaml"
        doc = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": sorted(p.relative_to(out_dir).as_posix() for p in written),
        }
        kustomization.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        written.append(kustomization)
    return sorted(written)


def render(src: Path, mode: RenderMode, out_dir: Path, *, values: Sequence[Path] = (),
           release_name: str | None = None, namespace: str | None = None,
           timeout: float = 120.0, root: Path | None = None) -> list[Path]:
    """Render ``src`` into ``out_dir`` and return the files written (sorted).

    ``mode="none"`` writes nothing and returns ``[]``: the caller packages ``src``.
    ``mode="kustomize"`` builds the overlay at ``src`` in a sandbox holding only the
    kustomization directories it reaches under ``root`` (default: the enclosing git
    work tree, or ``src`` itself outside one); references outside ``root`` or remote
    ones are refused before kustomize runs. ``mode="helm"`` runs ``helm template``
    on the chart at ``src`` with ``values`` files, ``release_name`` (default: the
    chart directory's name) and ``namespace``.

    The output is ``manifests.yaml`` plus a generated ``kustomization.yaml`` when
    ``out_dir`` has no kustomization. It is validated with
    :func:`validate_manifests` before anything is written.

    Raises ``RenderError`` (tool failure, remote reference, invalid output),
    ``ToolNotFoundError`` and ``UsageError`` (bad arguments).
    """
    if mode not in ("none", "kustomize", "helm"):
        raise UsageError(f"render: unknown mode {mode!r} (expected none, kustomize or helm)")
    if mode != "helm" and (values or release_name or namespace):
        raise UsageError("render: values, release name and namespace only apply to helm")
    if timeout <= 0:
        raise UsageError(f"render: timeout must be positive, got {timeout}")
    if mode == "none":
        return []
    if mode == "kustomize":
        text = _render_kustomize(src, root=root, timeout=timeout)
    else:
        text = _render_helm(src, values=values, release_name=release_name,
                            namespace=namespace, timeout=timeout)
    objects = _validate_text(text, MANIFESTS_FILE)
    if objects == 0:
        logger.warning("render: %s rendered no objects", src)
    return _write_output(text, out_dir)


# ------------------------------------------------------------------ validation


def _type_name(value: object) -> str:
    """YAML-ish name of a parsed value's type, for messages."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool | int | float):
        return "a number" if not isinstance(value, bool) else "a boolean"
    return type(value).__name__


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line from a PyYAML error: the problem and where it is in the file."""
    if isinstance(error, yaml.MarkedYAMLError):
        problem = error.problem or error.context or "parse error"
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        return problem
    return " ".join(str(error).split())


def _check_object(obj: object, where: str) -> int:
    """Check one object (or expand a ``*List``); return the number of objects."""
    if not isinstance(obj, dict):
        raise RenderError(f"render: {where}: not a mapping (got {_type_name(obj)})")
    for key in ("apiVersion", "kind"):
        value = obj.get(key)
        if value is None:
            raise RenderError(f"render: {where}: missing {key}")
        if not isinstance(value, str) or not value.strip():
            raise RenderError(f"render: {where}: {key} must be a non-empty string")
    # Like kustomize and kubectl: any kind ending in "List" that has items is a
    # container whose items are the objects.
    if obj["kind"].endswith("List") and "items" in obj:
        items = obj["items"]
        if items is None:
            return 0
        if not isinstance(items, list):
            raise RenderError(f"render: {where}: items must be a list")
        return sum(_check_object(item, f"{where} item {i}")
                   for i, item in enumerate(items, start=1))
    metadata = obj.get("metadata")
    if metadata is None:
        raise RenderError(f"render: {where}: missing metadata.name")
    if not isinstance(metadata, dict):
        raise RenderError(f"render: {where}: metadata must be a mapping")
    name = metadata.get("name")
    if name is None:
        raise RenderError(f"render: {where}: missing metadata.name")
    if not isinstance(name, str) or not name.strip():
        raise RenderError(f"render: {where}: metadata.name must be a non-empty string")
    return 1


def _validate_text(data: str | bytes, shown: str) -> int:
    """Validate one multi-document YAML stream named ``shown`` in messages."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RenderError(f"render: {shown}: not UTF-8 text") from None
    count = 0
    index = 0
    try:
        # Documents are numbered from 1 in stream order, empty ones included, so the
        # number matches what a reader counts between "---" separators.
        for index, doc in enumerate(yaml.load_all(data, Loader=_SafeLoader), start=1):
            if doc is not None:
                count += _check_object(doc, f"{shown} document {index}")
    except yaml.YAMLError as e:
        raise RenderError(
            f"render: {shown} document {index + 1}: invalid YAML: {_yaml_problem(e)}"
        ) from None
    return count


def validate_manifests(files: Iterable[Path], *, base: Path | None = None) -> int:
    """Check that ``files`` hold Kubernetes objects; return how many there are.

    Every YAML document must parse (safe loader) and be a mapping with non-empty
    string ``apiVersion``, ``kind`` and ``metadata.name``. Kinds ending in ``List``
    with ``items`` count their items instead; empty documents are skipped.
    :func:`render` applies this to its output; plain trees are left to the caller.
    Files are named relative to ``base`` in messages when given. The first problem
    raises ``RenderError``, e.g. ``render: manifests.yaml document 3: missing
    metadata.name``.
    """
    total = 0
    for path in files:
        shown = _rel(path, base) if base is not None else str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise RenderError(f"render: {shown}: cannot read: {e.strerror or e}") from None
        total += _validate_text(data, shown)
    return total
