"""The operator's Prometheus metrics: one definition of every name and label.

Names mirror controller-runtime's where they overlap (``*_reconcile_total{controller,result}``,
``*_reconcile_errors_total``, ``*_reconcile_time_seconds``), under the ``kubeloop_`` prefix.
Labels are bounded: controller and kind are fixed sets; namespace/model/version come from
objects users create, never from requests.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RECONCILE_TOTAL = "kubeloop_reconcile_total"
RECONCILE_ERRORS_TOTAL = "kubeloop_reconcile_errors_total"
RECONCILE_TIME_SECONDS = "kubeloop_reconcile_time_seconds"
OBJECTS = "kubeloop_objects"
TRAINING_RUNS_TOTAL = "kubeloop_training_runs_total"
TRAINING_DURATION_SECONDS = "kubeloop_training_duration_seconds"
MODEL_VERSION_METRIC = "kubeloop_model_version_metric"
MODEL_VERSION_INFO = "kubeloop_model_version_info"
ROLLOUTS_TOTAL = "kubeloop_rollouts_total"
ROLLBACKS_TOTAL = "kubeloop_rollbacks_total"
PROMOTIONS_TOTAL = "kubeloop_promotions_total"
RETRAINS_TOTAL = "kubeloop_retrains_total"

# Controllers (the `controller` label).
TRAININGJOB = "trainingjob"
MODELVERSION = "modelversion"
INFERENCESERVICE = "inferenceservice"


@dataclass(frozen=True)
class OperatorMetrics:
    registry: CollectorRegistry
    reconcile_total: Counter
    reconcile_errors_total: Counter
    reconcile_time_seconds: Histogram
    objects: Gauge
    training_runs_total: Counter
    training_duration_seconds: Histogram
    model_version_metric: Gauge
    model_version_info: Gauge
    rollouts_total: Counter
    rollbacks_total: Counter
    promotions_total: Counter
    retrains_total: Counter


def create_metrics(registry: CollectorRegistry | None = None) -> OperatorMetrics:
    """Register every operator metric on ``registry`` (a fresh one by default)."""
    reg = registry if registry is not None else CollectorRegistry()
    return OperatorMetrics(
        registry=reg,
        reconcile_total=Counter(
            RECONCILE_TOTAL,
            "Reconciliations by controller and result (success, error, requeue).",
            ["controller", "result"],
            registry=reg,
        ),
        reconcile_errors_total=Counter(
            RECONCILE_ERRORS_TOTAL,
            "Reconciliations that ended in an error, by controller.",
            ["controller"],
            registry=reg,
        ),
        reconcile_time_seconds=Histogram(
            RECONCILE_TIME_SECONDS,
            "Time spent in one reconciliation, by controller.",
            ["controller"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=reg,
        ),
        objects=Gauge(
            OBJECTS,
            "Kubeloop objects by kind and the status of their top condition (Ready/Succeeded).",
            ["kind", "condition", "status"],
            registry=reg,
        ),
        training_runs_total=Counter(
            TRAINING_RUNS_TOTAL,
            "Finished training runs by model and outcome (succeeded, failed, gate_failed).",
            ["namespace", "model", "outcome"],
            registry=reg,
        ),
        training_duration_seconds=Histogram(
            TRAINING_DURATION_SECONDS,
            "Wall time of finished training runs, from Job start to completion.",
            ["namespace", "model"],
            buckets=(5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=reg,
        ),
        model_version_metric=Gauge(
            MODEL_VERSION_METRIC,
            "Held-out evaluation metrics of registered ModelVersions.",
            ["namespace", "model", "version", "metric"],
            registry=reg,
        ),
        model_version_info=Gauge(
            MODEL_VERSION_INFO,
            "One series per registered ModelVersion (1); aliases as a comma list.",
            ["namespace", "model", "version", "aliases", "ready"],
            registry=reg,
        ),
        rollouts_total=Counter(
            ROLLOUTS_TOTAL,
            "Rollouts started (the served version changed), by InferenceService.",
            ["namespace", "inferenceservice"],
            registry=reg,
        ),
        rollbacks_total=Counter(
            ROLLBACKS_TOTAL,
            "Canaries rolled back, by InferenceService and reason.",
            ["namespace", "inferenceservice", "reason"],
            registry=reg,
        ),
        promotions_total=Counter(
            PROMOTIONS_TOTAL,
            "Canaries promoted to stable, by InferenceService.",
            ["namespace", "inferenceservice"],
            registry=reg,
        ),
        retrains_total=Counter(
            RETRAINS_TOTAL,
            "Retraining runs started by the closed loop, by InferenceService and signal.",
            ["namespace", "inferenceservice", "signal"],
            registry=reg,
        ),
    )
