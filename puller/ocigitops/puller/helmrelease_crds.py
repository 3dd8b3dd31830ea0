"""The chart's ``crds/`` directory, applied by the controller as Flux's helm-controller does
for the CRD policies Helm itself does not have: ``install.crds: CreateReplace`` and
``upgrade.crds: Create|CreateReplace`` (Helm installs ``crds/`` only at install, and
never replaces an existing CRD).

``Skip``: not touched. ``Create``: CRDs not in the cluster are created, existing ones left
as they are. ``CreateReplace``: created, and existing ones updated. Applied with the
project's server-side apply (:func:`ocigitops.puller.apply.apply_set`: dry-run of every
CRD first, then applied and waited for until Established), impersonating the release's
service account, before Helm runs (which is then told to skip ``crds/``).

Bounded and validated: at most :data:`MAX_FILES` files of at most :data:`MAX_FILE` bytes
(:data:`MAX_TOTAL` in all), read from the chart's own ``crds/`` and from unpacked
subcharts' ``charts/<name>/crds/`` (packed subcharts' CRDs are not read); every document
must be an ``apiextensions.k8s.io/v1`` ``CustomResourceDefinition``, or nothing is applied.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ocigitops.errors import OcigitopsError
from ocigitops.puller.apply import ApplyError, ApplyResult, apply_set
from ocigitops.puller.kube import DynamicClient, KubeError

MAX_FILES = 100
MAX_FILE = 4 * 1024 * 1024
MAX_TOTAL = 32 * 1024 * 1024
CRD_API = "apiextensions.k8s.io/v1"


class CRDError(OcigitopsError):
    """The chart's CRDs could not be read, are not CRDs, or were refused."""


def _is_crd_file(parts: tuple[str, ...]) -> bool:
    # <chart>/crds/x.yaml, or <chart>/charts/<sub>/crds/x.yaml (unpacked subchart).
    top = len(parts) == 3 and parts[1] == "crds"
    sub = len(parts) == 5 and parts[1] == "charts" and parts[3] == "crds"
    return (top or sub) and parts[-1].endswith((".yaml", ".yml", ".json"))


def chart_crds(chart: Path) -> list[dict[str, Any]]:
    """The CRDs in the chart archive ``chart``, in file order (raises :class:`CRDError`)."""
    docs: list[dict[str, Any]] = []
    total = files = 0
    try:
        with tarfile.open(chart, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or not _is_crd_file(parts):
                    continue
                files += 1
                total += member.size
                if files > MAX_FILES or member.size > MAX_FILE or total > MAX_TOTAL:
                    raise CRDError(f"chart CRDs over the bounds ({MAX_FILES} files,"
                                   f" {MAX_FILE} bytes each, {MAX_TOTAL} in all):"
                                   f" {member.name}")
                f = tar.extractfile(member)
                if f is None:
                    continue
                text = f.read(MAX_FILE + 1).decode("utf-8", errors="replace")
                try:
                    loaded = list(yaml.safe_load_all(text))
                except yaml.YAMLError as e:
                    raise CRDError(f"{member.name} is not valid YAML:"
                                   f" {str(e).splitlines()[0]}") from None
                for doc in loaded:
                    if doc is None:
                        continue
                    if not isinstance(doc, Mapping) or doc.get("kind") != \
                            "CustomResourceDefinition" or doc.get("apiVersion") != CRD_API:
                        kind = doc.get("kind") if isinstance(doc, Mapping) else type(doc)
                        raise CRDError(f"{member.name}: only {CRD_API}"
                                       f" CustomResourceDefinition objects may be in crds/,"
                                       f" found {kind}")
                    name = (doc.get("metadata") or {}).get("name")
                    if not name:
                        raise CRDError(f"{member.name}: a CustomResourceDefinition without"
                                       " metadata.name")
                    docs.append(dict(doc))
    except (OSError, tarfile.TarError) as e:
        raise CRDError(f"chart archive could not be read for its CRDs: {e}") from None
    return docs


async def apply_crds(kube: DynamicClient, crds: list[dict[str, Any]], policy: str, *,
                     impersonate: str | None, wait_seconds: float) -> ApplyResult | None:
    """Apply ``crds`` by ``policy`` (``Create``: only those not in the cluster;
    ``CreateReplace``: all). None when nothing was to be applied."""
    if policy not in ("Create", "CreateReplace") or not crds:
        return None
    todo = crds
    if policy == "Create":
        todo = []
        for crd in crds:
            try:
                live = await kube.get(CRD_API, "CustomResourceDefinition",
                                      str(crd["metadata"]["name"]), impersonate=impersonate)
            except KubeError as e:
                raise CRDError(f"reading CustomResourceDefinition"
                               f" {crd['metadata']['name']}: {e}") from None
            if live is None:
                todo.append(crd)
    if not todo:
        return None
    try:
        # Never force: a CRD is not deleted and re-created (that would delete every
        # custom resource of it); field conflicts are taken over (apply_set forces those).
        return await apply_set(kube, todo, impersonate=impersonate, force=False,
                               wait_timeout=wait_seconds)
    except (ApplyError, KubeError, OcigitopsError) as e:
        raise CRDError(f"applying the chart's CRDs ({policy}): {e}") from None


__all__ = ["CRDError", "apply_crds", "chart_crds"]
