"""Issue 7 against the controller process: a registry the attacker controls.

- an OCIRepository pinned to ``ref.digest`` keeps its pin when the registry's answer
  names another digest (before the fix the status took the registry's digest: an
  unsigned source lost its pin, a signed one could be rolled back);
- a registry that drips its answers is stopped by ``spec.timeout`` as a whole, and the
  status says so (before the fix each read had its own timeout, so it ran for minutes);
- sources on a stalled registry never hold every worker: sources on a healthy registry
  become Ready while four stalled ones are pending (per-host slots).

The hostile registry is :class:`tests.hostile.HostileRegistry`, a real HTTP server in
front of the embedded registry.
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
from tests.e2e.conftest import Kube
from tests.e2e.test_puller_behaviours import OCI, _configmap, _publish, _ready, _status, _tree
from tests.hostile import HostileRegistry, Reply, Request, drip, manifest_path

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[BackgroundRegistry]:
    with BackgroundRegistry(tmp_path / "registry") as srv:
        yield srv


@pytest.fixture
def hostile(backend: BackgroundRegistry) -> Iterator[HostileRegistry]:
    with HostileRegistry(backend.host) as reg:
        yield reg


def _oci(kube: Kube, name: str, host: str, repo: str, ref: dict[str, str],
         timeout: str = "20s") -> None:
    kube.apply({"apiVersion": API_VERSION, "kind": OCI,
                "metadata": {"name": name, "namespace": kube.namespace},
                "spec": {"url": f"oci://{host}/{repo}", "insecure": True, "interval": "1m",
                         "timeout": timeout, "ref": ref}})


def test_digest_pin_holds_against_a_lying_registry(ns: Kube, hostile: HostileRegistry,
                                                   backend: BackgroundRegistry,
                                                   tmp_path: Path) -> None:
    repo = "sec/pin"
    old = _publish(backend.host, repo, _tree(tmp_path, "old", _configmap("p", {"v": "old"})),
                   tag="old").split("@")[1]
    new = _publish(backend.host, repo, _tree(tmp_path, "new", _configmap("p", {"v": "new"})),
                   tag="new").split("@")[1]
    lying = threading.Event()

    def rule(req: Request) -> Reply | None:
        if lying.is_set() and req.method == "HEAD" and req.path == manifest_path(repo, new):
            return Reply(200, {"Docker-Content-Digest": old, "Content-Type": mt.OCI_MANIFEST,
                               "Content-Length": "500"}, b"")
        return None

    hostile.rules.append(rule)
    _oci(ns, "pinned", hostile.host, repo, {"digest": new})
    ns.wait("pinned Ready at the pin", lambda: _ready(ns, OCI, "pinned").get("status") == "True"
            and (_status(ns, OCI, "pinned").get("artifact") or {}).get("revision") == new, 40)

    lying.set()
    ns.apply({"apiVersion": API_VERSION, "kind": OCI,
              "metadata": {"name": "pinned", "namespace": ns.namespace,
                           "annotations": {"reconcile.ocigitops.dev/requestedAt": "now"}},
              "spec": {"url": f"oci://{hostile.host}/{repo}", "insecure": True,
                       "interval": "1m", "timeout": "20s", "ref": {"digest": new}}})
    ns.wait("pinned refuses the answer", lambda: _ready(ns, OCI, "pinned").get("status")
            == "False", 40)
    ready = _ready(ns, OCI, "pinned")
    assert "never replaced" in ready["message"] and old in ready["message"], ready
    # The stored artifact is still the pinned revision, never the one the registry named.
    assert _status(ns, OCI, "pinned")["artifact"]["revision"] == new


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
            _oci(ns, f"stalled-{i}", hostile.host, f"sec/stall{i}", {"tag": "v1"},
                 timeout="4s")
        time.sleep(1.0)  # the stalled ones take their workers first
        revs = {}
        for i in range(2):
            revs[i] = _publish(backend.host, f"sec/healthy{i}", _tree(
                tmp_path, f"h{i}", _configmap(f"h{i}", {"i": str(i)})), tag="v1")
            _oci(ns, f"healthy-{i}", backend.host, f"sec/healthy{i}", {"tag": "v1"})
        start = time.monotonic()
        for i in range(2):
            ns.wait(f"healthy-{i} Ready", lambda i=i: (
                _status(ns, OCI, f"healthy-{i}").get("artifact") or {}).get("revision")
                == revs[i], 30)
        healthy_took = time.monotonic() - start
        # Each stalled source fails on its own deadline, naming it, well before the
        # 2,000 seconds its drip would take.
        for i in range(4):
            ns.wait(f"stalled-{i} fails", lambda i=i: _ready(ns, OCI, f"stalled-{i}").get(
                "status") == "False", 40)
            msg = _ready(ns, OCI, f"stalled-{i}")["message"]
            assert "within 4s" in msg, msg
        assert healthy_took < 15, healthy_took
    finally:
        stop.set()

