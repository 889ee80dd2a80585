"""The InferenceService controller against the real control plane.

ModelVersions are created directly (as a TrainingJob would register them) and the real
operator's ModelVersion controller makes them Ready and confirms their aliases; kwok runs the
predictor pods (Ready at once), so these tests watch Deployments roll, not models answer.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from kubeloop.kube import Kube
from kubeloop.reconcile import inferenceservice as r
from kubeloop_runtime import api
from tests.integration.harness import OperatorProcess, condition, is_true, wait_for
from tests.integration.harness import metric as scraped

ISVC = "iris"
STABLE = "iris-predictor"
CANARY = "iris-predictor-canary"
TIMEOUT = 90


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def artifacts(artifacts_pvc: str, tmp_path: Path) -> Path:
    """The local directory the operator verifies artifacts in (see conftest)."""
    return tmp_path / "artifacts"


def model_version(
    namespace: str, version: int, sha256: str, aliases: list[str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "ModelVersion",
        "metadata": {"name": f"iris-v{version}", "namespace": namespace},
        "spec": {
            "model": "iris",
            "version": version,
            "task": "classification",
            "artifact": {
                "uri": f"pvc://kubeloop-artifacts/{namespace}/iris-train-{version}/model.skops",
                "sha256": sha256,
                "format": "skops",
                "sizeBytes": 20480,
            },
            "framework": {
                "name": "scikit-learn",
                "python": "3.11.7",
                "sklearn": "1.5.2",
                "numpy": "2.1.0",
                "pandas": "2.2.3",
            },
            "signature": {
                "inputs": [
                    {"name": n, "dtype": "float64"}
                    for n in (
                        "sepal length (cm)",
                        "sepal width (cm)",
                        "petal length (cm)",
                        "petal width (cm)",
                    )
                ],
                "output": {"name": "predict", "dtype": "int64", "classes": [0, 1, 2]},
            },
            "metrics": {"accuracy": 0.9 + version / 100, "f1": 0.9},
            "dataset": {
                "sha256": "c" * 64,
                "rows": 150,
                "columns": 5,
                "source": "builtin:iris",
            },
            "lineage": {"trainingJob": f"iris-train-{version}"},
            "gate": {"passed": True, "message": ""},
            "aliases": aliases or [],
        },
    }


def create_mv(
    kube: Kube, namespace: str, store: Path, version: int, aliases: list[str] | None = None
) -> None:
    """Register iris-v<version> as training would: artifact on the store, then the object."""
    blob = os.urandom(20480)  # never loaded here: kwok runs no server
    path = store / namespace / f"iris-train-{version}" / "model.skops"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    kube.create(model_version(namespace, version, hashlib.sha256(blob).hexdigest(), aliases))

    def ready() -> bool:
        mv = kube.get(api.API_VERSION, "ModelVersion", namespace, f"iris-v{version}")
        ok = is_true(mv, "Ready")
        confirmed = ((mv or {}).get("status") or {}).get("aliases") or []
        return ok and all(a in confirmed for a in aliases or [])

    wait_for(ready, timeout=TIMEOUT, what=f"ModelVersion iris-v{version} to be Ready")


def create_isvc(kube: Kube, namespace: str, spec: dict[str, Any]) -> None:
    kube.create(
        {
            "apiVersion": api.API_VERSION,
            "kind": "InferenceService",
            "metadata": {"name": ISVC, "namespace": namespace},
            "spec": spec,
        }
    )


def isvc(kube: Kube, namespace: str) -> dict[str, Any]:
    obj = kube.get(api.API_VERSION, "InferenceService", namespace, ISVC)
    assert obj is not None
    return obj


def patch_isvc(kube: Kube, namespace: str, patch: dict[str, Any]) -> None:
    kube.patch(api.API_VERSION, "InferenceService", namespace, ISVC, patch)


def wait_ready(kube: Kube, namespace: str, serving: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = isvc(kube, namespace)
        st = obj.get("status") or {}
        ok = is_true(obj, "Ready")
        return obj if ok and st.get("servingVersion") == serving else None

    return wait_for(check, timeout=TIMEOUT, what=f"InferenceService serving {serving} Ready")


def deployment(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get("apps/v1", "Deployment", namespace, name)


def deployments(kube: Kube, namespace: str) -> list[str]:
    return sorted(
        d["metadata"]["name"]
        for d in kube.list(
            "apps/v1", "Deployment", namespace, labels={api.LABEL_INFERENCESERVICE: ISVC}
        )
        if not d["metadata"].get("deletionTimestamp")
    )


def env(dep: dict[str, Any]) -> dict[str, str]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in c["env"]}


def ready_pods(kube: Kube, namespace: str, role: str, version: str) -> int:
    pods = kube.list(
        "v1",
        "Pod",
        namespace,
        labels={api.LABEL_INFERENCESERVICE: ISVC, api.LABEL_ROLE: role},
    )
    n = 0
    for p in pods:
        if p["metadata"].get("deletionTimestamp"):
            continue
        if p["metadata"]["labels"].get(api.LABEL_MODELVERSION) != version:
            return -1  # a pod of another version is still there
        n += is_true(p, "Ready")
    return n


def metric(op: OperatorProcess, name: str, **labels: str) -> float:
    """The operator's current value of ``name`` for ``labels``; 0 when it has no such series."""
    return scraped(op.metrics(), name, **labels) or 0.0


