"""Fixtures for tests against the real local control plane (hack/cluster.sh).

- ``cluster`` (session): starts the control plane or reuses a running one, installs the
  CRDs from crds/ and waits until they are Established.
- ``api``: an admin ``kubernetes.client.ApiClient``.
- ``kube``: the operator's own ``kubeloop.kube.Kube`` facade on that client.
- ``namespace``: a fresh namespace per test (restricted Pod Security enforced), deleted after.
  Its pods go to the kwok node (the kwok tier): the namespace's annotations give every pod
  the kwok node's selector and toleration. Pods of other namespaces run on the real node
  (hack/node.sh; tests/integration/test_real_node.py).
- ``operator``: the real ``kubeloop-operator`` process watching that namespace, with kopf's
  timeouts and backoffs shortened; ``operator.restart()`` kills and starts it again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.harness import (
    KWOK_TIER_ANNOTATIONS,
    Cluster,
    OperatorProcess,
    operator_kubeconfig,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    c = Cluster.up(REPO)
    c.install_crds(REPO / "crds")
    return c


@pytest.fixture(scope="session")
def operator_credentials(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator ServiceAccount's kubeconfig, with exactly the RBAC of manifests/base."""
    return operator_kubeconfig(cluster, tmp_path_factory.mktemp("operator") / "kubeconfig")


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> client.ApiClient:
    return cluster.api_client()


@pytest.fixture(scope="session")
def kube(api: client.ApiClient) -> Any:
    from kubeloop.kube import Kube

    return Kube(api)


@pytest.fixture
def namespace(
    cluster: Cluster, api: client.ApiClient, request: pytest.FixtureRequest
) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "kubeloop.io/test": "true",
                },
                annotations=dict(KWOK_TIER_ANNOTATIONS),
            )
        )
    )
    wait_for(
        lambda: _sa_exists(core, name),
        timeout=60,
        what=f"the default ServiceAccount in namespace {name}",
    )
    yield name
    if os.environ.get("KUBELOOP_KEEP_NAMESPACES") != "1":
        try:
            core.delete_namespace(name)
        except client.ApiException as e:
            if e.status != 404:
                raise


def _sa_exists(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespaced_service_account("default", ns)
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, tmp_path: Path, operator_credentials: Path
) -> Iterator[OperatorProcess]:
    # The operator sees the same artifact store as the test kubelet, so it verifies sha256s.
    op = OperatorProcess(
        cluster,
        namespaces=[namespace],
        workdir=tmp_path / "operator",
        kubeconfig=operator_credentials,
        env={"KUBELOOP_ARTIFACT_ROOT": str(tmp_path / "artifacts")},
    )
    op.start()
    yield op
    op.stop()


@pytest.fixture
def make_operator(
    cluster: Cluster, tmp_path: Path, operator_credentials: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operators with custom settings: ``make_operator(namespaces=[...], env={...})``."""
    started: list[OperatorProcess] = []

    def make(**kwargs: Any) -> OperatorProcess:
        kwargs.setdefault("kubeconfig", operator_credentials)
        op = OperatorProcess(cluster, workdir=tmp_path / f"operator-{len(started)}", **kwargs)
        op.start()
        started.append(op)
        return op

    yield make
    for op in started:
        op.stop()


@pytest.fixture
def kubelet(api: client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[Any]:
    """Runs the real kubeloop-train / kubeloop-serve behind the namespace's pods."""
    from tests.integration.kubelet import ProcessKubelet

    k = ProcessKubelet(
        api_client=api,
        namespace=namespace,
        workdir=tmp_path / "kubelet",
        artifact_root=tmp_path / "artifacts",
    )
    k.start()
    yield k
    k.stop()
    assert not k.errors, f"the test kubelet hit errors: {k.errors}"


@pytest.fixture
def artifacts_pvc(api: client.ApiClient, namespace: str) -> Iterator[str]:
    """The artifact PVC training and predictor pods mount, bound to a PV made for it.

    The local control plane has no volume provisioner, so the claim is pre-bound to a
    hostPath PV (kwok never mounts it; the test kubelet maps the claim to a local directory).
    Yields the claim's name, the operator's default ``kubeloop-artifacts``.
    """
    core = client.CoreV1Api(api)
    pv = f"{namespace}-artifacts"
    core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv, "labels": {"kubeloop.io/test": "true"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany", "ReadOnlyMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": f"/tmp/{pv}"},
                "claimRef": {"namespace": namespace, "name": "kubeloop-artifacts"},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "kubeloop-artifacts"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    yield "kubeloop-artifacts"
    core.delete_persistent_volume(pv)
