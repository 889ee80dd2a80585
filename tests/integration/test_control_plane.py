"""The local control plane behaves like a real cluster: controllers, scheduler, GC, RBAC.

These guard the foundation every other integration test stands on.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.integration.harness import Cluster, wait_for

RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _pod_spec(restart: str = "Always") -> dict[str, Any]:
    return {
        "restartPolicy": restart,
        "containers": [{"name": "main", "image": "busybox:1.36", "securityContext": RESTRICTED}],
    }


def test_deployment_rolls_out_three_ready_pods(api: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": _pod_spec()},
            },
        },
    )

    def ready() -> bool:
        d = apps.read_namespaced_deployment("web", namespace)
        return (d.status.ready_replicas or 0) == 3 and (d.status.available_replicas or 0) == 3

    wait_for(ready, timeout=90, what="3 ready replicas of deployment/web")
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    assert all(p.spec.node_name == "kwok-node-0" for p in pods), "the scheduler bound every pod"
    assert all(p.status.pod_ip and p.status.pod_ip.startswith("127.1.") for p in pods)


def test_job_pod_completes(api: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once"},
            "spec": {"backoffLimit": 0, "template": {"spec": _pod_spec("Never")}},
        },
    )

    def complete() -> bool:
        j = batch.read_namespaced_job("once", namespace)
        return (j.status.succeeded or 0) == 1 and any(
            c.type == "Complete" and c.status == "True" for c in j.status.conditions or []
        )

    wait_for(complete, timeout=90, what="job/once to complete")
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="job-name=once")
    assert [p.status.phase for p in pods.items] == ["Succeeded"]


def test_owned_child_is_garbage_collected(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "owner"}, "data": {"a": "1"}}
    )
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner.metadata.uid,
                    }
                ],
            },
            "data": {"b": "2"},
        },
    )
    core.delete_namespaced_config_map("owner", namespace)

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", namespace)
        except client.ApiException as e:
            return e.status == 404
        return False

    wait_for(child_gone, timeout=90, what="the garbage collector to delete configmap/child")


def test_service_account_without_permissions_is_forbidden(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    as_sa = client.CoreV1Api(cluster.impersonating(f"system:serviceaccount:{namespace}:nobody"))
    with pytest.raises(client.ApiException) as exc:
        as_sa.list_namespaced_pod(namespace)
    assert exc.value.status == 403
    with pytest.raises(client.ApiException) as exc:
        as_sa.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    assert exc.value.status == 403
    # ...and the admin still can: the 403 is RBAC, not a broken server.
    assert core.list_namespaced_pod(namespace).items is not None


def test_pod_security_admission_rejects_privileged_pods(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(client.ApiException) as exc:
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": "root"},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
            },
        )
    assert exc.value.status == 403
    assert "violates PodSecurity" in exc.value.body
