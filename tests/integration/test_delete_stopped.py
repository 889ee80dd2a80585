"""Objects and namespaces can be deleted while the operator is stopped (issue #13).

No Kubeloop object carries a finalizer: no cleanup needs one (owner references delete the
children; the registry outlives runs). The finalizer older operators left on
InferenceServices and unfinished TrainingJobs (kopf's, for its timers and daemons) is
removed when the operator starts again. Real control plane, real operator process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import OperatorProcess, is_true, wait_for
from tests.integration.test_inferenceservice import model_version
from tests.integration.test_trainingjob import training_job

LEGACY_FINALIZER = "kubeloop.io/finalizer"
TIMEOUT = 90


def isvc_body(namespace: str, name: str = "iris") -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"modelVersion": "iris-v1"}, "replicas": 1},
    }


def populate(kube: Kube, ns: str) -> None:
    """A ModelVersion, an InferenceService serving it, and an unfinished TrainingJob."""
    assert kube.create(model_version(ns, 1, "a" * 64)) is not None
    assert kube.create(isvc_body(ns)) is not None
    assert kube.create(training_job(ns, "later", runPolicy={"suspend": True})) is not None


def objects(kube: Kube, ns: str) -> list[dict[str, Any] | None]:
    return [
        kube.get(api.API_VERSION, "ModelVersion", ns, "iris-v1"),
        kube.get(api.API_VERSION, "InferenceService", ns, "iris"),
        kube.get(api.API_VERSION, "TrainingJob", ns, "later"),
    ]


def wait_reconciled(kube: Kube, ns: str) -> None:
    def done() -> bool:
        mv, isvc, tj = objects(kube, ns)
        # (The predictor pods stay Pending without an artifact PVC: it does not matter.)
        return (
            is_true(isvc, "ModelResolved")
            and is_true(mv, "Ready")
            and bool(((tj or {}).get("status") or {}).get("conditions"))
        )

    wait_for(done, timeout=TIMEOUT, what=f"the objects in {ns} to be reconciled")


def assert_no_finalizers(kube: Kube, ns: str) -> None:
    for obj in objects(kube, ns):
        assert obj is not None
        assert not obj["metadata"].get("finalizers"), obj["metadata"]


@pytest.fixture
def own_namespace(api: client.ApiClient) -> Iterator[str]:
    """A namespace the test itself deletes (and removes after, if the test failed)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except client.ApiException as e:
        if e.status != 404:
            raise


def test_objects_go_while_the_operator_is_stopped(
    kube: Kube, namespace: str, make_operator: Callable[..., OperatorProcess]
) -> None:
    op = make_operator(namespaces=[namespace])
    populate(kube, namespace)
    wait_reconciled(kube, namespace)
    assert_no_finalizers(kube, namespace)
    assert kube.get("apps/v1", "Deployment", namespace, "iris-predictor") is not None

    op.stop()
    for kind, name in (
        ("InferenceService", "iris"),
        ("TrainingJob", "later"),
        ("ModelVersion", "iris-v1"),
    ):
        kube.delete(api.API_VERSION, kind, namespace, name)
        wait_for(
            lambda k=kind, n=name: kube.get(api.API_VERSION, k, namespace, n) is None,
            timeout=30,
            what=f"{kind} {name} to be deleted with the operator stopped",
        )
    # The garbage collector, not the operator, removes the children.
    wait_for(
        lambda: kube.get("apps/v1", "Deployment", namespace, "iris-predictor") is None,
        timeout=60,
        what="the predictor Deployment to be garbage-collected",
    )


def test_a_namespace_goes_while_the_operator_is_stopped(
    api: client.ApiClient,
    kube: Kube,
    own_namespace: str,
    make_operator: Callable[..., OperatorProcess],
) -> None:
    ns = own_namespace
    op = make_operator(namespaces=[ns])
    populate(kube, ns)
    wait_reconciled(kube, ns)
    op.stop()

    core = client.CoreV1Api(api)
    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except client.ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    wait_for(gone, timeout=180, interval=1, what=f"namespace {ns} to be deleted")


def test_legacy_finalizers_are_removed_when_the_operator_starts(
    kube: Kube, namespace: str, make_operator: Callable[..., OperatorProcess]
) -> None:
    ns = namespace
    # What an older operator left behind: its finalizer on the InferenceService and the
    # unfinished TrainingJob, and one InferenceService already stuck in deletion.
    populate(kube, ns)
    assert kube.create(isvc_body(ns, "stuck")) is not None
    for kind, name in (
        ("InferenceService", "iris"),
        ("InferenceService", "stuck"),
        ("TrainingJob", "later"),
    ):
        kube.patch(
            api.API_VERSION, kind, ns, name, {"metadata": {"finalizers": [LEGACY_FINALIZER]}}
        )
    kube.delete(api.API_VERSION, "InferenceService", ns, "stuck")
    stuck = kube.get(api.API_VERSION, "InferenceService", ns, "stuck")
    assert stuck is not None and stuck["metadata"].get("deletionTimestamp")

    make_operator(namespaces=[ns])
    wait_for(
        lambda: kube.get(api.API_VERSION, "InferenceService", ns, "stuck") is None,
        timeout=TIMEOUT,
        what="the stuck InferenceService to be released",
    )
    wait_reconciled(kube, ns)
    wait_for(
        lambda: all(not (o or {}).get("metadata", {}).get("finalizers") for o in objects(kube, ns)),
        timeout=TIMEOUT,
        what="the legacy finalizers to be removed",
    )
