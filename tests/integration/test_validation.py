"""Data validation before training, through the operator on the real control plane.

A first TrainingJob registers the reference version; later ones name it in
``spec.validation`` and train on a new dataset with an unseen category and values beyond
the seen range. The operator hands the reference ModelVersion to the pod, the real
``kubeloop-train`` (behind the kwok pod) validates, and the outcome lands in the
TrainingJob's status: the run's reason, the ``DataValidated`` condition listing each
column, ``status.validation``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from kubernetes import client

from kubeloop.kube import Kube
from tests.integration.harness import OperatorProcess, condition
from tests.integration.test_trainingjob import create, training_job, versions_of, wait_finished


def _csv(seed: int, shifted: bool = False) -> str:
    rng = np.random.default_rng(seed)
    n = 300
    x1 = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "x1": x1,
            "x2": rng.uniform(0.0, 10.0, size=n),
            "color": rng.choice(["red", "green", "blue"], size=n),
            "label": (x1 > 0).astype(int),
        }
    )
    if shifted:
        frame.loc[:14, "x2"] = 40.0  # 5% beyond the seen maximum
        frame.loc[:5, "color"] = "purple"  # never seen in training
    return frame.to_csv(index=False)


def _spec(key: str, **fields: Any) -> dict[str, Any]:
    return {
        "dataset": {"configMap": {"name": "data", "key": key}, "target": "label"},
        "preprocessing": {"categorical": ["color"]},
        **fields,
    }


def test_anomalies_fail_or_warn_per_policy_and_are_listed_per_column(
    kube: Kube,
    namespace: str,
    artifacts_pvc: str,
    operator: OperatorProcess,
    kubelet: Any,
) -> None:
    ns = namespace
    client.CoreV1Api(kube.api_client).create_namespaced_config_map(
        ns,
        {
            "metadata": {"name": "data"},
            "data": {"v1.csv": _csv(0), "same.csv": _csv(1), "new.csv": _csv(2, shifted=True)},
        },
    )
    create(kube, training_job(ns, "tab-1", model="tab", **_spec("v1.csv")))
    first = wait_finished(kube, ns, "tab-1", operator)
    assert first["status"]["reason"] == "Trained", first["status"]
    assert "validation" not in first["status"]  # no spec.validation: no check, no condition

    check = {"validation": {"reference": "tab-v1"}}
    create(kube, training_job(ns, "tab-fail", model="tab", **_spec("new.csv", **check)))
    warn = {"validation": {"reference": "tab-v1", "policy": "warn"}}
    create(kube, training_job(ns, "tab-warn", model="tab", **_spec("new.csv", **warn)))
    create(kube, training_job(ns, "tab-same", model="tab", **_spec("same.csv", **check)))

    failed = wait_finished(kube, ns, "tab-fail", operator)
    c = condition(failed, "Succeeded")
    assert (c["status"], c["reason"]) == ("False", "DataValidationFailed"), c
    dv = condition(failed, "DataValidated")
    assert (dv["status"], dv["reason"]) == ("False", "AnomaliesFound"), dv
    assert "color: UnseenCategory" in dv["message"] and "'purple'" in dv["message"]
    assert "x2: OutOfRange" in dv["message"] and "ModelVersion tab-v1" in dv["message"]
    kinds = [(a["column"], a["kind"]) for a in failed["status"]["validation"]["anomalies"]]
    assert kinds == [("color", "UnseenCategory"), ("x2", "OutOfRange")]
    assert "modelVersion" not in failed["status"]

    warned = wait_finished(kube, ns, "tab-warn", operator)
    assert condition(warned, "Succeeded")["status"] == "True", warned["status"]
    assert condition(warned, "DataValidated")["reason"] == "AnomaliesFound"
    assert warned["status"]["validation"]["policy"] == "warn"
    assert warned["status"]["validation"]["total"] == 2

    same = wait_finished(kube, ns, "tab-same", operator)
    assert condition(same, "Succeeded")["status"] == "True", same["status"]
    dv = condition(same, "DataValidated")
    assert (dv["status"], dv["reason"]) == ("True", "NoAnomalies"), dv
    # The failed run registered nothing; the warned and the clean one a version each.
    registered = {v["spec"]["lineage"]["trainingJob"] for v in versions_of(kube, ns, "tab")}
    assert registered == {"tab-1", "tab-warn", "tab-same"}


def test_admission_refuses_validation_without_a_reference(kube: Kube, namespace: str) -> None:
    body = training_job(namespace, "no-ref", **_spec("v1.csv", validation={"policy": "warn"}))
    try:
        kube.create(body)
    except client.ApiException as e:
        assert e.status == 422 and "spec.validation.reference" in str(e.body)
    else:
        raise AssertionError("a TrainingJob with spec.validation and no reference was admitted")
