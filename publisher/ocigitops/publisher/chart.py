"""``push chart``: package a chart (or take a ``.tgz``) and push it in Helm's OCI format.

What ``helm push`` writes, so ``helm pull``/``helm install oci://...`` and Flux read it:
the config ``application/vnd.cncf.helm.config.v1+json`` (``Chart.yaml`` as Helm marshals
it), one layer ``application/vnd.cncf.helm.chart.content.v1.tar+gzip`` (the archive), the
annotations Helm sets (created, title, version, description...), in
``<repository>/<chart name>`` under the tag ``<version>`` (``+`` written ``_``, as Helm
does). A directory is packaged in Python (:func:`ocigitops.chart.package_chart`:
deterministic, no helm binary); an archive is checked as the controller checks it (bounded,
path-safe, ``Chart.yaml`` valid) before a byte is uploaded. ``--sign`` signs the pushed
digest as ``push artifact --sign`` does.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ocigitops import mediatypes as mt
from ocigitops.artifact import now_rfc3339
from ocigitops.chart import (
    CHART_ARCHIVE_MAX,
    ChartMeta,
    helm_annotations,
    helm_config,
    package_chart,
    read_chart_archive_file,
)
from ocigitops.digests import digest_of
from ocigitops.errors import SizeLimitError, UsageError
from ocigitops.options import RegistryOptions
from ocigitops.publisher.signing import PasswordPrompt, SignOptions, cosign_password, load_signer
from ocigitops.publisher.signresult import SignResult
from ocigitops.reference import parse_reference
from ocigitops.registry import Descriptor


@dataclass(frozen=True)
class ChartPushResult:
    """What ``push chart`` pushed."""

    #: ``oci://host/repo/name@sha256:...``
    url: str
    repository: str
    tag: str
    digest: str
    name: str
    version: str
    signature: SignResult | None = None

    def lines(self) -> tuple[str, str]:
        """A line for people (stderr) and the digest URL (stdout)."""
        return (f"pushed chart {self.name} {self.version} to {self.repository}:{self.tag}",
                self.url)

    def to_json(self) -> dict[str, object]:
        """The ``-o json|yaml`` document."""
        doc: dict[str, object] = {"url": self.url, "repository": self.repository,
                                  "tag": self.tag, "digest": self.digest, "name": self.name,
                                  "version": self.version}
        if self.signature is not None:
            doc["signature"] = self.signature.to_json()
        return doc


def _chart_archive(source: Path, tmp: Path) -> tuple[bytes, ChartMeta, bytes]:
    """(archive bytes, metadata, Chart.yaml bytes) of a chart folder or ``.tgz``."""
    if source.is_dir():
        packaged = package_chart(source, tmp / "chart.tgz")
        archive = packaged.path
    elif source.is_file():
        archive = source
    else:
        raise UsageError(f"{source}: no such chart folder or archive")
    size = archive.stat().st_size
    if size > CHART_ARCHIVE_MAX:
        raise SizeLimitError(f"chart archive is {size} bytes, over the {CHART_ARCHIVE_MAX}-byte"
                             " limit the controller downloads (Flux's --helm-chart-max-size)")
    data = archive.read_bytes()
    meta, chart_yaml = read_chart_archive_file(data)
    return data, meta, chart_yaml


async def push_chart(source: Path, url: str, registry: RegistryOptions, *,
                     sign: SignOptions | None = None,
                     prompt: PasswordPrompt | None = None) -> ChartPushResult:
    """Package (or take) the chart at ``source`` and push it to ``url`` (``oci://host/repo``,
    the chart goes to ``<repo>/<name>:<version>``); sign it when ``sign`` is given.

    Everything that can fail without the network is checked first: the URL, the signing
    key, the chart (valid ``Chart.yaml``, bounded, no links or traversal).
    """
    base = parse_reference(url, require_scheme=True)
    if base.tag or base.digest:
        raise UsageError(f"{url}: push chart takes a repository (oci://host/repo); the chart"
                         " is pushed to <repo>/<chart name>:<chart version>, as helm push")
    signer = None
    if sign is not None:
        password = functools.cache(lambda: cosign_password(prompt))
        signer = load_signer(sign, password=password)
    with tempfile.TemporaryDirectory(prefix="ocigitops-chart-") as tmp:
        data, meta, chart_yaml = _chart_archive(source, Path(tmp))
    config = helm_config(chart_yaml)
    ref = parse_reference(f"{base.repo_only().url().rstrip('/')}/{meta.name}",
                          require_scheme=True)
    tag = meta.tag
    layer = Descriptor(media_type=mt.HELM_CHART, digest=digest_of(data), size=len(data))
    cfg = Descriptor(media_type=mt.HELM_CONFIG, digest=digest_of(config), size=len(config))
    manifest = _manifest(cfg, layer, helm_annotations(chart_yaml, now_rfc3339()))
    signed: SignResult | None = None
    async with registry.client() as client:
        await client.push_blob(ref, cfg.digest, cfg.size, config)
        await client.push_blob(ref, layer.digest, layer.size, data)
        digest, _ = await client.put_manifest(ref, manifest, mt.OCI_MANIFEST, tag=tag)
        if signer is not None:
            signed = await signer(client, ref.repo_only(), digest, mt.OCI_MANIFEST,
                                  len(manifest))
    return ChartPushResult(url=f"{ref.repo_only().url()}@{digest}",
                           repository=ref.repo_only().url(), tag=tag, digest=digest,
                           name=meta.name, version=meta.version, signature=signed)


def _manifest(config: Descriptor, layer: Descriptor, annotations: dict[str, str]) -> bytes:
    import json

    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
           "config": {"mediaType": config.media_type, "digest": config.digest,
                      "size": config.size},
           "layers": [{"mediaType": layer.media_type, "digest": layer.digest,
                       "size": layer.size}],
           "annotations": dict(sorted(annotations.items()))}
    return json.dumps(doc, separators=(",", ":")).encode()
