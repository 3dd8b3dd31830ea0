"""The ``ocigitops`` command line: a thin shell over library functions.

Heavy modules (httpx, rich, yaml) are imported inside commands so that start-up, and
``ocigitops --version`` in particular, stays fast.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ocigitops import __version__
from ocigitops.errors import OcigitopsError, UsageError

if TYPE_CHECKING:
    from ocigitops.reference import Reference
    from ocigitops.registry import RegistryClient

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

PROGRESS_THRESHOLD = 4 * 1024 * 1024


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _err(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _info(message: str) -> None:
    click.echo(message, err=True)


def registry_options(f: F) -> F:
    """Flags every command that talks to a registry accepts."""
    opts = [
        click.option("--creds", envvar="OCIGITOPS_CREDS", default=None, metavar="USER:PASS",
                     help="Registry credentials (a value without ':' is a bearer token)."),
        click.option("--insecure-registry", is_flag=True,
                     help="Use plain HTTP (no TLS) for the registry."),
        click.option("--docker-config", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="A docker config.json, a dockerconfigjson document"
                     " or a Kubernetes Secret holding one."),
        click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="CA certificate(s) to trust for the registry's TLS."),
        click.option("--cert-file", type=click.Path(exists=True, dir_okay=False),
                     default=None, help="Client certificate for mutual TLS."),
        click.option("--key-file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Client key for mutual TLS."),
        click.option("--timeout", type=float, default=60.0, show_default=True,
                     help="Per-request timeout in seconds."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _load_docker_config(path: Path) -> Any:
    from ocigitops.auth import DockerConfig
    from ocigitops.errors import CredentialsError

    data = path.read_bytes()
    if data.lstrip()[:1] != b"{":
        import base64

        import yaml

        doc = yaml.safe_load(data)
        raw = (doc or {}).get("data", {}).get(".dockerconfigjson") if isinstance(doc, dict) \
            else None
        if not raw:
            raise CredentialsError(f"{path}: neither JSON nor a Secret with .dockerconfigjson")
        data = base64.b64decode(raw)
    return DockerConfig.from_bytes(data, source=str(path))


def make_client(creds: str | None, insecure_registry: bool, docker_config: Path | None,
                ca_file: str | None, cert_file: str | None, key_file: str | None,
                timeout: float) -> RegistryClient:
    """Build a registry client from the common flags."""
    from ocigitops.auth import CredentialResolver, parse_creds
    from ocigitops.registry import RegistryClient

    configs = [_load_docker_config(docker_config)] if docker_config else []
    resolver = CredentialResolver(creds=parse_creds(creds) if creds else None, configs=configs)
    return RegistryClient(resolver, insecure=insecure_registry, ca_file=ca_file,
                          cert_file=cert_file, key_file=key_file, timeout=timeout)


def _client_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    keys = ("creds", "insecure_registry", "docker_config", "ca_file", "cert_file",
            "key_file", "timeout")
    return {k: kw.pop(k) for k in keys}


def _parse_ref(url: str, *, scheme: bool = True) -> Reference:
    from ocigitops.reference import parse_reference

    return parse_reference(url, require_scheme=scheme)


def _progress_factory(enabled: bool) -> Callable[[str, int], Callable[[int], None] | None]:
    """Progress bars on stderr for transfers over a few MB, when stderr is a terminal."""

    def factory(label: str, total: int) -> Callable[[int], None] | None:
        if not enabled or total < PROGRESS_THRESHOLD or not sys.stderr.isatty():
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TransferSpeedColumn,
        )

        progress = Progress("[progress.description]{task.description}", BarColumn(),
                            DownloadColumn(), TransferSpeedColumn(),
                            console=Console(stderr=True), transient=True)
        progress.start()
        task = progress.add_task(label, total=total)
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            progress.update(task, completed=min(done[0], total))
            if done[0] >= total:
                progress.stop()

        return advance

    return factory


def _emit(doc: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump(doc, sort_keys=False).rstrip())


class _Group(click.Group):
    """Maps OcigitopsError to ``error: <message>`` and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OcigitopsError as e:
            _err(str(e))
            ctx.exit(e.exit_code)
        except OSError as e:
            _err(f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}")
            ctx.exit(1)
        except KeyboardInterrupt:
            _err("interrupted")
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ocigitops")
def main() -> None:
    """OCI-first GitOps: package, push, sign, verify and reconcile Kubernetes config."""


