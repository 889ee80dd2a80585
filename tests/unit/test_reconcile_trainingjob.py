"""TrainingJob reconcile decisions: Job + pods -> run state -> status; and the metrics helper."""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest

from kubeloop.handlers._instrument import instrumented, reconciling
from kubeloop.metrics import create_metrics
from kubeloop.reconcile import trainingjob as rec

SHA = "a" * 64
NOW = "2024-05-01T12:00:00Z"


def result_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "succeeded": True,
        "reason": "Trained",
        "message": "accuracy 0.97",
        "task": "classification",
        "artifact": {
            "uri": "pvc://kubeloop-artifacts/ml/run/model.skops",
            "sha256": SHA,
            "format": "skops",
            "sizeBytes": 1234,
        },
        "framework": {"python": "3.11.7", "sklearn": "1.5.2", "numpy": "2.0", "pandas": "2.2"},
        "signature": {
            "inputs": [{"name": "sepal_length", "dtype": "float64"}],
            "output": {"dtype": "int64", "classes": [0, 1, 2]},
        },
        "metrics": {"accuracy": 0.97, "f1": 0.96},
        "parameters": {"C": "1.0"},
        "dataset": {"sha256": SHA, "rows": 150, "columns": 5, "source": "builtin:iris"},
        "gate": {"passed": True, "message": "all thresholds met"},
    }
    doc.update(overrides)
    return doc


def job(conditions: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "run-train", "uid": "job-uid"},
        "spec": {"suspend": False},
        "status": {"startTime": "2024-05-01T11:59:00Z", **status, "conditions": conditions or []},
    }


def cond(type_: str, reason: str = "", message: str = "", t: str = NOW) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": t,
    }


def pod(
    name: str = "run-train-abc",
    *,
    phase: str = "Running",
    exit_code: int | None = None,
    message: str = "",
    reason: str = "",
    created: str = "2024-05-01T11:59:00Z",
) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "message": message,
                "finishedAt": NOW,
            }
        }
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"phase": phase, "containerStatuses": [{"name": "train", "state": state}]},
    }


# ----------------------------------------------------------------------------- parse


def test_parse_result_reads_the_document() -> None:
    r = rec.parse_result(json.dumps(result_doc()) + "\n")
    assert r is not None
    assert r.succeeded and r.metrics["accuracy"] == 0.97
    assert r.artifact is not None and r.artifact.sha256 == SHA


def test_parse_result_finds_the_json_line_among_logs() -> None:
    text = "some log\nanother\n" + json.dumps(result_doc()) + "\n"
    r = rec.parse_result(text)
    assert r is not None and r.reason == "Trained"


@pytest.mark.parametrize("text", [None, "", "   ", "oops", "{not json", '{"reason": "x"}'])
def test_parse_result_none_for_garbage(text: str | None) -> None:
    assert rec.parse_result(text) is None


# --------------------------------------------------------------------------- observe


def test_no_job_yet_is_pending() -> None:
    s = rec.observe(None, [])
    assert s.phase is rec.Phase.PENDING and not s.finished


def test_running_pod() -> None:
    s = rec.observe(job(active=1), [pod()])
    assert s.phase is rec.Phase.RUNNING
    assert s.start_time == "2024-05-01T11:59:00Z"


def test_created_but_not_started_is_pending() -> None:
    s = rec.observe(job(), [])
    assert s.phase is rec.Phase.PENDING


def test_suspended() -> None:
    j = job([cond("Suspended", "JobSuspended")])
    j["spec"]["suspend"] = True
    s = rec.observe(j, [])
    assert s.phase is rec.Phase.SUSPENDED
    status = rec.desired_trainingjob_status(
        old=None,
        generation=1,
        job_name="run-train",
        job_exists=True,
        run=s,
        registration=rec.Registration(),
        now=NOW,
    )
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Suspended"]["status"] == "True"
    assert by_type["Succeeded"]["status"] == "Unknown"
    assert by_type["Succeeded"]["reason"] == "Suspended"
    assert status["phase"] == "Pending"


def test_complete_with_result_is_registrable() -> None:
    s = rec.observe(
        job([cond("Complete")], completionTime=NOW, succeeded=1),
        [pod(phase="Succeeded", exit_code=0, message=json.dumps(result_doc()))],
    )
    assert s.phase is rec.Phase.SUCCEEDED
    assert s.registrable
    assert s.completion_time == NOW


def test_complete_without_result_fails_with_result_missing() -> None:
    s = rec.observe(job([cond("Complete")]), [pod(phase="Succeeded", exit_code=0, message="")])
    assert s.phase is rec.Phase.FAILED
    assert s.reason == rec.REASON_RESULT_MISSING
    assert not s.registrable


def test_gate_failure_is_failed_but_registrable() -> None:
    doc = result_doc(
        succeeded=False,
        reason="QualityGateFailed",
        message="accuracy 0.66 < min 0.999",
        gate={"passed": False, "message": "accuracy 0.66 < min 0.999"},
    )
    s = rec.observe(
        job([cond("Failed", "PodFailurePolicy", "Container train exited with 3")]),
        [pod(phase="Failed", exit_code=3, message=json.dumps(doc))],
    )
    assert s.phase is rec.Phase.FAILED
    assert s.reason == "QualityGateFailed"
    assert s.registrable


