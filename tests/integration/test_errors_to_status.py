"""Failures to act reach the object at once: a condition with reason and message, a Warning
Event, and both clear when the cause goes away (issue #18).

The API server refuses the child for real: a ResourceQuota of zero Jobs (for a TrainingJob)
or zero Services (for an InferenceService) in the test's namespace makes the operator's
apply a 403 "exceeded quota", as a full Service range or a missing permission would make
it fail in a real cluster. Deleting the quota is the recovery.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kubernetes import client

from kubeloop.kube import Kube
from kubeloop_runtime.api import API_VERSION
from tests.integration.harness import OperatorProcess, condition, wait_for
from tests.integration.test_inferenceservice import create_isvc, create_mv
from tests.integration.test_trainingjob import training_job

# The failure must show within a few seconds of the object's creation (the first reconcile
# fails and is told at once; generous for a loaded 2-core machine).
TOLD_WITHIN = 15
RECOVERED_WITHIN = 60


def quota(api_client: client.ApiClient, namespace: str, hard: dict[str, str]) -> None:
    client.CoreV1Api(api_client).create_namespaced_resource_quota(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "none-left"},
            "spec": {"hard": hard},
        },
    )


def drop_quota(api_client: client.ApiClient, namespace: str) -> None:
    client.CoreV1Api(api_client).delete_namespaced_resource_quota("none-left", namespace)


def events_of(api_client: client.ApiClient, namespace: str, name: str) -> list[Any]:
    items = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
    return [e for e in items if e.involved_object.name == name]


def told(
    kube: Kube, api_client: client.ApiClient, kind: str, namespace: str, name: str
) -> tuple[dict[str, Any], Any] | None:
    """(the Reconciled=False condition, its Warning Event) once both are there."""
    obj = kube.get(API_VERSION, kind, namespace, name)
    cond = condition(obj, "Reconciled")
    if cond.get("status") != "False":
        return None
    warnings = [
        e
        for e in events_of(api_client, namespace, name)
        if e.type == "Warning" and e.reason == cond.get("reason")
    ]
    return (cond, warnings[0]) if warnings else None


def test_a_refused_job_is_told_on_the_trainingjob_and_clears(
    kube: Kube, api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    quota(api, namespace, {"count/jobs.batch": "0"})
    time.sleep(1)  # the quota controller fills in status.used; until then it admits nothing
    created = time.monotonic()
    kube.create(training_job(namespace, "refused"))

    cond, event = wait_for(
        lambda: told(kube, api, "TrainingJob", namespace, "refused"),
        timeout=TOLD_WITHIN,
        what="the refused Job told on the TrainingJob",
    )
    print(f"told in {time.monotonic() - created:.1f}s: {cond['reason']}: {cond['message']}")
    assert cond["reason"] == "QuotaExceeded"
    assert cond["message"].startswith(f"Could not create Job {namespace}/refused-train: ")
    assert "exceeded quota: none-left" in cond["message"]
    assert event.message == cond["message"]
    tj = kube.get(API_VERSION, "TrainingJob", namespace, "refused")
    succeeded = condition(tj, "Succeeded")
    assert succeeded.get("status") == "Unknown", succeeded
    assert kube.list("batch/v1", "Job", namespace) == []

    # Failing the same way again writes nothing more: one Warning, however many retries.
    time.sleep(3)
    warnings = [e for e in events_of(api, namespace, "refused") if e.type == "Warning"]
    assert len(warnings) == 1, [(e.reason, e.message) for e in warnings]
    assert "kubeloop_reconcile_failures_total" in operator.metrics()

    drop_quota(api, namespace)
    wait_for(
        lambda: (
            condition(kube.get(API_VERSION, "TrainingJob", namespace, "refused"), "Reconciled").get(
                "status"
            )
            == "True"
        ),
        timeout=RECOVERED_WITHIN,
        what="the TrainingJob's Reconciled condition to clear",
    )
    assert len(kube.list("batch/v1", "Job", namespace)) == 1
    normal = [
        e
        for e in events_of(api, namespace, "refused")
        if e.type == "Normal" and e.reason == "ReconcileSucceeded"
    ]
    assert normal, "no Normal event on recovery"


def test_a_refused_service_is_told_on_the_inferenceservice_and_clears(
    kube: Kube,
    api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    artifacts_pvc: str,
    tmp_path: Path,
) -> None:
    create_mv(kube, namespace, tmp_path / "artifacts", 1)
    quota(api, namespace, {"services": "0"})
    time.sleep(1)
    create_isvc(kube, namespace, {"model": {"modelVersion": "iris-v1"}})

    cond, event = wait_for(
        lambda: told(kube, api, "InferenceService", namespace, "iris"),
        timeout=TOLD_WITHIN,
        what="the refused Service told on the InferenceService",
    )
    assert cond["reason"] == "QuotaExceeded"
    assert f"Could not apply Service {namespace}/iris-predictor: " in cond["message"]
    assert event.message == cond["message"]
    isvc = kube.get(API_VERSION, "InferenceService", namespace, "iris")
    ready = condition(isvc, "Ready")
    assert ready.get("status") == "False", ready
    assert ready.get("reason") == "QuotaExceeded", ready

    drop_quota(api, namespace)

    def recovered() -> bool:
        obj = kube.get(API_VERSION, "InferenceService", namespace, "iris")
        return (
            condition(obj, "Reconciled").get("status") == "True"
            and kube.get("v1", "Service", namespace, "iris-predictor") is not None
        )

    wait_for(recovered, timeout=RECOVERED_WITHIN, what="the InferenceService to recover")
    obj = kube.get(API_VERSION, "InferenceService", namespace, "iris")
    # The InferenceService's own conditions took over again from the failure's.
    assert condition(obj, "Ready").get("reason") != "QuotaExceeded"
