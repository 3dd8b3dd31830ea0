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
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from ocigitops.errors import OcigitopsError
from ocigitops.version import __version__

# httpx imports its own command line client (rich, click, pygments: ~50 ms) when it is
# imported, and falls back to a stub when that import fails. We never use it, so it is
# kept out before anything of ours imports httpx: every command starts faster.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    from ocigitops.options import RegistryOptions
    from ocigitops.publisher.signing import SignOptions

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
    """A Go duration (``30s``, ``5m``, ``1h30m``), as Flux's flags take, in seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float | int):
            return float(value)
        from ocigitops.duration import parse_duration

        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


DURATION = _Duration()


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
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=300.0,
                     show_default=True, help="Time limit in seconds for the whole registry"
                     " operation (every request and read in it), as Flux's --timeout."),
    ]

    def convert(kw: dict[str, Any]) -> None:
        from ocigitops.options import RegistryOptions

        kw["registry"] = RegistryOptions(
            creds=kw.pop("creds"), insecure=kw.pop("insecure_registry"),
            docker_config=kw.pop("docker_config"), ca_file=kw.pop("ca_file"),
            cert_file=kw.pop("cert_file"), key_file=kw.pop("key_file"),
            timeout=kw.pop("timeout"))

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
@click.option("--values", "values", multiple=True,
              type=click.Path(exists=True, path_type=Path),
              help="Helm values file (repeatable, with --render helm).")
@click.option("--release-name", default=None, help="Helm release name (--render helm).")
@click.option("--namespace", default=None, help="Namespace for helm template.")
@click.option("--output", "-o", "fmt", type=click.Choice(["json", "yaml"]), default=None,
              help="Print the result as json or yaml.")
@click.option("--sign", "do_sign", is_flag=True,
              help="Sign the pushed digest right away (with the signing flags below).")
@with_sign_options
@registry_options
def push_artifact_cmd(fmt: str | None, do_sign: bool, signing: SignOptions,
                      registry: RegistryOptions, **request: Any) -> None:
    """Package PATH and push it to URL (oci://host/repo:tag)."""
    from ocigitops.publisher.publish import PushRequest, publish

    result = _run(publish(PushRequest(**request, sign=signing if do_sign else None), registry,
                          prompt=_prompt, progress=_progress_factory(not fmt),
                          say=None if fmt else _info))
    if fmt:
        _emit(result.to_json(), fmt)
    elif not result.push.pushed:
        _info(result.push.message)
        click.echo(f"{result.push.url}@{result.digest}")
    else:
        _info(f"artifact pushed to {result.push.url}")
        click.echo(f"{result.repository_url}@{result.digest}")


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
                      max_size: int | None, as_json: bool, registry: RegistryOptions) -> None:
    """Pull the artifact at URL and extract it into --output."""
    from ocigitops.pull import pull as do_pull

    result = _run(do_pull(url, output, registry, layer_selector=layer_selector,
                          max_size=max_size, progress=_progress_factory(not as_json)))
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
@registry_options
def tag_artifact_cmd(url: str, tags: tuple[str, ...], registry: RegistryOptions) -> None:
    """Add tags to the artifact at URL."""
    from ocigitops.publisher.publish import tag as do_tag

    for line in _run(do_tag(url, tags, registry)).lines():
        click.echo(line)


@list_.command("artifacts")
@click.argument("url")
@click.option("--filter-semver", default=None, help="Semver range, e.g. '>=1.0.0 <2.0.0'.")
@click.option("--filter-regex", default=None, help="Regular expression on tags.")
@click.option("--output", "-o", "fmt", type=click.Choice(["table", "json", "yaml"]),
              default="table", show_default=True)
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
@click.option("--path", required=True, help="Local directory or file to compare.")
@with_ignore
@registry_options
def diff_artifact_cmd(url: str, path: str, ignore: list[str],
                      registry: RegistryOptions) -> None:
    """Compare PATH with the artifact at URL; exit 1 when they differ."""
    from ocigitops.publisher.publish import diff as do_diff

    result = _run(do_diff(url, path, registry, ignore))
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
def build_artifact_cmd(path: str, output: Path, ignore: list[str]) -> None:
    """Build the artifact tarball of PATH into --output."""
    from ocigitops.publisher.artifacts import build_artifact_file

    layer = build_artifact_file(path, output, ignore)
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
@click.option("--output", "-o", "fmt", type=click.Choice(["json", "yaml"]), default=None)
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
              default=None)
@click.option("--certificate-github-workflow-ref", "github_workflow_ref", default=None)
@click.option("--certificate-github-workflow-trigger", "github_workflow_trigger",
              default=None)
@click.option("--certificate-github-workflow-sha", "github_workflow_sha", default=None)
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
@click.option("--output", "-o", "fmt", type=click.Choice(["text", "json"]), default="text")
@registry_options
def verify_artifact_cmd(fmt: str, registry: RegistryOptions, **request: Any) -> None:
    """Verify the signatures of the artifact at URL; exit 0 only when the policy passes."""
    from ocigitops.verifier.request import VerifyRequest
    from ocigitops.verifier.request import verify as do_verify

    outcome = _run(do_verify(VerifyRequest(**request), registry))
    if fmt == "json":
        _emit(outcome.to_json(), "json")
    else:
        click.echo(outcome.human())
    if not outcome.passed:
        sys.exit(1)


# -- the puller -------------------------------------------------------------------------