@pytest.mark.parametrize(
    ("reason", "code"), [("InvalidSpec", 2), ("DataError", 2), ("TrainingError", 1)]
)
def test_trainer_reason_wins_over_job_reason(reason: str, code: int) -> None:
    doc = {"succeeded": False, "reason": reason, "message": f"{reason}: column 'nope' missing"}
    s = rec.observe(
        job([cond("Failed", "BackoffLimitExceeded", "Job has reached the backoff limit")]),
        [pod(phase="Failed", exit_code=code, message=json.dumps(doc))],
    )
    assert s.phase is rec.Phase.FAILED
    assert (s.reason, s.message) == (reason, f"{reason}: column 'nope' missing")
    assert not s.registrable


def test_deadline_exceeded_wins() -> None:
    doc = {"succeeded": False, "reason": "TrainingError", "message": "killed"}
    s = rec.observe(
        job([cond("Failed", "DeadlineExceeded", "Job was active longer than specified")]),
        [pod(phase="Failed", exit_code=137, message=json.dumps(doc))],
    )
    assert s.reason == "DeadlineExceeded"


def test_backoff_without_message_names_the_exit_code() -> None:
    s = rec.observe(
        job(
            [cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]
        ),
        [pod(phase="Failed", exit_code=139)],
    )
    assert s.reason == "BackoffLimitExceeded"
    assert "139" in s.message


def test_oom_killed() -> None:
    s = rec.observe(
        job([cond("Failed", "BackoffLimitExceeded", "limit")]),
        [pod(phase="Failed", exit_code=137, reason="OOMKilled")],
    )
    assert s.reason == "OOMKilled"


def test_succeeded_pod_wins_over_earlier_failures() -> None:
    failed = pod("a", phase="Failed", exit_code=1, created="2024-05-01T11:00:00Z")
    ok = pod(
        "b",
        phase="Succeeded",
        exit_code=0,
        message=json.dumps(result_doc()),
        created="2024-05-01T10:00:00Z",
    )
    term = rec.last_termination([failed, ok])
    assert term is not None and term.pod == "b"


def test_retrying_after_a_failure_is_pending_and_says_so() -> None:
    s = rec.observe(job(failed=1), [pod("a", phase="Failed", exit_code=1)])
    assert s.phase is rec.Phase.PENDING
    assert "exit code 1" in s.message


# --------------------------------------------------------------------------- actions


def finished_status(status: str = "True") -> dict[str, Any]:
    return {"conditions": [{"type": "Succeeded", "status": status, "reason": "x"}]}


def created_status() -> dict[str, Any]:
    return {
        "jobName": "run-train",
        "conditions": [
            {"type": "JobCreated", "status": "True", "reason": "JobCreated"},
            {"type": "Succeeded", "status": "Unknown", "reason": "Running"},
        ],
    }


@pytest.mark.parametrize(
    ("status", "job_exists", "registered", "action"),
    [
        (None, False, False, rec.Action.CREATE_JOB),
        ({}, True, False, rec.Action.OBSERVE),
        (created_status(), True, True, rec.Action.OBSERVE),
        (created_status(), False, True, rec.Action.FROM_REGISTRATION),
        (created_status(), False, False, rec.Action.JOB_MISSING),
        # Finished runs are never started again, even when the Job is gone (TTL).
        (finished_status("True"), False, False, rec.Action.DONE),
        (finished_status("False"), False, False, rec.Action.DONE),
        (finished_status("False"), True, False, rec.Action.DONE),
    ],
)
def test_next_action(
    status: dict[str, Any] | None, job_exists: bool, registered: bool, action: rec.Action
) -> None:
    assert rec.next_action(status, job_exists=job_exists, registered=registered) is action


# ---------------------------------------------------------------------------- status


def mv(gate_passed: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-v3"},
        "spec": {
            "version": 3,
            "metrics": {"accuracy": 0.97},
            "gate": {"passed": gate_passed, "message": "g"},
        },
    }


def status_for(run: rec.RunState, registered: dict[str, Any] | None, **kw: Any) -> dict[str, Any]:
    return rec.desired_trainingjob_status(
        old=kw.get("old"),
        generation=1,
        job_name="run-train",
        job_exists=True,
        run=run,
        registration=rec.registration_of(registered),
        now=NOW,
    )


def test_success_status() -> None:
    run = rec.observe(
        job([cond("Complete")], completionTime=NOW),
        [pod(phase="Succeeded", exit_code=0, message=json.dumps(result_doc()))],
    )
    st = status_for(run, mv())
    by_type = {c["type"]: c for c in st["conditions"]}
    assert by_type["Succeeded"]["status"] == "True"
    assert by_type["Succeeded"]["reason"] == "Trained"
    assert by_type["Registered"]["status"] == "True"
    assert by_type["JobCreated"]["status"] == "True"
    assert st["phase"] == "Succeeded"
    assert st["modelVersion"] == "iris-v3"
    assert st["version"] == 3
    assert st["metrics"] == {"accuracy": 0.97}
    assert st["observedGeneration"] == 1
    assert st["completionTime"] == NOW
    assert st["startTime"] == "2024-05-01T11:59:00Z"
    assert rec.is_finished(st)
    assert rec.outcome_label(st) == "succeeded"


