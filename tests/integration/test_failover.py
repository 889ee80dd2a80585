"""Two operator replicas with leader election on a Lease (issue #13).

Both replicas watch and cache; only the holder of the Lease writes. Killing the leader
(SIGKILL: no release) hands over to the other replica once the Lease has not been renewed
for its duration (15 s), and the new leader takes over a cluster at steady state without a
single write. A clean stop releases the Lease, and the other replica takes over at once.
The replicas run as the operator's ServiceAccount with the RBAC of manifests/base (the
harness installs its leader-election Role too).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from kubeloop.kube import Kube
from tests.integration.harness import OperatorProcess, is_true, wait_for
from tests.integration.harness import metric as scraped
from tests.integration.test_delete_stopped import isvc_body
from tests.integration.test_inferenceservice import model_version

LEASE_NAMESPACE = "kubeloop-system"
LEASE_DURATION = 15.0


def lease(kube: Kube, name: str) -> dict[str, Any] | None:
    return kube.get("coordination.k8s.io/v1", "Lease", LEASE_NAMESPACE, name)


def holder(kube: Kube, name: str) -> str | None:
    spec = (lease(kube, name) or {}).get("spec") or {}
    return spec.get("holderIdentity") or None


def leads(op: OperatorProcess) -> bool:
    return (scraped(op.metrics(), "leader_election_master_status") or 0) == 1


def pair(
    make_operator: Callable[..., OperatorProcess], namespace: str
) -> tuple[str, dict[str, OperatorProcess]]:
    lease_name = f"kubeloop-{uuid.uuid4().hex[:8]}"
    ops = {
        who: make_operator(
            namespaces=[namespace],
            env={
                "KUBELOOP_LEADER_ELECTION": "true",
                "KUBELOOP_LEASE_NAME": lease_name,
                "KUBELOOP_LEASE_NAMESPACE": LEASE_NAMESPACE,
                "POD_NAME": who,
            },
        )
        for who in ("replica-a", "replica-b")
    }
    return lease_name, ops


def serve(kube: Kube, namespace: str, replicas: int) -> None:
    kube.create(model_version(namespace, 1, "a" * 64))
    body = isvc_body(namespace)
    body["spec"]["replicas"] = replicas
    kube.create(body)


def wait_serving(kube: Kube, namespace: str, replicas: int) -> None:
    def ready() -> bool:
        obj = kube.get("kubeloop.io/v1alpha1", "InferenceService", namespace, "iris")
        dep = kube.get("apps/v1", "Deployment", namespace, "iris-predictor")
        return (
            is_true(obj, "Ready")
            and dep is not None
            and dep["spec"].get("replicas") == replicas
            and (dep.get("status") or {}).get("readyReplicas") == replicas
        )

    wait_for(ready, timeout=90, what=f"the InferenceService Ready on {replicas} replica(s)")


def test_killing_the_leader_hands_over_without_double_writes(
    kube: Kube,
    namespace: str,
    artifacts_pvc: str,  # the predictor pods mount it: without it they stay Pending
    make_operator: Callable[..., OperatorProcess],
) -> None:
    lease_name, ops = pair(make_operator, namespace)
    first = wait_for(lambda: holder(kube, lease_name), timeout=30, what="a leader")
    leader, follower = ops[first], ops[next(k for k in ops if k != first)]
    wait_for(lambda: leads(leader), timeout=30, what="the leader to start its controllers")

    serve(kube, namespace, replicas=1)
    wait_serving(kube, namespace, 1)
    leader.settled()
    assert leader.writes() > 0
    assert follower.writes() == 0  # it watched the same events and wrote nothing
    assert not leads(follower)

    leader.kill()
    killed = time.monotonic()
    wait_for(
        lambda: holder(kube, lease_name) not in (None, first),
        timeout=LEASE_DURATION + 15,
        interval=0.5,
        what="the follower to take the Lease",
    )
    handover = time.monotonic() - killed
    assert handover <= LEASE_DURATION + 5, f"handover took {handover:.1f}s"
    wait_for(lambda: leads(follower), timeout=30, what="the new leader to start")
    follower.settled()
    # The new leader found everything as it should be: not one write.
    assert follower.writes() == 0, follower.log()[-3000:]

    # And it is the one that acts now.
    kube.patch(
        "kubeloop.io/v1alpha1", "InferenceService", namespace, "iris", {"spec": {"replicas": 2}}
    )
    wait_serving(kube, namespace, 2)
    assert follower.writes() > 0
    spec = (lease(kube, lease_name) or {}).get("spec") or {}
    assert spec.get("leaseTransitions") == 1


def test_a_clean_stop_releases_the_lease_at_once(
    kube: Kube,
    namespace: str,
    artifacts_pvc: str,  # the predictor pods mount it: without it they stay Pending
    make_operator: Callable[..., OperatorProcess],
) -> None:
    lease_name, ops = pair(make_operator, namespace)
    first = wait_for(lambda: holder(kube, lease_name), timeout=30, what="a leader")
    leader, follower = ops[first], ops[next(k for k in ops if k != first)]
    wait_for(lambda: leads(leader), timeout=30, what="the leader to start its controllers")

    leader.stop()
    stopped = time.monotonic()
    wait_for(lambda: leads(follower), timeout=15, interval=0.2, what="the follower to lead")
    assert time.monotonic() - stopped < 8  # one retry period (2 s), not a lease duration
    serve(kube, namespace, replicas=1)
    wait_serving(kube, namespace, 1)
