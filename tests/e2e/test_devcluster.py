"""The local control plane really works: API server, controller manager, scheduler, kwok,
ServiceAccount tokens, impersonation and RBAC."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from lightkube import Client
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Namespace, Node, Pod, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from ocigitops.puller.devcluster import FAKE_NODES, Cluster
from tests.helpers.kube import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def namespace(kube_client: Client) -> Iterator[str]:
    """A fresh namespace, deleted afterwards."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube_client.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    kube_client.delete(Namespace, name)


def http(cluster: Cluster, *, admin: bool = False,
         headers: dict[str, str] | None = None) -> httpx.Client:
    """An httpx client to the API server that trusts the cluster's CA, with the admin
    client certificate if ``admin``."""
    return httpx.Client(base_url=cluster.server, verify=cluster.ssl_context(admin=admin),
                        headers=headers, timeout=10)


def test_api_server_answers(kube_cluster: Cluster, kube_client: Client) -> None:
    with http(kube_cluster, admin=True) as c:
        assert c.get("/readyz").text == "ok"
        version = c.get("/version").json()
        assert version["major"] == "1" and version["gitVersion"].startswith("v1.")
        # No client certificate: anonymous, which RBAC lets read nothing but health.
    with http(kube_cluster) as anon:
        assert anon.get("/api/v1/namespaces").status_code in (401, 403)
    names = {ns.metadata.name for ns in kube_client.list(Namespace) if ns.metadata}
    assert {"default", "kube-system", "kube-public"} <= names
    nodes = {n.metadata.name for n in kube_client.list(Node) if n.metadata}
    assert set(FAKE_NODES) <= nodes


def test_deployment_becomes_available(kube_client: Client, namespace: str) -> None:
    kube_client.create(ConfigMap(metadata=ObjectMeta(name="settings", namespace=namespace),
                                 data={"greeting": "hello"}))
    assert kube_client.get(ConfigMap, "settings", namespace=namespace).data == {
        "greeting": "hello"}
    labels = {"app": "web"}
    kube_client.create(Deployment(
        metadata=ObjectMeta(name="web", namespace=namespace),
        spec=DeploymentSpec(
            replicas=2,
            selector=LabelSelector(matchLabels=labels),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=labels),
                spec=PodSpec(containers=[Container(name="web",
                                                   image="registry.invalid/web:1.0")])),
        ),
    ))

    def available() -> bool:
        dep = kube_client.get(Deployment, "web", namespace=namespace)
        st = dep.status
        if st is None:
            return False
        conds = {c.type: c.status for c in st.conditions or []}
        return (conds.get("Available") == "True" and st.readyReplicas == 2
                and st.availableReplicas == 2 and st.updatedReplicas == 2)

    wait_for("Deployment web to become Available (kcm + scheduler + kwok)", available, 60)
    pods = list(kube_client.list(Pod, namespace=namespace, labels={"app": "web"}))
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec is not None and pod.spec.nodeName in FAKE_NODES
        assert pod.status is not None and pod.status.phase == "Running"
        assert pod.status.podIP


def test_service_account_token_impersonation_and_rbac(kube_cluster: Cluster,
                                                      kube_client: Client,
                                                      namespace: str) -> None:
    # The controller manager creates each namespace's default ServiceAccount and CA bundle.
    wait_for("the default ServiceAccount", lambda: _exists(kube_client, ServiceAccount,
                                                           "default", namespace), 20)
    wait_for("kube-root-ca.crt", lambda: _exists(kube_client, ConfigMap, "kube-root-ca.crt",
                                                 namespace), 20)

    kube_client.create(ServiceAccount(metadata=ObjectMeta(name="reader", namespace=namespace)))
    user = f"system:serviceaccount:{namespace}:reader"
    token_req = kube_client.create(
        ServiceAccount.Token(metadata=ObjectMeta(name="reader", namespace=namespace),
                             spec=TokenRequestSpec(audiences=[], expirationSeconds=600)),
        "reader", namespace=namespace)
    assert token_req.status is not None
    token = token_req.status.token
    path = f"/api/v1/namespaces/{namespace}/configmaps"

    with http(kube_cluster, headers={"Authorization": f"Bearer {token}"}) as as_token, \
            http(kube_cluster, admin=True,
                 headers={"Impersonate-User": user}) as impersonated:
        # The token authenticates as the ServiceAccount...
        review = as_token.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                               json={"apiVersion": "authentication.k8s.io/v1",
                                     "kind": "SelfSubjectReview"})
        assert review.status_code == 201, review.text
        assert review.json()["status"]["userInfo"]["username"] == user
        # ...which RBAC denies, as it denies the admin impersonating it.
        assert as_token.get(path).status_code == 403
        denied = impersonated.get(path)
        assert denied.status_code == 403, denied.text
        assert user in denied.json()["message"]

        kube_client.create(Role(
            metadata=ObjectMeta(name="configmap-reader", namespace=namespace),
            rules=[PolicyRule(apiGroups=[""], resources=["configmaps"],
                              verbs=["get", "list", "watch"])]))
        kube_client.create(RoleBinding(
            metadata=ObjectMeta(name="reader-reads-configmaps", namespace=namespace),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role",
                            name="configmap-reader"),
            subjects=[Subject(kind="ServiceAccount", name="reader", namespace=namespace)]))

        wait_for("the RoleBinding to allow the impersonated request",
                 lambda: impersonated.get(path).status_code == 200, 10)
        assert as_token.get(path).status_code == 200
        # Only what the Role grants: no writes, nothing in another namespace.
        assert impersonated.post(path, json={
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "nope"}}).status_code == 403
        assert impersonated.get("/api/v1/namespaces/default/configmaps").status_code == 403


def _exists(client: Client, res: type[ServiceAccount] | type[ConfigMap], name: str,
            namespace: str) -> bool:
    from lightkube import ApiError

    try:
        client.get(res, name, namespace=namespace)
    except ApiError as e:
        if e.status.code == 404:
            return False
        raise
    return True