def test_trained_but_not_registered_yet_is_not_finished() -> None:
    run = rec.observe(
        job([cond("Complete")]),
        [pod(phase="Succeeded", exit_code=0, message=json.dumps(result_doc()))],
    )
    st = status_for(run, None)
    assert not rec.is_finished(st)


def test_gate_failed_status_is_registered_but_failed() -> None:
    doc = result_doc(
        succeeded=False,
        reason="QualityGateFailed",
        message="accuracy 0.66 < 0.999",
        gate={"passed": False, "message": "accuracy 0.66 < 0.999"},
    )
    run = rec.observe(
        job([cond("Failed", "PodFailurePolicy")]),
        [pod(phase="Failed", exit_code=3, message=json.dumps(doc))],
    )
    st = status_for(run, mv(gate_passed=False))
    by_type = {c["type"]: c for c in st["conditions"]}
    assert by_type["Succeeded"]["status"] == "False"
    assert by_type["Succeeded"]["reason"] == "QualityGateFailed"
    assert "never served" in by_type["Succeeded"]["message"]
    assert by_type["Registered"]["status"] == "True"
    assert st["gate"]["passed"] is False
    assert st["phase"] == "Failed"
    assert rec.outcome_label(st) == "gate_failed"


def test_failure_status_carries_reason_and_message() -> None:
    doc = {"succeeded": False, "reason": "DataError", "message": "target column 'nope' not found"}
    run = rec.observe(
        job([cond("Failed", "PodFailurePolicy")]),
        [pod(phase="Failed", exit_code=2, message=json.dumps(doc))],
    )
    st = status_for(run, None)
    by_type = {c["type"]: c for c in st["conditions"]}
    assert (by_type["Succeeded"]["status"], by_type["Succeeded"]["reason"]) == (
        "False",
        "DataError",
    )
    assert "nope" in by_type["Succeeded"]["message"]
    assert by_type["Registered"]["status"] == "False"
    assert st["reason"] == "DataError"
    assert "modelVersion" not in st
    assert rec.outcome_label(st) == "failed"


def test_running_status_and_stable_transition_times() -> None:
    run = rec.observe(job(active=1), [pod()])
    first = status_for(run, None)
    by_type = {c["type"]: c for c in first["conditions"]}
    assert by_type["Succeeded"]["status"] == "Unknown"
    assert first["phase"] == "Running"
    again = rec.desired_trainingjob_status(
        old=first,
        generation=1,
        job_name="run-train",
        job_exists=True,
        run=run,
        registration=rec.Registration(),
        now="2030-01-01T00:00:00Z",
    )
    assert again == first  # nothing changed, nothing to write


def test_from_registration_after_the_job_is_gone() -> None:
    run = rec.state_from_registration(rec.registration_of(mv()))
    st = status_for(run, mv())
    assert rec.is_finished(st) and st["phase"] == "Succeeded"
    run = rec.state_from_registration(rec.registration_of(mv(gate_passed=False)))
    st = status_for(run, mv(gate_passed=False))
    assert st["reason"] == "QualityGateFailed"


def test_job_missing() -> None:
    st = status_for(rec.job_missing_state("run-train"), None)
    assert st["reason"] == "JobMissing" and st["phase"] == "Failed"


def test_duration() -> None:
    assert rec.duration_seconds("2024-05-01T11:59:00Z", NOW) == 60.0
    assert rec.duration_seconds(None, NOW) is None


# ------------------------------------------------------------------- the metrics helper


def _value(metrics: Any, name: str, labels: dict[str, str]) -> float:
    v = metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else float(v)


def test_reconciling_counts_results() -> None:
    m = create_metrics()
    with reconciling(m, "trainingjob"):
        pass
    with pytest.raises(kopf.TemporaryError), reconciling(m, "trainingjob"):
        raise kopf.TemporaryError("later", delay=1)
    with pytest.raises(RuntimeError), reconciling(m, "trainingjob"):
        raise RuntimeError("boom")
    for result in ("success", "requeue", "error"):
        labels = {"controller": "trainingjob", "result": result}
        assert _value(m, "controller_runtime_reconcile_total", labels) == 1.0
    assert (
        _value(m, "controller_runtime_reconcile_errors_total", {"controller": "trainingjob"}) == 1.0
    )
    assert (
        _value(m, "controller_runtime_reconcile_time_seconds_count", {"controller": "trainingjob"})
        == 3.0
    )


def test_instrumented_takes_metrics_from_memo() -> None:
    m = create_metrics()

    class Memo:
        metrics = m

    @instrumented("modelversion")
    def handler(**kwargs: Any) -> int:
        return 7

    assert handler(memo=Memo()) == 7
    assert handler(memo=object()) == 7  # no metrics: still runs
    labels = {"controller": "modelversion", "result": "success"}
    assert _value(m, "controller_runtime_reconcile_total", labels) == 1.0