@main.group()
def push() -> None:
    """Push artifacts to a registry."""


@main.group()
def pull() -> None:
    """Pull artifacts from a registry."""


@main.group()
def tag() -> None:
    """Tag artifacts."""


@main.group(name="list")
def list_() -> None:
    """List artifacts."""


@main.group()
def diff() -> None:
    """Compare local content with artifacts."""


@main.group()
def build() -> None:
    """Build artifacts locally."""


def _parse_annotations(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise UsageError(f"--annotation {v!r}: use key=value")
        out[k] = val
    return out


def _ignore_list(ignore_paths: str | None, add_ignore_paths: tuple[str, ...]) -> list[str]:
    from ocigitops.ignore import effective_patterns

    base = None if ignore_paths is None else [ignore_paths]
    return effective_patterns(base, add_ignore_paths)


ignore_options = [
    click.option("--ignore-paths", default=None,
                 help="Comma-separated gitignore patterns replacing the default list."),
    click.option("--add-ignore-paths", multiple=True,
                 help="Patterns added to the ignore list (repeatable, comma-separated)."),
]


def with_ignore(f: F) -> F:
    """Add the ignore flags."""
    for opt in reversed(ignore_options):
        f = opt(f)
    return f


@push.command("artifact")
@click.argument("url")
@click.option("--path", "path", required=True,
              help="Directory or file to package; '-' reads one YAML stream from stdin.")
@click.option("--source", default=None, help="Source address (default: Git remote or"
              " GitHub Actions repository).")
@click.option("--revision", default=None, help="Source revision, e.g. main@sha1:<commit>"
              " (default: from Git or GitHub Actions).")
@click.option("--annotation", "-a", "annotations", multiple=True, metavar="KEY=VALUE",
              help="Manifest annotation (repeatable).")
@with_ignore
@click.option("--reproducible", is_flag=True,
              help="Fixed created time (1970-01-01T00:00:00Z): same content, same digest.")
@click.option("--diff-tag", default=None,
              help="Push only when the content differs from this tag.")
@click.option("--render", type=click.Choice(["none", "kustomize", "helm"]), default="none",
              show_default=True, help="Render before packaging.")
@click.option("--values", "values", multiple=True, type=click.Path(exists=True),
              help="Helm values file (repeatable, with --render helm).")
@click.option("--release-name", default=None, help="Helm release name (--render helm).")
@click.option("--namespace", default=None, help="Namespace for helm template.")
@click.option("--output", "-o", "fmt", type=click.Choice(["json", "yaml"]), default=None,
              help="Print the result as json or yaml.")
@registry_options
def push_artifact_cmd(url: str, path: str, source: str | None, revision: str | None,
                      annotations: tuple[str, ...], ignore_paths: str | None,
                      add_ignore_paths: tuple[str, ...], reproducible: bool,
                      diff_tag: str | None, render: str, values: tuple[str, ...],
                      release_name: str | None, namespace: str | None, fmt: str | None,
                      **kw: Any) -> None:
    """Package PATH and push it to URL (oci://host/repo:tag)."""
    import tempfile

    from ocigitops.artifact import Metadata
    from publisher.artifacts import push_artifact
    from publisher.gitinfo import detect

    ref = _parse_ref(url)
    if not ref.tag:
        raise UsageError(f"{url}: a tag is required, e.g. {url}:latest")
    origin = detect(Path(path) if path != "-" else Path.cwd())
    meta = Metadata(source=source or origin.source, revision=revision or origin.revision,
                    annotations=_parse_annotations(annotations))
    ignore = _ignore_list(ignore_paths, add_ignore_paths)
    with tempfile.TemporaryDirectory(prefix="ocigitops-render-") as tmp:
        content: str | Path = path
        if render != "none":
            if path == "-":
                raise UsageError("--render needs --path to be a directory")
            from publisher.render import render as do_render

            out = Path(tmp) / "rendered"
            out.mkdir()
            files = do_render(Path(path), render, out,  # type: ignore[arg-type]
                              values=[Path(v) for v in values], release_name=release_name,
                              namespace=namespace)
            if not fmt:
                _info(f"rendered {len(files)} file(s) with {render}")
            content = out
        elif values or release_name:
            raise UsageError("--values and --release-name need --render helm")

        async def go() -> Any:
            async with make_client(**_client_kwargs(kw)) as client:
                return await push_artifact(client, ref, content, meta, ignore=ignore,
                                           reproducible=reproducible, diff_tag=diff_tag,
                                           progress=_progress_factory(not fmt))

        result = _run(go())
    if fmt:
        _emit(result.to_json(), fmt)
    elif not result.pushed:
        _info(result.message)
        click.echo(f"{result.url}@{result.digest}")
    else:
        _info(f"artifact pushed to {result.url}")
        click.echo(f"{ref.repo_only().url()}@{result.digest}")


@pull.command("artifact")
@click.argument("url")
@click.option("--output", "-o", "output", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory to extract the content into (replaced atomically).")
@click.option("--layer-selector", default=None, metavar="MEDIATYPE",
              help="Media type of the layer to extract (default: the Flux content layer).")
@click.option("--max-size", type=int, default=None,
              help="Refuse archives that expand to more bytes than this.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@registry_options
def pull_artifact_cmd(url: str, output: Path, layer_selector: str | None,
                      max_size: int | None, as_json: bool, **kw: Any) -> None:
    """Pull the artifact at URL and extract it into --output."""
    from ocigitops.extract import Limits
    from ocigitops.pull import pull_artifact

    ref = _parse_ref(url)
    if not ref.tag and not ref.digest:
        ref = ref.with_tag("latest")
    limits = Limits(max_total=max_size) if max_size else Limits()

    async def go() -> Any:
        async with make_client(**_client_kwargs(kw)) as client:
            return await pull_artifact(client, ref, output, layer_selector=layer_selector,
                                       limits=limits, progress=_progress_factory(not as_json))

    result = _run(go())
    if as_json:
        _emit(result.to_json(), "json")
        return
    _info(f"source: {result.metadata.source}")
    _info(f"revision: {result.metadata.revision}")
    click.echo(f"extracted {result.files} file(s) from {ref.repo_only().url()}@{result.digest}"
               f" to {output}")


@tag.command("artifact")
@click.argument("url")
@click.option("--tag", "tags", multiple=True, required=True, help="Tag to add (repeatable).")
@registry_options
def tag_artifact_cmd(url: str, tags: tuple[str, ...], **kw: Any) -> None:
    """Add tags to the artifact at URL."""
    from publisher.artifacts import tag_artifact

    ref = _parse_ref(url)

    async def go() -> str:
        async with make_client(**_client_kwargs(kw)) as client:
            return await tag_artifact(client, ref, tags)

    digest = _run(go())
    for t in tags:
        click.echo(f"{ref.with_tag(t).url()}@{digest}")


@list_.command("artifacts")
@click.argument("url")
@click.option("--filter-semver", default=None, help="Semver range, e.g. '>=1.0.0 <2.0.0'.")
@click.option("--filter-regex", default=None, help="Regular expression on tags.")
@click.option("--output", "-o", "fmt", type=click.Choice(["table", "json", "yaml"]),
              default="table", show_default=True)
@registry_options
def list_artifacts_cmd(url: str, filter_semver: str | None, filter_regex: str | None,
                       fmt: str, **kw: Any) -> None:
    """List the artifacts in the repository URL (newest tag first)."""
    from publisher.artifacts import list_artifacts

    ref = _parse_ref(url).repo_only()

    async def go() -> Any:
        async with make_client(**_client_kwargs(kw)) as client:
            return await list_artifacts(client, ref, semver_range=filter_semver,
                                        regex=filter_regex)

    rows = _run(go())
    if fmt != "table":
        _emit([r.to_json() for r in rows], fmt)
        return
    table = [("ARTIFACT", "DIGEST", "SOURCE", "REVISION")]
    table += [(r.url, r.digest, r.source, r.revision) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@diff.command("artifact")
@click.argument("url")
@click.option("--path", required=True, help="Local directory or file to compare.")
@with_ignore
@registry_options
def diff_artifact_cmd(url: str, path: str, ignore_paths: str | None,
                      add_ignore_paths: tuple[str, ...], **kw: Any) -> None:
    """Compare PATH with the artifact at URL; exit 1 when they differ."""
    from publisher.artifacts import diff_artifact

    ref = _parse_ref(url)
    ignore = _ignore_list(ignore_paths, add_ignore_paths)

    async def go() -> Any:
        async with make_client(**_client_kwargs(kw)) as client:
            return await diff_artifact(client, ref, path, ignore)

    result = _run(go())
    if result.same:
        click.echo(f"no changes: {path} matches {url}")
        return
    click.echo(f"changed: {path} differs from {url} (local content {result.local_diff_id},"
               f" remote {result.remote_diff_id})")
    sys.exit(1)


@build.command("artifact")
@click.option("--path", required=True, help="Directory or file to package ('-' for stdin).")
@click.option("--output", "-o", "output", default="artifact.tgz", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path))
@with_ignore
def build_artifact_cmd(path: str, output: Path, ignore_paths: str | None,
                       add_ignore_paths: tuple[str, ...]) -> None:
    """Build the artifact tarball of PATH into --output."""
    from publisher.artifacts import build_artifact_file

    layer = build_artifact_file(path, output, _ignore_list(ignore_paths, add_ignore_paths))
    click.echo(f"artifact created at {layer.path} ({layer.digest}, {layer.size} bytes)")


@main.group()
def registry() -> None:
    """The embedded OCI registry."""


@registry.command("serve")
@click.option("--storage", type=click.Path(file_okay=False, path_type=Path),
              default=Path("registry-data"), show_default=True,
              help="Directory holding the registry's content (OCI image layouts).")
@click.option("--address", default="127.0.0.1:5000", show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def registry_serve_cmd(storage: Path, address: str, verbose: bool) -> None:
    """Serve an OCI distribution registry (with the referrers API) from --storage."""
    import logging

    from ocigitops.regserver import serve

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    storage.mkdir(parents=True, exist_ok=True)
    serve(storage, address)


@registry.command("stop")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Quickstart state directory (default ~/.cache/ocigitops/quickstart).")
def registry_stop_cmd(state_dir: Path | None) -> None:
    """Stop the registry the quickstart started in the background."""
    from publisher.quickstart import default_state_dir, stop_registry

    stopped = stop_registry(state_dir or default_state_dir())
    click.echo("registry stopped" if stopped else "no quickstart registry is running")


@main.command()
@click.option("--address", default="127.0.0.1:5000", show_default=True,
              help="Where the embedded registry listens (a free port is used if busy).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Registry storage and logs (default ~/.cache/ocigitops/quickstart).")
@click.option("--examples", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="The examples directory (default: the one shipped).")
def quickstart(address: str, state_dir: Path | None, examples: Path | None) -> None:
    """Start a local registry, package the examples, push and pull them back."""
    from publisher.quickstart import default_state_dir, run_quickstart

    run_quickstart(address, state_dir or default_state_dir(), examples, say=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
