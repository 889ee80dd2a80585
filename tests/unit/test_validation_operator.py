"""spec.validation in the operator: the reference passed to the pod, the condition, the loop."""

from __future__ import annotations

import json
from typing import Any

from kubeloop.builders import predictor, retrain
from kubeloop.builders.job import build_job
from kubeloop.conditions import get_condition
from kubeloop.reconcile import trainingjob as rec
from kubeloop.settings import Settings
from kubeloop_runtime import api

SETTINGS = Settings(runtime_image="example/runtime:1", image_pull_policy="Never")
SHA = "a" * 64


def spec(**fields: Any) -> api.TrainingJobSpec:
    return api.TrainingJobSpec.model_validate(
        {
            "model": "iris",
            "dataset": {"builtin": "iris"},
            "estimator": {"type": "LogisticRegression"},
            **fields,
        }
    )


def env(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


MV = {"metadata": {"name": "x"}, "spec": {"model": "iris", "version": 1}}


def test_a_reference_other_than_the_champion_is_passed_as_its_own_variable() -> None:
    s = spec(champion="iris-v2", validation={"reference": "iris-v1"})
    e = env(build_job("run", "ml", "uid", s, SETTINGS, champion=MV, reference=MV))
    assert json.loads(e["KUBELOOP_CHAMPION"])["metadata"]["name"] == "iris-v2"
    ref = json.loads(e["KUBELOOP_VALIDATION_REFERENCE"])
    assert ref == {"metadata": {"name": "iris-v1"}, "spec": MV["spec"]}


def test_the_champion_as_reference_is_passed_once() -> None:
    s = spec(champion="iris-v2", validation={"policy": "warn"})
    e = env(build_job("run", "ml", "uid", s, SETTINGS, champion=MV))
    assert "KUBELOOP_CHAMPION" in e and "KUBELOOP_VALIDATION_REFERENCE" not in e


def _result(validation: dict[str, Any], succeeded: bool) -> str:
    return json.dumps(
        {
            "succeeded": succeeded,
            "reason": "Trained" if succeeded else "DataValidationFailed",
            "message": "see validation",
            "validation": validation,
        }
    )


def _job(failed: bool) -> dict[str, Any]:
    kind = "Failed" if failed else "Complete"
    return {
        "metadata": {"name": "run-train", "uid": "job-uid"},
        "spec": {},
        "status": {
            "conditions": [
                {"type": kind, "status": "True", "lastTransitionTime": "2024-05-01T12:00:00Z"}
            ]
        },
    }


def _pod(exit_code: int, message: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "run-train-a", "creationTimestamp": "2024-05-01T11:59:00Z"},
        "status": {
            "containerStatuses": [
                {
                    "name": "train",
                    "state": {"terminated": {"exitCode": exit_code, "message": message}},
                }
            ]
        },
    }


def _status(run: rec.RunState) -> dict[str, Any]:
    return rec.desired_trainingjob_status(
        old=None,
        generation=1,
        job_name="run-train",
        job_exists=True,
        run=run,
        registration=rec.Registration(),
    )


ANOMALIES = {
    "reference": "iris-v1",
    "policy": "fail",
    "passed": False,
    "total": 2,
    "anomalies": [
        {"column": "color", "kind": "UnseenCategory", "message": "1 unseen category: 'purple'"},
        {"column": "x2", "kind": "OutOfRange", "message": "5 of 400 values outside"},
    ],
}


def test_a_failed_validation_is_the_runs_reason_and_a_condition_listing_each_column() -> None:
    run = rec.observe(_job(failed=True), [_pod(api.EXIT_INVALID, _result(ANOMALIES, False))])
    status = _status(run)
    assert status["reason"] == "DataValidationFailed"
    c = get_condition(status["conditions"], rec.COND_DATA_VALIDATED)
    assert c is not None and (c["status"], c["reason"]) == ("False", "AnomaliesFound")
    assert "color: UnseenCategory ('1 unseen" not in c["message"]  # the message, not repr
    assert "color: UnseenCategory (1 unseen category: 'purple')" in c["message"]
    assert "x2: OutOfRange (5 of 400 values outside)" in c["message"]
    assert "ModelVersion iris-v1" in c["message"]
    assert status["validation"] == ANOMALIES
    succeeded = get_condition(status["conditions"], api.COND_SUCCEEDED)
    assert succeeded is not None and succeeded["reason"] == "DataValidationFailed"


def test_a_clean_validation_is_a_true_condition() -> None:
    clean = {**ANOMALIES, "passed": True, "total": 0, "anomalies": []}
    run = rec.observe(_job(failed=False), [_pod(0, _result(clean, True))])
    status = _status(run)
    c = get_condition(status["conditions"], rec.COND_DATA_VALIDATED)
    assert c is not None and (c["status"], c["reason"]) == ("True", "NoAnomalies")


def test_retraining_validates_against_the_version_serving_now() -> None:
    retraining = api.RetrainingSpec.model_validate(
        {
            "template": {
                "dataset": {"builtin": "iris"},
                "estimator": {"type": "LogisticRegression"},
                "validation": {"policy": "warn"},
            }
        }
    )
    owner = predictor.Owner(name="iris", namespace="ml", uid="u")
    trigger = api.TriggerRef(
        inference_service="iris", signal="drift", value="0.75", time="2024-05-01T00:00:00Z"
    )
    tj = retrain.build_trainingjob(
        owner, retraining, name="iris-retrain-1", model="iris", trigger=trigger,
        champion="iris-v3",
    )  # fmt: skip
    s = api.TrainingJobSpec.model_validate(tj["spec"])
    assert s.validation is not None and s.validation.policy == "warn"
    assert s.validation_reference == "iris-v3"
    # Nothing serves yet: nothing to validate against, the run is not refused for it.
    first = retrain.build_trainingjob(
        owner, retraining, name="iris-retrain-1", model="iris", trigger=trigger,
        champion=None,
    )  # fmt: skip
    assert api.TrainingJobSpec.model_validate(first["spec"]).validation is None