# ----------------------------------------------------------------------------- tests


def test_serves_by_alias_and_rolls_when_the_alias_moves(
    kube: Kube, namespace: str, operator: OperatorProcess, artifacts: Path
) -> None:
    create_mv(kube, namespace, artifacts, 1, aliases=["production"])
    create_mv(kube, namespace, artifacts, 2)
    create_isvc(kube, namespace, {"model": {"model": "iris", "alias": "production"}, "replicas": 2})

    obj = wait_ready(kube, namespace, "iris-v1")
    st = obj["status"]
    assert st["url"] == f"http://{STABLE}.{namespace}.svc.cluster.local"
    assert st["modelName"] == "iris"
    assert st["readyReplicas"] == 2
    assert st["phase"] == "Ready"
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    assert condition(obj, "RolledOut")["status"] == "True"
    assert st["traffic"] == [
        {
            "role": "stable",
            "modelVersion": "iris-v1",
            "percent": 100,
            "replicas": 2,
            "readyReplicas": 2,
        }
    ]

    dep = deployment(kube, namespace, STABLE)
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert '"name":"iris-v1"' in env(dep)["KUBELOOP_MODEL_VERSION"]
    assert dep["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    # The restricted namespace admitted the pods: two of them run v1.
    assert ready_pods(kube, namespace, "stable", "iris-v1") == 2

    svc = kube.get("v1", "Service", namespace, STABLE)
    assert svc is not None
    assert svc["spec"]["selector"] == {
        api.LABEL_INFERENCESERVICE: ISVC,
        api.LABEL_COMPONENT: "predictor",
    }
    assert svc["spec"]["ports"][0]["port"] == 80
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert kube.get("policy/v1", "PodDisruptionBudget", namespace, STABLE) is not None

    # Move the alias: ask for it on v2; the registry takes it from v1.
    kube.patch(
        api.API_VERSION, "ModelVersion", namespace, "iris-v2", {"spec": {"aliases": ["production"]}}
    )

    def names_v2() -> bool:
        dep = deployment(kube, namespace, STABLE)
        return dep is not None and '"name":"iris-v2"' in env(dep)["KUBELOOP_MODEL_VERSION"]

    wait_for(names_v2, timeout=15, what="the stable Deployment to name iris-v2")
    wait_ready(kube, namespace, "iris-v2")
    wait_for(
        lambda: ready_pods(kube, namespace, "stable", "iris-v2") == 2,
        timeout=TIMEOUT,
        what="two ready iris-v2 pods and no iris-v1 pod",
    )
    assert deployments(kube, namespace) == [STABLE]
    assert metric(op := operator, "kubeloop_rollouts_total", inferenceservice=ISVC) == 2
    assert (
        metric(
            op,
            "controller_runtime_reconcile_total",
            controller="inferenceservice",
            result="success",
        )
        > 0
    )


def test_canary_split_rollback_and_promotion(
    kube: Kube, namespace: str, operator: OperatorProcess, artifacts: Path
) -> None:
    create_mv(kube, namespace, artifacts, 1)
    create_mv(kube, namespace, artifacts, 2)
    canary = {"modelVersion": "iris-v2", "trafficPercent": 25}
    create_isvc(
        kube, namespace, {"model": {"modelVersion": "iris-v1"}, "replicas": 3, "canary": canary}
    )

    def canary_ready() -> dict[str, Any] | None:
        obj = isvc(kube, namespace)
        ok = condition(obj, "CanaryReady").get("status") == "True"
        return obj if ok and condition(obj, "Ready").get("status") == "True" else None

    obj = wait_for(canary_ready, timeout=TIMEOUT, what="the canary to be Ready")
    stable_dep, canary_dep = (
        deployment(kube, namespace, STABLE),
        deployment(kube, namespace, CANARY),
    )
    assert stable_dep is not None
    assert canary_dep is not None
    assert stable_dep["spec"]["replicas"] == 3
    assert canary_dep["spec"]["replicas"] == 1  # 1 / (3 + 1) = 25 %
    assert '"role":"canary"' in env(canary_dep)["KUBELOOP_SERVING"]
    assert ready_pods(kube, namespace, "canary", "iris-v2") == 1
    assert obj["status"]["canaryVersion"] == "iris-v2"
    assert {t["role"]: t["percent"] for t in obj["status"]["traffic"]} == {
        "stable": 75,
        "canary": 25,
    }

    # Rollback: the canary goes away, the stable is untouched.
    generation = stable_dep["metadata"]["generation"]
    patch_isvc(kube, namespace, r.rollback_patch())
    wait_for(lambda: deployments(kube, namespace) == [STABLE], timeout=30, what="one Deployment")
    after = deployment(kube, namespace, STABLE)
    assert after is not None
    assert after["metadata"]["generation"] == generation
    wait_for(
        lambda: not isvc(kube, namespace)["status"].get("canaryVersion"),
        timeout=30,
        what="status.canaryVersion cleared",
    )

    # Canary again, then promote it by spec change.
    patch_isvc(kube, namespace, {"spec": {"canary": canary}})
    wait_for(canary_ready, timeout=TIMEOUT, what="the canary to be Ready again")
    spec = api.InferenceServiceSpec.model_validate(isvc(kube, namespace)["spec"])
    patch_isvc(kube, namespace, r.promotion_patch(spec, "iris-v2"))
    wait_ready(kube, namespace, "iris-v2")
    wait_for(lambda: deployments(kube, namespace) == [STABLE], timeout=30, what="one Deployment")
    wait_for(
        lambda: ready_pods(kube, namespace, "stable", "iris-v2") == 3,
        timeout=TIMEOUT,
        what="three ready iris-v2 stable pods",
    )
    assert metric(operator, "kubeloop_promotions_total", inferenceservice=ISVC) == 1
    rollbacks = metric(operator, "kubeloop_rollbacks_total", inferenceservice=ISVC, reason="manual")
    assert rollbacks == 1


def test_missing_model_version_then_recovers(
    kube: Kube, namespace: str, operator: OperatorProcess, artifacts: Path
) -> None:
    create_isvc(kube, namespace, {"model": {"modelVersion": "iris-v1"}})

    def not_found() -> bool:
        c = condition(isvc(kube, namespace), "Ready")
        return c.get("status") == "False" and c.get("reason") == "ModelVersionNotFound"

    wait_for(not_found, timeout=30, what="Ready=False ModelVersionNotFound")
    obj = isvc(kube, namespace)
    assert "iris-v1" in condition(obj, "Ready")["message"]
    assert condition(obj, "ModelResolved")["reason"] == "ModelVersionNotFound"
    assert obj["status"]["phase"] == "Pending"
    assert deployment(kube, namespace, STABLE) is None

    create_mv(kube, namespace, artifacts, 1)
    wait_ready(kube, namespace, "iris-v1")


def test_restart_changes_nothing(
    kube: Kube, namespace: str, operator: OperatorProcess, artifacts: Path
) -> None:
    create_mv(kube, namespace, artifacts, 1)
    create_isvc(kube, namespace, {"model": {"modelVersion": "iris-v1"}, "replicas": 2})
    wait_ready(kube, namespace, "iris-v1")
    before = deployment(kube, namespace, STABLE)
    assert before is not None
    rs_before = kube.list("apps/v1", "ReplicaSet", namespace, labels={api.LABEL_ROLE: "stable"})
    hashes = {rs["metadata"]["labels"]["pod-template-hash"] for rs in rs_before}
    assert len(hashes) == 1

    operator.settled()
    operator.restart()
    wait_for(
        lambda: (
            metric(
                operator,
                "controller_runtime_reconcile_total",
                controller="inferenceservice",
                result="success",
            )
            > 0
        ),
        timeout=TIMEOUT,
        what="the restarted operator to reconcile the InferenceService",
    )
    operator.settled()
    # A restart at steady state reconciles everything again from its caches and writes
    # nothing: no child re-applied, no status patched, no finalizer, no Event.
    assert operator.writes() == 0, operator.log()[-3000:]
    after = deployment(kube, namespace, STABLE)
    assert after is not None
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]
    rs_after = kube.list("apps/v1", "ReplicaSet", namespace, labels={api.LABEL_ROLE: "stable"})
    assert {rs["metadata"]["labels"]["pod-template-hash"] for rs in rs_after} == hashes
    assert condition(isvc(kube, namespace), "Ready")["status"] == "True"


