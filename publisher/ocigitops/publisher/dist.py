"""The distribution artifact: ``deploy/`` (CRDs, RBAC, the controller) as one Flux-format
OCI artifact, with the controller image pinned by digest, pushed and signed like any
``push artifact``.

What is pushed is a copy of the deploy tree whose ``kustomization.yaml`` gains an
``images:`` entry naming the controller image by digest, so ``kubectl apply -k`` of the
pulled artifact (or a Kustomization of it, ours or Flux's) runs exactly the image that was
released; ``deploy/`` itself is never changed and stays ``kubectl apply -k``-able with its
tag. The push itself is :func:`ocigitops.publisher.publish.publish` (limits, signing), with
a fixed created time: the same tree and image always give the same artifact digest.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ocigitops.errors import UsageError
from ocigitops.options import Annotations, RegistryOptions, parse_annotations
from ocigitops.publisher.artifacts import ProgressFactory
from ocigitops.publisher.gitinfo import detect
from ocigitops.publisher.publish import PublishResult, PushRequest, Say, publish
from ocigitops.publisher.signing import PasswordPrompt, SignOptions
from ocigitops.reference import parse_reference
from ocigitops.version import __version__

#: The Deployment and container whose image the artifact pins.
CONTROLLER_DEPLOYMENT = "ocigitops-controller"
CONTROLLER_CONTAINER = "controller"
#: Manifest annotation naming the pinned controller image (``name@sha256:...``), so a
#: reader (the operator, a person with ``crane manifest``) sees it without pulling.
ANN_IMAGE = "dev.ocigitops.dist.image"
#: The source annotation when neither --source nor a Git remote names one (a pip
#: install, a checkout without remote): what the artifact is, not where it came from.
DEFAULT_SOURCE = "ocigitops"
#: Where a pip install puts deploy/ (pyproject's data-files), under ``sys.prefix``.
INSTALLED_DEPLOY = Path("share") / "ocigitops" / "deploy"
#: Bounds on what is read of the deploy tree: it is ours, but --path may name any folder.
_MAX_FILES = 500
_MAX_FILE_BYTES = 4 * 1024 * 1024
_KUSTOMIZATION = "kustomization.yaml"


@dataclass(frozen=True)
class DistRequest:
    """What ``dist push`` is asked to do; every field is one of its flags."""

    #: ``oci://host/repo:version``; the tag is required.
    url: str
    #: The controller image by digest: ``host/repo[:tag]@sha256:<hex>``.
    image: str
    #: The deploy tree; None: :func:`find_deploy_dir`.
    path: Path | None = None
    #: Default: the Git remote and ``branch@sha1:commit`` of the checkout holding the tree,
    #: else :data:`DEFAULT_SOURCE` and ``v<version>``.
    source: str | None = None
    revision: str | None = None
    annotations: Annotations = field(default_factory=dict)
    #: Sign the pushed digest with these options; None: do not sign.
    sign: SignOptions | None = None


@dataclass(frozen=True)
class PinnedImage:
    """The controller image as the artifact's kustomization names it."""

    #: ``host/repo`` as given (no tag, no digest): kustomize's ``newName``.
    name: str
    digest: str

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}"


def parse_image(text: str) -> PinnedImage:
    """``host/repo[:tag]@sha256:<hex>`` -> :class:`PinnedImage`; a reference without a
    digest is refused: a tag could move after the release."""
    raw = text.strip().removeprefix("oci://")
    ref = parse_reference(raw)
    if ref.digest is None:
        raise UsageError(f"--image {text}: pin the controller image by digest"
                         " (REGISTRY/REPO@sha256:...), as `make image` prints it")
    name = raw.partition("@")[0]
    if ref.tag:
        name = name[:-(len(ref.tag) + 1)]
    return PinnedImage(name=name, digest=ref.digest)


def find_deploy_dir() -> Path:
    """The deploy tree: the checkout's ``deploy/`` when ocigitops runs from one (an
    editable install), else the copy a pip install put in ``<prefix>/share/ocigitops``."""
    here = Path(__file__).resolve()
    candidates = [here.parents[3] / "deploy", Path(sys.prefix) / INSTALLED_DEPLOY]
    for candidate in candidates:
        if (candidate / _KUSTOMIZATION).is_file():
            return candidate
    raise UsageError("the deploy manifests are not installed here"
                     f" (looked in {', '.join(str(c) for c in candidates)}): pass --path DIR")


