"""Issue 7 against the controller process: a registry the attacker controls.

- an OCIRepository pinned to ``ref.digest`` keeps its pin when the registry's answer
  names another digest (before the fix the status took the registry's digest: an
  unsigned source lost its pin, a signed one could be rolled back);
- a registry that drips its answers is stopped by ``spec.timeout`` as a whole, and the
  status says so (before the fix each read had its own timeout, so it ran for minutes);
- sources on a stalled registry never hold every worker: sources on a healthy registry
  become Ready while four stalled ones are pending (per-host slots).

The hostile registry is :class:`tests.helpers.hostile.HostileRegistry`, a real HTTP
server in front of the embedded registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ocigitops import mediatypes as mt
from ocigitops.puller.api.meta import API_VERSION
from ocigitops.regserver import BackgroundRegistry
from tests.helpers.hostile import HostileRegistry, Reply, Request, drip, manifest_path
from tests.helpers.kube import OCI, Kube, apply_source, ready_condition, status_of
from tests.helpers.publish import configmap, manifest_tree, publish

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[BackgroundRegistry]:
    with BackgroundRegistry(tmp_path / "registry") as srv:
        yield srv


@pytest.fixture
def hostile(backend: BackgroundRegistry) -> Iterator[HostileRegistry]:
    with HostileRegistry(backend.host) as reg:
        yield reg


def test_digest_pin_holds_against_a_lying_registry(ns: Kube, hostile: HostileRegistry,
                                                   backend: BackgroundRegistry,
                                                   tmp_path: Path) -> None:
    repo = "sec/pin"
    old = publish(backend.host, repo, manifest_tree(tmp_path, "old", configmap("p", {"v": "old"})),
                  tag="old").split("@")[1]
    new = publish(backend.host, repo, manifest_tree(tmp_path, "new", configmap("p", {"v": "new"})),
                  tag="new").split("@")[1]
    lying = threading.Event()

    def rule(req: Request) -> Reply | None:
        if lying.is_set() and req.method == "HEAD" and req.path == manifest_path(repo, new):
            return Reply(200, {"Docker-Content-Digest": old, "Content-Type": mt.OCI_MANIFEST,
                               "Content-Length": "500"}, b"")
        return None

    hostile.rules.append(rule)
    apply_source(ns, "pinned", hostile.host, repo, ref={"digest": new})
    ns.wait("pinned Ready at the pin", lambda: ready_condition(ns, OCI, "pinned").get(
        "status") == "True" and (status_of(ns, OCI, "pinned").get("artifact") or {}).get(
        "revision") == new, 40)

    lying.set()
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": "pinned", "namespace": ns.namespace,
                           "annotations": {"reconcile.ocigitops.dev/requestedAt": "now"}},
              "spec": {"url": f"oci://{hostile.host}/{repo}", "insecure": True,
                       "interval": "1m", "timeout": "20s", "ref": {"digest": new}}})
    ns.wait("pinned refuses the answer", lambda: ready_condition(ns, OCI, "pinned").get("status")
            == "False", 40)
    ready = ready_condition(ns, OCI, "pinned")
    assert "never replaced" in ready["message"] and old in ready["message"], ready
    # The stored artifact is still the pinned revision, never the one the registry named.
    assert status_of(ns, OCI, "pinned")["artifact"]["revision"] == new


def _dripping(repo_prefix: str, stop: threading.Event) -> Callable[[Request], Reply | None]:
    body = b'{"schemaVersion": 2' + b" " * 4000 + b"}"

    def rule(req: Request) -> Reply | None:
        if req.path.startswith(f"/v2/{repo_prefix}") and "/manifests/" in req.path:
            if req.method == "HEAD":
                return None  # a HEAD without a digest makes the client GET the manifest
            return Reply(200, {"Content-Type": mt.OCI_MANIFEST,
                               "Content-Length": str(len(body))}, drip(body, 0.5, stop),
                         length=False)
        return None

    return rule


def test_stalled_registry_is_bounded_and_isolated(ns: Kube, hostile: HostileRegistry,
                                                  backend: BackgroundRegistry,
                                                  tmp_path: Path) -> None:
    stop = threading.Event()
    hostile.rules.append(lambda req: Reply(200, {"Content-Type": mt.OCI_MANIFEST})
                         if req.method == "HEAD" and req.path.startswith("/v2/sec/stall")
                         else None)
    hostile.rules.append(_dripping("sec/stall", stop))
    try:
        for i in range(4):
            apply_source(ns, f"stalled-{i}", hostile.host, f"sec/stall{i}", "v1",
                         timeout="4s")
        time.sleep(1.0)  # the stalled ones take their workers first
        revs = {}
        for i in range(2):
            revs[i] = publish(backend.host, f"sec/healthy{i}", manifest_tree(
                tmp_path, f"h{i}", configmap(f"h{i}", {"i": str(i)})), tag="v1")
            apply_source(ns, f"healthy-{i}", backend.host, f"sec/healthy{i}", "v1")
        start = time.monotonic()
        for i in range(2):
            ns.wait(f"healthy-{i} Ready", lambda i=i: (
                status_of(ns, OCI, f"healthy-{i}").get("artifact") or {}).get("revision")
                == revs[i], 30)
        healthy_took = time.monotonic() - start
        # Each stalled source fails on its own deadline, naming it, well before the
        # 2,000 seconds its drip would take.
        for i in range(4):
            ns.wait(f"stalled-{i} fails", lambda i=i: ready_condition(ns, OCI, f"stalled-{i}").get(
                "status") == "False", 40)
            msg = ready_condition(ns, OCI, f"stalled-{i}")["message"]
            assert "within 4s" in msg, msg
        assert healthy_took < 15, healthy_took
    finally:
        stop.set()

