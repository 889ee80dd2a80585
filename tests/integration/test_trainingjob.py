"""The TrainingJob controller against the real control plane, with real training.

The test kubelet (tests/integration/kubelet.py) runs the real ``kubeloop-train`` behind each
training pod and reports its exit code and termination message as a kubelet would; the
kube-controller-manager's Job controller and garbage collector do the rest.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import OperatorProcess, condition, metric, wait_for

TIMEOUT = 120
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}


@pytest.fixture
def artifacts(artifacts_pvc: str) -> str:
    return artifacts_pvc


def training_job(namespace: str, name: str, model: str = "iris", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "dataset": {"builtin": "iris"},
        "estimator": {"type": "LogisticRegression", "hyperparameters": {"max_iter": 300}},
        # Small and fast: no ONNX export.
        "artifact": {"onnx": False},
    }
    body.update(spec)
    return {
        "apiVersion": api.API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def create(kube: Kube, obj: dict[str, Any]) -> dict[str, Any]:
    created = kube.create(obj)
    assert created is not None, f"{obj['kind']} {obj['metadata']['name']} already exists"
    return created


def tj(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    obj = kube.get(api.API_VERSION, "TrainingJob", ns, name)
    assert obj is not None
    return obj


def finished(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    obj = tj(kube, ns, name)
    c = condition(obj, "Succeeded")
    return obj if c.get("status") in ("True", "False") else None


def wait_finished(kube: Kube, ns: str, name: str, op: OperatorProcess) -> dict[str, Any]:
    try:
        return wait_for(
            lambda: finished(kube, ns, name), timeout=TIMEOUT, what=f"TrainingJob {name} to finish"
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- operator log ---\n{op.log()[-6000:]}") from e


def jobs_of(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    return kube.list("batch/v1", "Job", ns, labels={api.LABEL_TRAININGJOB: name})


def versions_of(kube: Kube, ns: str, model: str) -> list[dict[str, Any]]:
    return kube.list(api.API_VERSION, "ModelVersion", ns, labels={api.LABEL_MODEL: model})


# ------------------------------------------------------------------------------ tests


def test_trains_registers_and_keeps_the_version_when_deleted(
    kube: Kube,
    namespace: str,
    artifacts: str,
    operator: OperatorProcess,
    kubelet: Any,
) -> None:
    ns = namespace
    owner = create(kube, training_job(ns, "iris-a"))

    # Exactly one Job, owned by the TrainingJob, restricted, and its pod admitted.
    job = wait_for(lambda: kube.get("batch/v1", "Job", ns, "iris-a-train"), what="the Job")
    (ref,) = job["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"]) == (
        "TrainingJob",
        "iris-a",
        owner["metadata"]["uid"],
    )
    assert ref["controller"] is True
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = pod_spec["containers"][0]["securityContext"]
    assert {k: csc[k] for k in RESTRICTED_CONTAINER} == RESTRICTED_CONTAINER
    pods = wait_for(
        lambda: kube.list("v1", "Pod", ns, labels={api.LABEL_TRAININGJOB: "iris-a"}),
        what="the training pod to be admitted (restricted Pod Security)",
    )
    assert len(pods) == 1

    done = wait_finished(kube, ns, "iris-a", operator)
    st = done["status"]
    assert condition(done, "Succeeded")["status"] == "True", st
    assert condition(done, "Succeeded")["reason"] == "Trained"
    assert condition(done, "Registered")["status"] == "True"
    assert condition(done, "JobCreated")["status"] == "True"
    assert st["phase"] == "Succeeded"
    assert st["modelVersion"] == "iris-v1" and st["version"] == 1
    assert st["metrics"]["accuracy"] >= 0.9
    assert st["jobName"] == "iris-a-train"
    assert st["startTime"] and st["completionTime"]
    assert st["observedGeneration"] == done["metadata"]["generation"]
    assert len(jobs_of(kube, ns, "iris-a")) == 1

    mv = kube.get(api.API_VERSION, "ModelVersion", ns, "iris-v1")
    assert mv is not None
    spec = api.ModelVersionSpec.model_validate(mv["spec"])
    assert spec.metrics["accuracy"] >= 0.9
    assert spec.metrics["accuracy"] == st["metrics"]["accuracy"]
    assert spec.lineage.training_job == "iris-a"
    assert spec.lineage.image == "kubeloop/runtime:test"
    assert spec.gate.passed is True
    assert spec.artifact.uri == f"pvc://kubeloop-artifacts/{ns}/iris-a/model.skops"
    labels = mv["metadata"]["labels"]
    assert labels[api.LABEL_MODEL] == "iris"
    assert labels[api.LABEL_VERSION] == "1"
    assert labels[api.LABEL_TRAININGJOB] == "iris-a"
    assert not mv["metadata"].get("ownerReferences")

    # The operator sees the artifact store: it verifies the sha256 and marks it Ready.
    def verified() -> dict[str, Any] | None:
        m = kube.get(api.API_VERSION, "ModelVersion", ns, "iris-v1")
        return m if condition(m or {}, "Ready").get("status") == "True" else None

    mv = wait_for(verified, timeout=30, what="iris-v1 Ready")
    assert condition(mv, "ArtifactVerified")["status"] == "True"
    assert condition(mv, "Ready")["reason"] == "ArtifactVerified"

    text = operator.metrics()
    runs = metric(
        text, "kubeloop_training_runs_total", namespace=ns, model="iris", outcome="succeeded"
    )
    assert runs == 1.0
    # The ModelVersion controller exports the version's metrics at the end of its reconcile.
    acc = wait_for(
        lambda: metric(
            operator.metrics(),
            "kubeloop_model_version_metric",
            namespace=ns,
            model="iris",
            version="1",
            metric="accuracy",
        ),
        timeout=30,
        what="kubeloop_model_version_metric for iris-v1",
    )
    assert acc == spec.metrics["accuracy"]
    assert "kubeloop_training_duration_seconds_count" in text
    assert 'controller_runtime_reconcile_total{controller="trainingjob",result="success"}' in text

    # Deleting the TrainingJob garbage-collects its Job (kube-controller-manager), never
    # the ModelVersion: the registry outlives the run.
    kube.delete(api.API_VERSION, "TrainingJob", ns, "iris-a", propagation="Foreground")
    wait_for(
        lambda: (
            kube.get("batch/v1", "Job", ns, "iris-a-train") is None
            and kube.get(api.API_VERSION, "TrainingJob", ns, "iris-a") is None
        ),
        timeout=60,
        what="the TrainingJob and its Job to be deleted",
    )
    assert kube.get(api.API_VERSION, "ModelVersion", ns, "iris-v1") is not None


def test_bad_data_fails_with_the_trainers_reason(
    kube: Kube,
    namespace: str,
    artifacts: str,
    operator: OperatorProcess,
    kubelet: Any,
) -> None:
    ns = namespace
    csv = "a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30))
    client.CoreV1Api(kube.api_client).create_namespaced_config_map(
        ns, {"metadata": {"name": "data"}, "data": {"train.csv": csv}}
    )
    create(
        kube,
        training_job(
            ns,
            "bad-data",
            model="tabular",
            dataset={"configMap": {"name": "data", "key": "train.csv"}, "target": "nope"},
            runPolicy={"backoffLimit": 2},
        ),
    )
    done = wait_finished(kube, ns, "bad-data", operator)
    c = condition(done, "Succeeded")
    assert (c["status"], c["reason"]) == ("False", "DataError"), c
    assert "nope" in c["message"]
    assert done["status"]["phase"] == "Failed"
    assert condition(done, "Registered")["status"] == "False"
    assert "modelVersion" not in done["status"]
    assert versions_of(kube, ns, "tabular") == []
    # Exit code 2 fails the Job at once (podFailurePolicy): one pod, no retries.
    assert len(kube.list("v1", "Pod", ns, labels={api.LABEL_TRAININGJOB: "bad-data"})) == 1
    events = client.CoreV1Api(kube.api_client).list_namespaced_event(
        ns, field_selector="involvedObject.name=bad-data"
    )
    assert any(e.reason == "DataError" and e.type == "Warning" for e in events.items)


def test_quality_gate_failure_ends_with_its_reason(
    kube: Kube,
    namespace: str,
    artifacts: str,
    operator: OperatorProcess,
    kubelet: Any,
) -> None:
    """A weak model misses its gate: Succeeded=False, QualityGateFailed, at the first try,
    and it is registered with gate.passed=false and Ready=False: kept, never served."""
    ns = namespace
    create(
        kube,
        training_job(
            ns,
            "weak",
            estimator={"type": "DecisionTreeClassifier", "hyperparameters": {"max_depth": 1}},
            qualityGate={"thresholds": [{"metric": "accuracy", "min": 0.999}]},
            runPolicy={"backoffLimit": 2},
        ),
    )
    done = wait_finished(kube, ns, "weak", operator)
    c = condition(done, "Succeeded")
    assert (c["status"], c["reason"]) == ("False", "QualityGateFailed"), c
    assert "0.999" in c["message"]
    st = done["status"]
    assert st["phase"] == "Failed"
    assert st["gate"]["passed"] is False
    assert st["metrics"]["accuracy"] < 0.999
    assert condition(done, "Registered")["status"] == "True"
    assert st["modelVersion"] == "iris-v1"
    assert "never served" in c["message"]
    (mv,) = versions_of(kube, ns, "iris")
    assert mv["spec"]["gate"]["passed"] is False
    assert mv["spec"]["lineage"]["trainingJob"] == "weak"

    def refused() -> dict[str, Any] | None:
        ready = condition(kube.get(api.API_VERSION, "ModelVersion", ns, "iris-v1") or {}, "Ready")
        return ready if ready.get("reason") == "QualityGateFailed" else None

    assert (
        wait_for(refused, timeout=60, what="iris-v1 Ready=False QualityGateFailed")["status"]
        == "False"
    )
    # Exit code 3 fails the Job at once (podFailurePolicy): one pod, no retries.
    assert len(kube.list("v1", "Pod", ns, labels={api.LABEL_TRAININGJOB: "weak"})) == 1
    runs = metric(
        operator.metrics(),
        "kubeloop_training_runs_total",
        namespace=ns,
        model="iris",
        outcome="gate_failed",
    )
    assert runs == 1.0


def test_two_runs_of_one_model_get_versions_1_and_2(
    kube: Kube,
    namespace: str,
    artifacts: str,
    operator: OperatorProcess,
    kubelet: Any,
) -> None:
    ns = namespace
    create(kube, training_job(ns, "run-1"))
    create(kube, training_job(ns, "run-2", estimator={"type": "GaussianNB"}))
    a = wait_finished(kube, ns, "run-1", operator)
    b = wait_finished(kube, ns, "run-2", operator)
    assert condition(a, "Succeeded")["status"] == "True"
    assert condition(b, "Succeeded")["status"] == "True"
    assert {a["status"]["version"], b["status"]["version"]} == {1, 2}
    versions = versions_of(kube, ns, "iris")
    assert sorted(v["spec"]["version"] for v in versions) == [1, 2]
    lineage = {v["metadata"]["name"]: v["spec"]["lineage"]["trainingJob"] for v in versions}
    assert lineage[a["status"]["modelVersion"]] == "run-1"
    assert lineage[b["status"]["modelVersion"]] == "run-2"


def test_operator_killed_mid_run_creates_nothing_twice(
    kube: Kube,
    namespace: str,
    artifacts: str,
    operator: OperatorProcess,
    kubelet: Any,
) -> None:
    ns = namespace
    create(kube, training_job(ns, "crashy"))
    # SIGKILL right after the Job appears ...
    wait_for(lambda: jobs_of(kube, ns, "crashy"), timeout=60, interval=0.05, what="the Job")
    operator.kill()
    operator.start()
    wait_for(lambda: len(jobs_of(kube, ns, "crashy")) == 1, what="one Job after the restart")

    # ... and again right as the training pod completes (before or while registering).
    def pod_done() -> bool:
        pods = kube.list("v1", "Pod", ns, labels={api.LABEL_TRAININGJOB: "crashy"})
        return any((p.get("status") or {}).get("phase") == "Succeeded" for p in pods)

    wait_for(pod_done, timeout=TIMEOUT, interval=0.05, what="the training pod to complete")
    operator.kill()
    operator.start()

    done = wait_finished(kube, ns, "crashy", operator)
    assert condition(done, "Succeeded")["status"] == "True"
    assert len(jobs_of(kube, ns, "crashy")) == 1
    versions = versions_of(kube, ns, "iris")
    assert [v["metadata"]["name"] for v in versions] == ["iris-v1"]
    assert done["status"]["modelVersion"] == "iris-v1"
    # Another restart after the end changes nothing.
    operator.restart()

    # (controller_runtime_reconcile_total exists at 0 from the start: wait for a counted success.)
    def reconciled() -> bool:
        text = operator.metrics()
        n = metric(
            text, "controller_runtime_reconcile_total", controller="trainingjob", result="success"
        )
        return (n or 0) > 0

    wait_for(reconciled, timeout=30, what="the restarted operator to reconcile")
    assert len(jobs_of(kube, ns, "crashy")) == 1
    assert len(versions_of(kube, ns, "iris")) == 1


def test_suspended_run_says_so(
    kube: Kube, namespace: str, artifacts: str, operator: OperatorProcess
) -> None:
    ns = namespace
    create(kube, training_job(ns, "later", runPolicy={"suspend": True}))

    def suspended() -> dict[str, Any] | None:
        obj = tj(kube, ns, "later")
        return obj if condition(obj, "Suspended").get("status") == "True" else None

    obj = wait_for(suspended, timeout=60, what="the Suspended condition")
    assert condition(obj, "Succeeded")["status"] == "Unknown"
    assert condition(obj, "Succeeded")["reason"] == "Suspended"
    job = kube.get("batch/v1", "Job", ns, "later-train")
    assert job is not None and job["spec"]["suspend"] is True
    assert kube.list("v1", "Pod", ns, labels={api.LABEL_TRAININGJOB: "later"}) == []