def _yaml_files(tree: Path) -> Iterator[Path]:
    count = 0
    for path in sorted(tree.rglob("*")):
        if path.is_symlink():
            raise UsageError(f"{path}: a symbolic link in the deploy tree; copy the file")
        if path.is_file():
            count += 1
            if count > _MAX_FILES:
                raise UsageError(f"{tree}: more than {_MAX_FILES} files; is this deploy/?")
            if path.stat().st_size > _MAX_FILE_BYTES:
                raise UsageError(f"{path}: over {_MAX_FILE_BYTES} bytes; is this deploy/?")
            yield path


def _load_all(path: Path) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e


def _controller_image(tree: Path, kustomization: Mapping[str, Any]) -> str:
    """The image the controller Deployment names, without tag or digest: the ``name`` of
    the kustomize ``images:`` entry that replaces it."""
    for entry in kustomization.get("resources") or []:
        path = tree / str(entry)
        if not path.is_file() or not path.resolve().is_relative_to(tree.resolve()):
            continue
        for doc in _load_all(path):
            if not (isinstance(doc, dict) and doc.get("kind") == "Deployment"
                    and (doc.get("metadata") or {}).get("name") == CONTROLLER_DEPLOYMENT):
                continue
            containers = (((doc.get("spec") or {}).get("template") or {}).get("spec")
                          or {}).get("containers") or []
            for c in containers:
                if isinstance(c, dict) and c.get("name") == CONTROLLER_CONTAINER:
                    image = str(c.get("image") or "")
                    name = image.partition("@")[0]
                    slash = name.rfind("/")
                    colon = name.rfind(":")
                    return name[:colon] if colon > slash else name
    raise UsageError(f"{tree}: no Deployment {CONTROLLER_DEPLOYMENT} with a container"
                     f" {CONTROLLER_CONTAINER} among the resources of its {_KUSTOMIZATION}")


def stage(tree: Path, image: PinnedImage, dest: Path) -> Path:
    """Copy the deploy ``tree`` into ``dest`` and pin the controller image there by
    digest (a kustomize ``images:`` entry); ``tree`` is not changed. Returns ``dest``."""
    top = tree / _KUSTOMIZATION
    if not top.is_file():
        raise UsageError(f"{tree}: no {_KUSTOMIZATION}; pass the deploy/ folder")
    docs = _load_all(top)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise UsageError(f"{top}: expected one kustomization document")
    kustomization: dict[str, Any] = docs[0]
    name = _controller_image(tree, kustomization)
    for path in _yaml_files(tree):
        target = dest / path.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    images = [i for i in kustomization.get("images") or []
              if not (isinstance(i, dict) and i.get("name") == name)]
    images.append({"name": name, "newName": image.name, "digest": image.digest})
    kustomization["images"] = images
    header = (f"# ocigitops {__version__} distribution: `kubectl apply -k .` installs it.\n"
              f"# The controller image is pinned by digest: {image}\n")
    (dest / _KUSTOMIZATION).write_text(
        header + yaml.safe_dump(kustomization, sort_keys=False), encoding="utf-8")
    return dest


async def dist_push(request: DistRequest, registry: RegistryOptions, *,
                    prompt: PasswordPrompt | None = None,
                    progress: ProgressFactory | None = None,
                    say: Say | None = None, warn: Say | None = None) -> PublishResult:
    """Stage the deploy tree with the image pinned (:func:`stage`) and push it as a
    Flux-format artifact to ``request.url``, signed when ``request.sign`` is given: the
    same pipeline, limits and signing as ``push artifact`` (:func:`publish`)."""
    image = parse_image(request.image)
    ref = parse_reference(request.url, require_scheme=True)
    if not ref.tag:
        raise UsageError(f"{request.url}: a version tag is required, e.g. {request.url}:v1.0.0")
    tree = (request.path or find_deploy_dir()).resolve()
    if not tree.is_dir():
        raise UsageError(f"--path {tree}: not a directory")
    origin = detect(tree)
    annotations = {ANN_IMAGE: str(image), **parse_annotations(request.annotations)}
    with tempfile.TemporaryDirectory(prefix="ocigitops-dist-") as tmp:
        staged = stage(tree, image, Path(tmp) / "deploy")
        if say:
            say(f"staged {tree} with the controller image pinned to {image}")
        return await publish(PushRequest(
            url=request.url, path=str(staged),
            source=request.source or origin.source or DEFAULT_SOURCE,
            revision=request.revision or origin.revision or f"v{__version__}",
            annotations=annotations, reproducible=True, sign=request.sign),
            registry, prompt=prompt, progress=progress, say=say, warn=warn)
