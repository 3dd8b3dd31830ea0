"""HelmRelease ``spec.postRenderers`` (Flux's kustomize post-renderers) as a Helm post-renderer.

Flux's shape: a list of ``{kustomize: {patches: [{patch, target}], images: [{name,
newName, newTag, digest}]}}``, applied in order to what Helm rendered; the result is what
Helm installs and stores (so drift detection compares against it). ``patchesStrategicMerge``
and ``patchesJson6902`` (deprecated in Flux v2) are refused.

Each post-renderer is a generated ``kustomization.yaml`` (the rendered manifests as its one
resource, the patches inline, the images) in a private temporary directory, built by the
real kustomize through :func:`ocigitops.render.build_kustomization`: a sandboxed copy, no
remote resources, no plugins or exec, load restrictor RootOnly, bounded time; the output is
bounded too. :func:`post_renderer` returns the callable the engines run through Helm's
``postrenderer/v1`` plugin (``ocigitops.puller.helm.postrender``).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ocigitops.errors import OcigitopsError
from ocigitops.puller.helm.engine import PostRenderer, PostRenderError, one_line
from ocigitops.render import build_kustomization

#: Keys of a ``kustomize`` post-renderer this controller implements.
KUSTOMIZE_KEYS = ("patches", "images")
#: Deprecated in Flux v2: refused.
DEPRECATED_KEYS = ("patchesStrategicMerge", "patchesJson6902")
TARGET_KEYS = ("group", "version", "kind", "name", "namespace", "labelSelector",
               "annotationSelector")
IMAGE_KEYS = ("name", "newName", "newTag", "digest")
#: Seconds one kustomize build may take.
BUILD_TIMEOUT = 60.0
#: Bytes of post-rendered manifests accepted from kustomize.
MAX_OUTPUT = 64 * 1024 * 1024
MANIFESTS = "manifests.yaml"
_STRINGS = frozenset((*TARGET_KEYS, *IMAGE_KEYS, "patch"))


class InvalidPostRendererError(OcigitopsError):
    """``spec.postRenderers`` is not of Flux's shape; the message names the field."""


def deprecated_fields(value: Any) -> list[str]:
    """The deprecated (refused) fields given in ``spec.postRenderers``."""
    out: list[str] = []
    if not isinstance(value, list):
        return out
    for i, pr in enumerate(value):
        k = pr.get("kustomize") if isinstance(pr, Mapping) else None
        if isinstance(k, Mapping):
            out.extend(f"spec.postRenderers[{i}].kustomize.{key}" for key in DEPRECATED_KEYS
                       if k.get(key))
    return out


def _check_map(value: Any, where: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidPostRendererError(f"{where} must be an object")
    extra = sorted(set(value) - set(allowed))
    if extra:
        raise InvalidPostRendererError(f"{where}: unknown field(s) {', '.join(extra)}"
                                       f" (allowed: {', '.join(allowed)})")
    for key in allowed:
        if key in _STRINGS and value.get(key) is not None and not isinstance(value[key], str):
            raise InvalidPostRendererError(f"{where}.{key} must be a string")
    return value


def kustomizations(value: Any) -> list[dict[str, Any]]:
    """The kustomization (as a dict) of each post-renderer, in order; a spec that is not
    Flux's shape raises :class:`InvalidPostRendererError` naming the field."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidPostRendererError("spec.postRenderers must be a list")
    out: list[dict[str, Any]] = []
    for i, pr in enumerate(value):
        where = f"spec.postRenderers[{i}]"
        pr = _check_map(pr, where, ("kustomize",))
        k = pr.get("kustomize")
        if k is None:
            raise InvalidPostRendererError(f"{where}.kustomize is required")
        kw = f"{where}.kustomize"
        k = _check_map({key: v for key, v in k.items() if key not in DEPRECATED_KEYS}
                       if isinstance(k, Mapping) else k, kw, KUSTOMIZE_KEYS)
        doc: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1",
                               "kind": "Kustomization", "resources": [MANIFESTS]}
        patches = k.get("patches") or []
        if not isinstance(patches, list):
            raise InvalidPostRendererError(f"{kw}.patches must be a list")
        for j, p in enumerate(patches):
            pw = f"{kw}.patches[{j}]"
            p = _check_map(p, pw, ("patch", "target"))
            if not isinstance(p.get("patch"), str) or not p["patch"].strip():
                raise InvalidPostRendererError(f"{pw}.patch is required (inline YAML or"
                                               " JSON 6902 patch)")
            entry: dict[str, Any] = {"patch": p["patch"]}
            if p.get("target") is not None:
                t = _check_map(p["target"], f"{pw}.target", TARGET_KEYS)
                entry["target"] = {key: t[key] for key in TARGET_KEYS if t.get(key)}
            doc.setdefault("patches", []).append(entry)
        images = k.get("images") or []
        if not isinstance(images, list):
            raise InvalidPostRendererError(f"{kw}.images must be a list")
        for j, im in enumerate(images):
            iw = f"{kw}.images[{j}]"
            im = _check_map(im, iw, IMAGE_KEYS)
            if not im.get("name"):
                raise InvalidPostRendererError(f"{iw}.name is required")
            doc.setdefault("images", []).append({key: im[key] for key in IMAGE_KEYS
                                                 if im.get(key)})
        out.append(doc)
    return out


def post_renderers_digest(value: Any) -> str | None:
    """``status.observedPostRenderersDigest``: sha256 of the post-renderers' canonical JSON;
    None when there are none (so releases without post-renderers are not upgraded)."""
    if not value:
        return None
    data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _has_objects(text: str) -> bool:
    try:
        return any(isinstance(d, Mapping) for d in yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise PostRenderError(f"rendered manifests are not YAML: {one_line(str(e))}") from None


def apply_kustomization(doc: Mapping[str, Any], manifests: str, *,
                        timeout: float = BUILD_TIMEOUT) -> str:
    """``manifests`` through one generated kustomization, with the sandboxed kustomize."""
    with tempfile.TemporaryDirectory(prefix="ocigitops-postrender-") as tmp:
        d = Path(tmp)
        (d / MANIFESTS).write_text(manifests)
        (d / "kustomization.yaml").write_text(yaml.safe_dump(dict(doc), sort_keys=False))
        out = build_kustomization(d, root=d, timeout=timeout)
    if len(out.encode()) > MAX_OUTPUT:
        raise PostRenderError(f"post-rendered manifests larger than {MAX_OUTPUT} bytes")
    return out


def post_renderer(value: Any, *, timeout: float = BUILD_TIMEOUT) -> PostRenderer | None:
    """The post-render callable for ``spec.postRenderers`` (None when there are none):
    each kustomization in order; failures raise a one-line :class:`PostRenderError`."""
    docs = kustomizations(value)
    if not docs:
        return None

    def run(manifests: str) -> str:
        text = manifests
        for i, doc in enumerate(docs):
            if not _has_objects(text):
                return text
            try:
                text = apply_kustomization(doc, text, timeout=timeout)
            except PostRenderError:
                raise
            except OcigitopsError as e:
                msg = str(e).removeprefix("render: ")
                raise PostRenderError(one_line(f"postRenderers[{i}]: {msg}")) from None
        return text

    return run


__all__ = ["InvalidPostRendererError", "apply_kustomization", "deprecated_fields",
           "kustomizations", "post_renderer", "post_renderers_digest"]