def kube_options(f: F) -> F:
    """``--kubeconfig`` and ``--namespace``."""
    f = click.option("--namespace", "-n", default="default", show_default=True,
                     help="Namespace of the object.")(f)
    return click.option("--kubeconfig", envvar="KUBECONFIG", default=None,
                        help="Kubeconfig file (default: $KUBECONFIG or in-cluster).")(f)


@main.group()
def controller() -> None:
    """The in-cluster controller."""


@controller.command("run")
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None)
@click.option("--concurrent", type=int, default=4, show_default=True,
              help="Workers per kind.")
@click.option("--metrics-addr", default=":8080", show_default=True)
@click.option("--health-addr", default=":9440", show_default=True)
@click.option("--leader-elect", is_flag=True, help="Lease leader election.")
@click.option("--leader-election-namespace", envvar="POD_NAMESPACE",
              default="ocigitops-system", show_default=True)
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
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def controller_run_cmd(kubeconfig: str | None, concurrent: int, metrics_addr: str,
                       health_addr: str, leader_elect: bool, leader_election_namespace: str,
                       watch_namespace: str | None, watch_label_selector: str | None,
                       no_cross_namespace_refs: bool, strict_substitution: bool,
                       cache_dir: str | None, controllers: str,
                       requeue_dependency: float, log_level: str) -> None:
    """Reconcile the selected kinds (default: all) until SIGTERM."""
    from ocigitops.puller.manager import Options, serve

    serve(Options(kubeconfig=kubeconfig, concurrent=concurrent, metrics_addr=metrics_addr,
                  health_addr=health_addr, leader_elect=leader_elect,
                  leader_namespace=leader_election_namespace,
                  watch_namespace=watch_namespace, watch_label_selector=watch_label_selector,
                  no_cross_namespace_refs=no_cross_namespace_refs,
                  strict_substitution=strict_substitution, cache_dir=cache_dir,
                  controllers=tuple(controllers.split(",")),
                  requeue_dependency=requeue_dependency), log_level)


@main.group(name="get")
def get_() -> None:
    """Show objects and their status."""


@get_.group("sources")
def get_sources() -> None:
    """Sources."""


def _get_cmd(kind: str) -> Callable[..., None]:
    @kube_options
    @click.option("--all-namespaces", "-A", is_flag=True)
    def cmd(kubeconfig: str | None, namespace: str, all_namespaces: bool) -> None:
        from ocigitops.puller.ops import get_objects, objects_table

        rows = _run(get_objects(kubeconfig, kind, None if all_namespaces else namespace))
        click.echo(objects_table(rows, all_namespaces))

    return cmd


get_sources.command("oci", help="OCIRepository sources.")(_get_cmd("OCIRepository"))
get_.command("kustomizations", help="Kustomizations.")(_get_cmd("Kustomization"))


@main.command()
@click.argument("kind", type=click.Choice(["source", "kustomization"]))
@click.argument("args", nargs=-1, required=True)
@click.option("--with-source", is_flag=True, help="Reconcile the Kustomization's source first.")
@click.option("--timeout", type=float, default=120.0, show_default=True)
@kube_options
def reconcile(kind: str, args: tuple[str, ...], with_source: bool, timeout: float,
              kubeconfig: str | None, namespace: str) -> None:
    """Ask the controller to reconcile now: `reconcile source oci NAME`,
    `reconcile kustomization NAME [--with-source]`."""
    from ocigitops.puller.ops import parse_target
    from ocigitops.puller.ops import reconcile as do_reconcile

    result = _run(do_reconcile(kubeconfig, parse_target(kind, args), namespace,
                               with_source=with_source, wait=timeout))
    click.echo(result.summary())


def _suspend_cmd(suspend: bool) -> Callable[..., None]:
    @click.argument("kind", type=click.Choice(["source", "kustomization"]))
    @click.argument("args", nargs=-1, required=True)
    @kube_options
    def cmd(kind: str, args: tuple[str, ...], kubeconfig: str | None, namespace: str) -> None:
        from ocigitops.puller.ops import parse_target
        from ocigitops.puller.ops import suspend as do_suspend

        click.echo(_run(do_suspend(kubeconfig, parse_target(kind, args), namespace,
                                   suspend)).summary())

    return cmd


main.command("suspend", help="Suspend reconciliation: `suspend kustomization NAME`.")(
    _suspend_cmd(True))
main.command("resume", help="Resume reconciliation: `resume source oci NAME`.")(
    _suspend_cmd(False))


@main.group()
def dev() -> None:
    """Developer environments."""


@dev.group()
def cluster() -> None:
    """A local Kubernetes control plane (etcd, kube-apiserver, controller-manager,
    scheduler, kwok nodes) on 127.0.0.1."""


@cluster.command("up")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--kubeconfig-out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the admin kubeconfig here.")
def cluster_up_cmd(state_dir: Path | None, kubeconfig_out: Path | None) -> None:
    """Start it (or reuse a running one); the last line is the admin kubeconfig path."""
    from ocigitops.puller.devcluster import DEFAULT_STATE_DIR, main_up

    main_up(state_dir or DEFAULT_STATE_DIR, kubeconfig_out)


@cluster.command("down")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
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
    from ocigitops.publisher.quickstart import stop_registry

    stopped = stop_registry(state_dir)
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
    from ocigitops.publisher.quickstart import run_quickstart

    run_quickstart(address, state_dir, examples, say=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
