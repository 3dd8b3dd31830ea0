"""``ocigitops operator run``: the controller runtime with the operator's kinds only."""

from __future__ import annotations

import asyncio
import logging

from ocigitops.puller.manager import run, setup_logging
from ocigitops.puller.operator.instance import OPERATOR_KINDS
from ocigitops.puller.runtime.options import Options


def operator_options(kubeconfig: str | None = None, context: str | None = None,
                     metrics_addr: str = ":8080", health_addr: str = ":9440",
                     namespace: str | None = "ocigitops-system") -> Options:
    """The runtime's options for the operator: it watches Instances in ``namespace``
    (None or empty: every namespace), one worker, no leader election (one replica,
    Recreate)."""
    return Options(kubeconfig=kubeconfig, context=context, metrics_addr=metrics_addr,
                   health_addr=health_addr, watch_namespace=namespace or None, concurrent=1,
                   leader_name="ocigitops-operator")


def serve_operator(opts: Options, log_level: str = "info") -> None:
    """Run the operator until SIGTERM or SIGINT, logging JSON at ``log_level``."""
    setup_logging(getattr(logging, log_level.upper()))
    asyncio.run(run(opts, kinds=OPERATOR_KINDS))
