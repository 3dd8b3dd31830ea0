"""Coalesced health-check reads (:mod:`ocigitops.puller.readbatch`) against the dev
cluster's API server: concurrent reads of one kind in one namespace become one LIST whose
items are complete objects; an impersonated user who may GET but not LIST gets the same
answers by GET; errors reach every reader."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ocigitops.puller.apply import health
from ocigitops.puller.kube import DynamicClient, KubeError
from ocigitops.puller.readbatch import BatchReader
from tests.helpers.kube import Kube

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _cm(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"k": name}}


def _read(kube: Kube, names: list[str], impersonate: str | None = None,
          ) -> tuple[list[dict[str, Any] | None], dict[str, int]]:
    async def go(dyn: DynamicClient) -> tuple[list[dict[str, Any] | None], dict[str, int]]:
        reader = BatchReader(dyn)
        got = await asyncio.gather(*(reader.get("v1", "ConfigMap", n, kube.namespace,
                                                impersonate=impersonate) for n in names))
        return list(got), dict(reader.requests)

    result: tuple[list[dict[str, Any] | None], dict[str, int]] = kube.call(go)
    return result


def test_concurrent_reads_are_one_list(ns: Kube) -> None:
    for i in range(5):
        ns.apply({**_cm(f"cm{i}"), "metadata": {"name": f"cm{i}", "namespace": ns.namespace}})
    names = [f"cm{i}" for i in range(5)] + ["missing", "cm0"]
    got, requests = _read(ns, names)
    assert requests == {"get": 0, "list": 1}
    assert [o["data"]["k"] if o else None for o in got] == [
        "cm0", "cm1", "cm2", "cm3", "cm4", None, "cm0"]
    # Items of a LIST lack kind and apiVersion on the wire: the reader restores them, as
    # health() reads the kind.
    assert all(o["kind"] == "ConfigMap" and o["apiVersion"] == "v1" for o in got if o)
    assert health(got[0]) == ("Current", "exists")
    # Two names: GETs, not a LIST.
    got, requests = _read(ns, ["cm1", "cm2"])
    assert requests == {"get": 2, "list": 0} and [o["data"]["k"] for o in got if o] == [
        "cm1", "cm2"]


def test_a_user_who_may_get_but_not_list_reads_by_get(ns: Kube) -> None:
    n = str(ns.namespace)
    for i in range(4):
        ns.apply({**_cm(f"cm{i}"), "metadata": {"name": f"cm{i}", "namespace": n}})
    ns.apply({"apiVersion": "v1", "kind": "ServiceAccount",
              "metadata": {"name": "reader", "namespace": n}})
    ns.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
              "metadata": {"name": "get-only", "namespace": n},
              "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]})
    ns.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": {"name": "get-only", "namespace": n},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                          "name": "get-only"},
              "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": n}]})
    user = f"system:serviceaccount:{n}:reader"
    got, requests = _read(ns, ["cm0", "cm1", "cm2", "cm3"], impersonate=user)
    assert requests == {"get": 4, "list": 1}  # the refused LIST, then one GET each
    assert [o["data"]["k"] for o in got if o] == ["cm0", "cm1", "cm2", "cm3"]
    # A user who may do neither: every reader gets the refusal, none hangs.
    with pytest.raises(KubeError) as e:
        _read(ns, ["cm0", "cm1", "cm2"], impersonate=f"system:serviceaccount:{n}:nobody")
    assert e.value.status == 403