def test_hpa_and_pdb_follow_the_spec(
    kube: Kube, namespace: str, operator: OperatorProcess, artifacts: Path
) -> None:
    create_mv(kube, namespace, artifacts, 1)
    create_isvc(kube, namespace, {"model": {"modelVersion": "iris-v1"}, "replicas": 1})
    wait_ready(kube, namespace, "iris-v1")

    def hpa() -> dict[str, Any] | None:
        return kube.get("autoscaling/v2", "HorizontalPodAutoscaler", namespace, STABLE)

    def pdb() -> dict[str, Any] | None:
        return kube.get("policy/v1", "PodDisruptionBudget", namespace, STABLE)

    assert hpa() is None
    assert pdb() is None

    patch_isvc(
        kube,
        namespace,
        {
            "spec": {
                "autoscaling": {
                    "minReplicas": 2,
                    "maxReplicas": 4,
                    "targetCpuUtilizationPercentage": 70,
                }
            }
        },
    )
    h = wait_for(hpa, timeout=30, what="the HPA")
    assert h["spec"]["minReplicas"] == 2
    assert h["spec"]["maxReplicas"] == 4
    assert h["spec"]["scaleTargetRef"]["name"] == STABLE
    p = wait_for(pdb, timeout=30, what="the PDB")
    assert p["spec"]["minAvailable"] == 1
    # The Deployment no longer claims spec.replicas: the HPA owns it.
    dep = deployment(kube, namespace, STABLE)
    assert dep is not None
    owners = [
        f["manager"]
        for f in dep["metadata"]["managedFields"]
        if "f:replicas" in str(f.get("fieldsV1", {}).get("f:spec", {}))
    ]
    assert "kubeloop" not in owners

    patch_isvc(kube, namespace, {"spec": {"autoscaling": None, "replicas": 1}})
    wait_for(lambda: hpa() is None, timeout=30, what="the HPA to be deleted")
    wait_for(lambda: pdb() is None, timeout=30, what="the PDB to be deleted")
    wait_for(
        lambda: (deployment(kube, namespace, STABLE) or {}).get("spec", {}).get("replicas") == 1,
        timeout=30,
        what="the Deployment back at 1 replica",
    )
