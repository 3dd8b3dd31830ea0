"""The controller's flags (``ocigitops controller run``), shared by the runtime and the
kinds' contexts."""

from __future__ import annotations

import os
from dataclasses import dataclass


def default_cache_dir() -> str:
    """``$OCIGITOPS_CACHE_DIR``, else ``$XDG_CACHE_HOME/ocigitops``, else
    ``/tmp/ocigitops-cache``. The controller image sets ``OCIGITOPS_CACHE_DIR`` to a
    directory its user 65532 owns (the Deployment mounts a volume there)."""
    own = os.environ.get("OCIGITOPS_CACHE_DIR")
    if own:
        return own
    xdg = os.environ.get("XDG_CACHE_HOME")
    return f"{xdg}/ocigitops" if xdg else "/tmp/ocigitops-cache"


@dataclass
class Options:
    """``ocigitops controller run`` flags."""

    kubeconfig: str | None = None
    #: The kubeconfig context (None: its current one).
    context: str | None = None
    concurrent: int = 4
    metrics_addr: str = ":8080"
    health_addr: str = ":9440"
    leader_elect: bool = False
    leader_namespace: str = "ocigitops-system"
    leader_name: str = "ocigitops-controller"
    watch_namespace: str | None = None
    watch_label_selector: str | None = None
    no_cross_namespace_refs: bool = False
    strict_substitution: bool = True
    #: The content-addressed artifact cache (None: :func:`default_cache_dir`).
    cache_dir: str | None = None
    #: How often an object waiting for a dependency or a source artifact looks again
    #: (Flux's ``--requeue-dependency``).
    requeue_dependency: float = 30.0
    shutdown_timeout: float = 30.0
    #: The kinds to reconcile, by ``--controllers`` name; empty means all.
    controllers: tuple[str, ...] = ()
    #: Helm processes running at once (binary engine), apart from ``concurrent``: each
    #: costs about 70 MiB while it runs (``--concurrent-helm``).
    concurrent_helm: int = 2
    #: The HelmRelease engine: ``binary`` (the helm 4 binary) or ``sdk`` (``--helm-engine``).
    helm_engine: str = "binary"
    #: The service account of their own namespace that Kustomizations and HelmReleases
    #: without ``serviceAccountName`` impersonate (Flux's ``--default-service-account``).
    default_service_account: str | None = None
