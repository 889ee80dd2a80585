"""The operator's metrics: series exist at 0 before they move, kubeloop_objects counts."""

from __future__ import annotations

from typing import Any

import pytest

from kubeloop import metrics as m
from kubeloop.handlers import objects
from kubeloop.reconcile import trainingjob as rec
from kubeloop_runtime import api


def _value(metrics: m.OperatorMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_reconcile_series_start_at_zero_for_every_controller() -> None:
    metrics = m.create_metrics()
    for controller in m.CONTROLLERS:
        for result in m.RESULTS:
            labels = {"controller": controller, "result": result}
            assert _value(metrics, "controller_runtime_reconcile_total", labels) == 0.0
        labels = {"controller": controller}
        assert _value(metrics, "controller_runtime_reconcile_errors_total", labels) == 0.0
        assert _value(metrics, "controller_runtime_reconcile_time_seconds_count", labels) == 0.0


def test_a_fresh_registry_carries_process_metrics() -> None:
    metrics = m.create_metrics()
    assert _value(metrics, "process_resident_memory_bytes", {}) is not None
    assert _value(metrics, "process_cpu_seconds_total", {}) is not None


def test_training_series_exist_at_zero_once_a_trainingjob_is_seen() -> None:
    metrics = m.create_metrics()
    assert _value(metrics, "kubeloop_training_runs_total", _run("succeeded")) is None
    metrics.saw_trainingjob("ml", "iris")
    metrics.saw_trainingjob("ml", "iris")  # idempotent
    for outcome in m.TRAINING_OUTCOMES:
        assert _value(metrics, "kubeloop_training_runs_total", _run(outcome)) == 0.0
    count = _value(
        metrics, "kubeloop_training_duration_seconds_count", {"namespace": "ml", "model": "iris"}
    )
    assert count == 0.0
    metrics.training_runs_total.labels("ml", "iris", "succeeded").inc()
    assert _value(metrics, "kubeloop_training_runs_total", _run("succeeded")) == 1.0


def _run(outcome: str) -> dict[str, str]:
    return {"namespace": "ml", "model": "iris", "outcome": outcome}


@pytest.mark.parametrize(
    ("condition", "outcome"),
    [
        ({"type": "Succeeded", "status": "True", "reason": "Registered"}, "succeeded"),
        ({"type": "Succeeded", "status": "False", "reason": "JobFailed"}, "failed"),
        (
            {"type": "Succeeded", "status": "False", "reason": api.REASON_QUALITY_GATE_FAILED},
            "gate_failed",
        ),
    ],
)
def test_outcomes_are_the_ones_initialised(condition: dict[str, str], outcome: str) -> None:
    label = rec.outcome_label({"conditions": [condition]})
    assert label == outcome
    assert label in m.TRAINING_OUTCOMES


def test_inferenceservice_counters_exist_at_zero_once_seen() -> None:
    metrics = m.create_metrics()
    metrics.saw_inferenceservice("ml", "iris")
    isvc = {"namespace": "ml", "inferenceservice": "iris"}
    assert _value(metrics, "kubeloop_rollouts_total", isvc) == 0.0
    assert _value(metrics, "kubeloop_promotions_total", isvc) == 0.0
    for reason in ("analysis", "manual"):
        assert _value(metrics, "kubeloop_rollbacks_total", {**isvc, "reason": reason}) == 0.0
    assert set(m.RETRAIN_SIGNALS) == {"drift", "accuracy", "error", "schedule", "manual", "data"}
    for signal in m.RETRAIN_SIGNALS:
        assert _value(metrics, "kubeloop_retrains_total", {**isvc, "signal": signal}) == 0.0


def _objects(metrics: m.OperatorMetrics) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in metrics.registry.collect():
        if family.name == "kubeloop_objects":
            for s in family.samples:
                out[(s.labels["kind"], s.labels["condition"], s.labels["status"])] = s.value
    return out


def _body(name: str, conditions: list[dict[str, Any]] | None) -> dict[str, Any]:
    raw: dict[str, Any] = {"metadata": {"namespace": "ml", "name": name}}
    if conditions is not None:
        raw["status"] = {"conditions": conditions}
    return raw


def test_objects_gauge_counts_each_object_by_its_top_condition() -> None:
    metrics = m.create_metrics()
    start = _objects(metrics)
    assert len(start) == 3 * 3 and set(start.values()) == {0.0}
    assert ("TrainingJob", "Succeeded", "Unknown") in start
    assert ("InferenceService", "Ready", "False") in start

    ready = [{"type": "Ready", "status": "True"}, {"type": "Succeeded", "status": "False"}]
    objects.observe(metrics, "ModelVersion", _body("iris-v1", ready))
    objects.observe(metrics, "ModelVersion", _body("iris-v2", None))
    objects.observe(metrics, "TrainingJob", _body("iris", ready))  # no Succeeded yet
    got = _objects(metrics)
    assert got[("ModelVersion", "Ready", "True")] == 1
    assert got[("ModelVersion", "Ready", "Unknown")] == 1
    assert got[("TrainingJob", "Succeeded", "False")] == 1

    # The same object again (a status change) moves, it does not add.
    objects.observe(metrics, "ModelVersion", _body("iris-v2", ready), _body("iris-v2", None))
    got = _objects(metrics)
    assert got[("ModelVersion", "Ready", "True")] == 2
    assert got[("ModelVersion", "Ready", "Unknown")] == 0

    objects.observe(metrics, "ModelVersion", None, _body("iris-v1", ready))
    objects.observe(metrics, "ModelVersion", None, _body("never-seen", ready))
    assert _objects(metrics)[("ModelVersion", "Ready", "True")] == 1


def test_objects_rejects_an_unknown_kind() -> None:
    metrics = m.create_metrics()
    with pytest.raises(ValueError, match="Deployment"):
        metrics.object_states.observe("Deployment", "ml", "x", "True")


def test_fault_series_the_dashboard_reads_exist_at_zero() -> None:
    """The operator dashboard's API-fault panels read series that exist before any fault:
    429 retries per method, and (through the failure recorders) APIServerUnreachable."""
    from kubeloop.handlers._failures import API_UNREACHABLE, FailureRecorder

    metrics = m.create_metrics()
    faults = m.create_fault_metrics(metrics.registry)
    FailureRecorder(
        None,  # type: ignore[arg-type]  # never writes here
        api_version="kubeloop.io/v1alpha1",
        kind="TrainingJob",
        condition="Reconciled",
        primary="Succeeded",
        primary_status="Unknown",
        failures_total=faults.reconcile_failures_total,
    )
    get = metrics.registry.get_sample_value
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        labels = {"method": method, "code": "429"}
        assert get("rest_client_request_retries_total", labels) == 0.0
    labels = {"kind": "TrainingJob", "reason": API_UNREACHABLE}
    assert get("kubeloop_reconcile_failures_total", labels) == 0.0
