"""The ``ocigitops`` command line: a thin shell over library functions.

Heavy modules (httpx, rich, yaml) are imported inside commands so that start-up, and
``ocigitops --version`` in particular, stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ocigitops.errors import OcigitopsError, UsageError
from ocigitops.version import __version__

# httpx imports its own command line client (rich, click, pygments: ~50 ms) when it is
# imported, and falls back to a stub when that import fails. We never use it, so it is
# kept out before anything of ours imports httpx: every command starts faster.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    from ocigitops.reference import Reference
    from ocigitops.registry import RegistryClient

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
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=300.0,
                     show_default=True, help="Time limit in seconds for the whole registry"
                     " operation (every request and read in it), as Flux's --timeout."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


sign_options = [
    click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 default=None, help="cosign private key (cosign.key), or the notation key."),
    click.option("--keyless", is_flag=True, help="Sigstore keyless signing with the ambient"
                 " OIDC token (GitHub Actions id-token: write)."),
    click.option("--identity-token", default=None, envvar="SIGSTORE_ID_TOKEN",
                 help="OIDC token for --keyless (default: detected from the environment)."),
    click.option("--notation", "notation", is_flag=True, help="Sign with notation."),
    click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 default=None, help="Certificate chain PEM (leaf first) for --notation."),
    click.option("--format", "sig_format", type=click.Choice(["bundle", "legacy"]),
                 default="bundle", show_default=True,
                 help="cosign storage: sigstore bundle referrer (v3) or legacy .sig tag (v2)."),
    click.option("--envelope", type=click.Choice(["jws", "cose"]), default="jws",
                 show_default=True, help="notation envelope format."),
]


def with_sign_options(f: F) -> F:
    """Add the signing flags."""
    for opt in reversed(sign_options):
        f = opt(f)
    return f


def make_client(creds: str | None, insecure_registry: bool, docker_config: Path | None,
                ca_file: str | None, cert_file: str | None, key_file: str | None,
                timeout: float) -> RegistryClient:
    """Build a registry client from the common flags."""
    from ocigitops.registry import client_from_flags

    return client_from_flags(creds=creds, insecure=insecure_registry,
                             docker_config=docker_config, ca_file=ca_file,
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
@click.option("--sign", "do_sign", is_flag=True,
              help="Sign the pushed digest right away (with the signing flags below).")
@with_sign_options
@registry_options
def push_artifact_cmd(url: str, path: str, source: str | None, revision: str | None,
                      annotations: tuple[str, ...], ignore_paths: str | None,
                      add_ignore_paths: tuple[str, ...], reproducible: bool,
                      diff_tag: str | None, render: str, values: tuple[str, ...],
                      release_name: str | None, namespace: str | None, fmt: str | None,
                      do_sign: bool, key: Path | None, keyless: bool,
                      identity_token: str | None, notation: bool, cert: Path | None,
                      sig_format: str, envelope: str, **kw: Any) -> None:
    """Package PATH and push it to URL (oci://host/repo:tag)."""
    import tempfile

    from ocigitops.artifact import Metadata
    from ocigitops.publisher.artifacts import push_artifact
    from ocigitops.publisher.gitinfo import detect

    ref = _parse_ref(url)
    if not ref.tag:
        raise UsageError(f"{url}: a tag is required, e.g. {url}:latest")
    origin = detect(Path(path) if path != "-" else Path.cwd())
    meta = Metadata(source=source or origin.source, revision=revision or origin.revision,
                    annotations=_parse_annotations(annotations))
    ignore = _ignore_list(ignore_paths, add_ignore_paths)
    signer = _signer(key=key, keyless=keyless, notation=notation, cert=cert, fmt=sig_format,
                     envelope=envelope, annotations={}, identity_token=identity_token) \
        if do_sign else None
    with tempfile.TemporaryDirectory(prefix="ocigitops-render-") as tmp:
        content: str | Path = path
        if render != "none":
            if path == "-":
                raise UsageError("--render needs --path to be a directory")
            from ocigitops.render import render as do_render

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
                pushed = await push_artifact(client, ref, content, meta, ignore=ignore,
                                             reproducible=reproducible, diff_tag=diff_tag,
                                             progress=_progress_factory(not fmt))
                signed = None
                if signer is not None:
                    # Sign by digest: the tag may move, the signature must not.
                    m = await client.head_manifest(ref.with_digest(pushed.digest))
                    signed = await signer(client, ref.repo_only(), pushed.digest,
                                          m.media_type, m.size)
                return pushed, signed

        result, signed = _run(go())
        if signed is not None and not fmt:
            _info(f"signed {result.digest} ({signed.kind}): {signed.location}")
    if fmt:
        doc = result.to_json()
        if signed is not None:
            doc["signature"] = signed.to_json()
        _emit(doc, fmt)
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
    limits = Limits(max_total=max_size) if max_size is not None else Limits()

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
    from ocigitops.publisher.artifacts import tag_artifact

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
    from ocigitops.publisher.artifacts import list_artifacts

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
    from ocigitops.publisher.artifacts import diff_artifact

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
    from ocigitops.publisher.artifacts import build_artifact_file

    layer = build_artifact_file(path, output, _ignore_list(ignore_paths, add_ignore_paths))
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


def _password(confirm: bool) -> bytes:
    """COSIGN_PASSWORD, or a prompt on the terminal (as cosign does)."""
    import os

    env = os.environ.get("COSIGN_PASSWORD")
    if env is not None:
        return env.encode()
    if not sys.stdin.isatty():
        raise UsageError("set COSIGN_PASSWORD (no terminal to prompt for the key password)")
    pw: str = click.prompt("Enter password for private key", hide_input=True,
                           confirmation_prompt=confirm, default="", show_default=False)
    return pw.encode()


@generate.command("key-pair")
@click.option("--output-key-prefix", default="cosign", show_default=True,
              help="Write PREFIX.key and PREFIX.pub.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def generate_key_pair_cmd(output_key_prefix: str, force: bool) -> None:
    """Write a cosign-compatible encrypted key pair (cosign.key, cosign.pub) here."""
    from ocigitops.verifier.keys import generate_key_pair

    key_path, pub_path = Path(f"{output_key_prefix}.key"), Path(f"{output_key_prefix}.pub")
    for p in (key_path, pub_path):
        if p.exists() and not force:
            raise UsageError(f"{p} exists: pass --force to overwrite")
    password = _password(confirm=True)
    pair = generate_key_pair(password)
    key_path.write_bytes(pair.private_pem)
    key_path.chmod(0o600)
    pub_path.write_bytes(pair.public_pem)
    click.echo(f"Private key written to {key_path}")
    click.echo(f"Public key written to {pub_path}")


async def _resolve(client: RegistryClient, ref: Reference) -> tuple[str, str, int]:
    """(digest, media type, size) of the manifest ``ref`` names, from its verified bytes."""
    m = await client.resolve(ref)
    return m.digest, m.media_type, len(m.data)


def _signer(*, key: Path | None, keyless: bool, notation: bool, cert: Path | None, fmt: str,
            envelope: str, annotations: dict[str, str], identity_token: str | None) -> Any:
    """The signing coroutine for the signing flags (ocigitops.publisher.signing)."""
    from ocigitops.publisher.signing import SignOptions, load_signer

    return load_signer(SignOptions(key=key, keyless=keyless, notation=notation, cert=cert,
                                   fmt=fmt,  # type: ignore[arg-type]
                                   envelope=envelope,  # type: ignore[arg-type]
                                   annotations=annotations, identity_token=identity_token),
                       password=lambda: _password(confirm=False))


@sign.command("artifact")
@click.argument("url")
@with_sign_options
@click.option("--annotation", "-a", "annotations", multiple=True, metavar="KEY=VALUE",
              help="Signed annotation (cosign -a / notation user metadata).")
@click.option("--output", "-o", "fmt", type=click.Choice(["json", "yaml"]), default=None)
@registry_options
def sign_artifact_cmd(url: str, key: Path | None, keyless: bool, identity_token: str | None,
                      notation: bool, cert: Path | None, sig_format: str, envelope: str,
                      annotations: tuple[str, ...], fmt: str | None, **kw: Any) -> None:
    """Sign the artifact at URL (by digest)."""
    ref = _parse_ref(url)
    signer = _signer(key=key, keyless=keyless, notation=notation, cert=cert, fmt=sig_format,
                     envelope=envelope, annotations=_parse_annotations(annotations),
                     identity_token=identity_token)

    async def go() -> Any:
        async with make_client(**_client_kwargs(kw)) as client:
            digest, media_type, size = await _resolve(client, ref)
            return await signer(client, ref.repo_only(), digest, media_type, size)

    result = _run(go())
    if fmt:
        _emit(result.to_json(), fmt)
    else:
        click.echo(f"signed {ref.repo_only().url()}@{result.subject} ({result.kind}):"
                   f" {result.location}")


@verify.command("artifact")
@click.argument("url")
@click.option("--key", "keys", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="cosign public key (repeatable: any of them).")
@click.option("--certificate-identity", default=None, help="Keyless: exact signer identity.")
@click.option("--certificate-identity-regexp", default=None,
              help="Keyless: signer identity regular expression.")
@click.option("--certificate-oidc-issuer", default=None, help="Keyless: exact OIDC issuer.")
@click.option("--certificate-oidc-issuer-regexp", default=None,
              help="Keyless: OIDC issuer regular expression.")
@click.option("--certificate-github-workflow-repository", default=None)
@click.option("--certificate-github-workflow-ref", default=None)
@click.option("--certificate-github-workflow-trigger", default=None)
@click.option("--certificate-github-workflow-sha", default=None)
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
def verify_artifact_cmd(url: str, keys: tuple[Path, ...], certificate_identity: str | None,
                        certificate_identity_regexp: str | None,
                        certificate_oidc_issuer: str | None,
                        certificate_oidc_issuer_regexp: str | None,
                        certificate_github_workflow_repository: str | None,
                        certificate_github_workflow_ref: str | None,
                        certificate_github_workflow_trigger: str | None,
                        certificate_github_workflow_sha: str | None,
                        trust_policy: Path | None, trust_store: Path | None,
                        policy_file: Path | None, rule: str | None,
                        trusted_root: Path | None,
                        annotations: tuple[str, ...], require_tlog: bool, fmt: str,
                        **kw: Any) -> None:
    """Verify the signatures of the artifact at URL; exit 0 only when the policy passes."""
    from ocigitops.verifier.verify import load_policy_file, policy_from_flags, verify_artifact

    ref = _parse_ref(url)
    root = None
    if trusted_root:
        from ocigitops.verifier.bundles import load_trusted_root

        root = load_trusted_root(trusted_root)
    github = {k: v for k, v in {
        "repository": certificate_github_workflow_repository,
        "ref": certificate_github_workflow_ref,
        "trigger": certificate_github_workflow_trigger,
        "sha": certificate_github_workflow_sha}.items() if v}
    if policy_file:
        if rule is not None:
            raise UsageError("--require applies to flag authorities; with --policy, write the"
                             " rule in the policy file (rule: any, all or a number)")
        policy = load_policy_file(policy_file, trusted_root=root)
    else:
        policy = policy_from_flags(
            keys=keys, identity=certificate_identity,
            identity_regexp=certificate_identity_regexp, issuer=certificate_oidc_issuer,
            issuer_regexp=certificate_oidc_issuer_regexp, github=github or None,
            trust_policy=trust_policy, trust_store=trust_store,
            annotations=_parse_annotations(annotations), require_tlog=require_tlog,
            trusted_root=root, rule="any" if rule is None else rule)

    async def go() -> Any:
        async with make_client(**_client_kwargs(kw)) as client:
            return await verify_artifact(client, ref, policy)

    outcome = _run(go())
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


def _kinds(kind: str) -> str:
    return {"oci": "OCIRepository", "kustomization": "Kustomization",
            "kustomizations": "Kustomization"}[kind]


async def _with_dyn(kubeconfig: str | None, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from ocigitops.puller.kube import DynamicClient

    dyn = DynamicClient.from_kubeconfig(kubeconfig)
    try:
        return await fn(dyn)
    finally:
        await dyn.aclose()


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
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def controller_run_cmd(kubeconfig: str | None, concurrent: int, metrics_addr: str,
                       health_addr: str, leader_elect: bool, leader_election_namespace: str,
                       watch_namespace: str | None, watch_label_selector: str | None,
                       no_cross_namespace_refs: bool, strict_substitution: bool,
                       cache_dir: str | None, log_level: str) -> None:
    """Reconcile OCIRepository and Kustomization objects until SIGTERM."""
    import logging
    import os

    if cache_dir is None:
        xdg = os.environ.get("XDG_CACHE_HOME")
        cache_dir = f"{xdg}/ocigitops" if xdg else "/tmp/ocigitops-cache"

    from ocigitops.puller.manager import Options, run, setup_logging

    setup_logging(getattr(logging, log_level.upper()))
    _run(run(Options(kubeconfig=kubeconfig, concurrent=concurrent, metrics_addr=metrics_addr,
                     health_addr=health_addr, leader_elect=leader_elect,
                     leader_namespace=leader_election_namespace,
                     watch_namespace=watch_namespace,
                     watch_label_selector=watch_label_selector,
                     no_cross_namespace_refs=no_cross_namespace_refs,
                     strict_substitution=strict_substitution, cache_dir=cache_dir)))


@main.group(name="get")
def get_() -> None:
    """Show objects and their status."""


def _print_rows(rows: list[Any], all_namespaces: bool) -> None:
    head = ["NAME", "REVISION", "SUSPENDED", "READY", "MESSAGE"]
    table = [(["NAMESPACE"] if all_namespaces else []) + head]
    for r in rows:
        table.append(([r.namespace] if all_namespaces else [])
                     + [r.name, r.revision, str(r.suspended), r.ready, r.message])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@get_.group("sources")
def get_sources() -> None:
    """Sources."""


def _get_cmd(kind: str) -> Callable[..., None]:
    @kube_options
    @click.option("--all-namespaces", "-A", is_flag=True)
    def cmd(kubeconfig: str | None, namespace: str, all_namespaces: bool) -> None:
        from ocigitops.puller.ops import list_objects

        rows = _run(_with_dyn(kubeconfig, lambda d: list_objects(
            d, kind, None if all_namespaces else namespace)))
        _print_rows(rows, all_namespaces)

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
    from ocigitops.puller.ops import request_reconcile

    obj_kind, name = _parse_target(kind, args)

    async def go(dyn: Any) -> Any:
        if with_source and obj_kind == "Kustomization":
            from ocigitops.puller.api.meta import API_VERSION

            ks = await dyn.get(API_VERSION, "Kustomization", name, namespace)
            ref = ((ks or {}).get("spec") or {}).get("sourceRef") or {}
            if ref.get("name"):
                await request_reconcile(dyn, ref.get("kind", "OCIRepository"), ref["name"],
                                        ref.get("namespace") or namespace, wait=timeout)
        return await request_reconcile(dyn, obj_kind, name, namespace, wait=timeout)

    row = _run(_with_dyn(kubeconfig, go))
    click.echo(f"{obj_kind} {namespace}/{name} reconciled: {row.message}")


def _parse_target(kind: str, args: tuple[str, ...]) -> tuple[str, str]:
    if kind == "source":
        if len(args) != 2 or args[0] != "oci":
            raise UsageError("usage: source oci NAME")
        return "OCIRepository", args[1]
    if len(args) != 1:
        raise UsageError("usage: kustomization NAME")
    return "Kustomization", args[0]


def _suspend_cmd(suspend: bool) -> Callable[..., None]:
    @click.argument("kind", type=click.Choice(["source", "kustomization"]))
    @click.argument("args", nargs=-1, required=True)
    @kube_options
    def cmd(kind: str, args: tuple[str, ...], kubeconfig: str | None, namespace: str) -> None:
        from ocigitops.puller.ops import set_suspend

        obj_kind, name = _parse_target(kind, args)
        _run(_with_dyn(kubeconfig, lambda d: set_suspend(d, obj_kind, name, namespace,
                                                         suspend)))
        click.echo(f"{obj_kind} {namespace}/{name} {'suspended' if suspend else 'resumed'}")

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
    from ocigitops.publisher.quickstart import default_state_dir, stop_registry

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
    from ocigitops.publisher.quickstart import default_state_dir, run_quickstart

    run_quickstart(address, state_dir or default_state_dir(), examples, say=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
