"""The operator's Prometheus metrics: one definition of every name and label.

The controller machinery uses controller-runtime's and client-go's own names
(``controller_runtime_reconcile_total{controller,result}``, ``..._reconcile_errors_total``,
``..._reconcile_time_seconds``, ``..._active_workers``, ``workqueue_*``,
``rest_client_requests_total``, ``leader_election_master_status``), so dashboards and alerts
written for controllers in Go work on Kubeloop too; what is Kubeloop's own is ``kubeloop_*``.
Labels are bounded: controller and kind are fixed sets; namespace/model/version come from
objects users create, never from requests.

Labelled series are initialised to 0 for the label values known in advance (controllers and
results at start; outcomes, reasons and signals when the operator first sees a TrainingJob or
InferenceService), as Prometheus recommends: a series that appears only with its first
increment hides that increment from ``rate()``/``increase()`` and leaves panels empty.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from kubeloop_runtime import api

RECONCILE_TOTAL = "controller_runtime_reconcile_total"
RECONCILE_ERRORS_TOTAL = "controller_runtime_reconcile_errors_total"
RECONCILE_TIME_SECONDS = "controller_runtime_reconcile_time_seconds"
OBJECTS = "kubeloop_objects"
TRAINING_RUNS_TOTAL = "kubeloop_training_runs_total"
TRAINING_DURATION_SECONDS = "kubeloop_training_duration_seconds"
MODEL_VERSION_METRIC = "kubeloop_model_version_metric"
MODEL_VERSION_INFO = "kubeloop_model_version_info"
ROLLOUTS_TOTAL = "kubeloop_rollouts_total"
ROLLBACKS_TOTAL = "kubeloop_rollbacks_total"
PROMOTIONS_TOTAL = "kubeloop_promotions_total"
RETRAINS_TOTAL = "kubeloop_retrains_total"
# Controller machinery, under client-go's and controller-runtime's own names.
WORKQUEUE_DEPTH = "workqueue_depth"
WORKQUEUE_ADDS_TOTAL = "workqueue_adds_total"
WORKQUEUE_QUEUE_DURATION_SECONDS = "workqueue_queue_duration_seconds"
WORKQUEUE_WORK_DURATION_SECONDS = "workqueue_work_duration_seconds"
WORKQUEUE_RETRIES_TOTAL = "workqueue_retries_total"
WORKQUEUE_UNFINISHED_WORK_SECONDS = "workqueue_unfinished_work_seconds"
WORKQUEUE_LONGEST_RUNNING_PROCESSOR_SECONDS = "workqueue_longest_running_processor_seconds"
ACTIVE_WORKERS = "controller_runtime_active_workers"
MAX_CONCURRENT_RECONCILES = "controller_runtime_max_concurrent_reconciles"
CACHE_OBJECTS = "kubeloop_cache_objects"
REST_CLIENT_REQUESTS_TOTAL = "rest_client_requests_total"
LEADER = "leader_election_master_status"

# Controllers (the `controller` label).
TRAININGJOB = "trainingjob"
MODELVERSION = "modelversion"
INFERENCESERVICE = "inferenceservice"
LOOP = "loop"
CONTROLLERS = (TRAININGJOB, MODELVERSION, INFERENCESERVICE, LOOP)

# Reconcile results (the `result` label), as kubeloop.handlers._instrument records them.
SUCCESS = "success"
REQUEUE = "requeue"
ERROR = "error"
RESULTS = (SUCCESS, REQUEUE, ERROR)

# Outcomes of finished training runs (kubeloop.reconcile.trainingjob.outcome_label).
TRAINING_OUTCOMES = ("succeeded", "failed", "gate_failed")
# Why a canary was rolled back: its analysis failed, or a user removed it.
ROLLBACK_REASONS = ("analysis", "manual")
# What started a retraining run (the closed loop's signals, api.TriggerRef.signal).
RETRAIN_SIGNALS: tuple[str, ...] = get_args(api.TriggerRef.model_fields["signal"].annotation)

# kubeloop_objects: each kind's top condition, and the statuses a condition can have.
TOP_CONDITIONS = {
    "TrainingJob": api.COND_SUCCEEDED,
    "ModelVersion": api.COND_READY,
    "InferenceService": api.COND_READY,
}
CONDITION_STATUSES = ("True", "False", "Unknown")


class ObjectStates:
    """Keeps ``kubeloop_objects{kind,condition,status}``: objects per status of their top
    condition, from what the operator last saw of each object (thread-safe).

    Every (kind, condition, status) series exists from the start, at 0 when no object is
    in that state, so the gauge is a complete picture rather than only the non-zero parts.
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str, str], str] = {}
        for kind, condition in TOP_CONDITIONS.items():
            for status in CONDITION_STATUSES:
                gauge.labels(kind, condition, status).set(0)

    def observe(self, kind: str, namespace: str, name: str, status: str | None) -> None:
        """Record the status of ``kind`` ``namespace/name``'s top condition (None: not set)."""
        if kind not in TOP_CONDITIONS:
            raise ValueError(f"kubeloop_objects: unknown kind {kind!r}")
        value = status if status in CONDITION_STATUSES else "Unknown"
        with self._lock:
            self._states[(kind, namespace, name)] = value
            self._publish(kind)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """The object is gone."""
        with self._lock:
            if self._states.pop((kind, namespace, name), None) is not None:
                self._publish(kind)

    def _publish(self, kind: str) -> None:
        counts = dict.fromkeys(CONDITION_STATUSES, 0)
        for (k, _, _), status in self._states.items():
            if k == kind:
                counts[status] += 1
        for status, n in counts.items():
            self._gauge.labels(kind, TOP_CONDITIONS[kind], status).set(n)


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
    workqueue_depth: Gauge
    workqueue_adds_total: Counter
    workqueue_queue_duration_seconds: Histogram
    workqueue_work_duration_seconds: Histogram
    workqueue_retries_total: Counter
    workqueue_unfinished_work_seconds: Gauge
    workqueue_longest_running_processor_seconds: Gauge
    active_workers: Gauge
    max_concurrent_reconciles: Gauge
    cache_objects: Gauge
    rest_client_requests_total: Counter
    leader: Gauge
    object_states: ObjectStates = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "object_states", ObjectStates(self.objects))
        for controller in CONTROLLERS:
            for result in RESULTS:
                self.reconcile_total.labels(controller, result)
            self.reconcile_errors_total.labels(controller)
            self.reconcile_time_seconds.labels(controller)

    def saw_trainingjob(self, namespace: str, model: str) -> None:
        """Initialise a model's training series to 0 (idempotent; call on every visit)."""
        for outcome in TRAINING_OUTCOMES:
            self.training_runs_total.labels(namespace, model, outcome)
        self.training_duration_seconds.labels(namespace, model)

    def saw_inferenceservice(self, namespace: str, name: str) -> None:
        """Initialise an InferenceService's rollout and loop counters to 0 (idempotent)."""
        self.rollouts_total.labels(namespace, name)
        self.promotions_total.labels(namespace, name)
        for reason in ROLLBACK_REASONS:
            self.rollbacks_total.labels(namespace, name, reason)
        for signal in RETRAIN_SIGNALS:
            self.retrains_total.labels(namespace, name, signal)


_DURATION_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)


def create_metrics(registry: CollectorRegistry | None = None) -> OperatorMetrics:
    """Register every operator metric on ``registry`` (a fresh one by default).

    A fresh registry also gets the process collector (``process_cpu_seconds_total``,
    ``process_resident_memory_bytes``, ``process_open_fds``...), which the default registry
    would carry and the operator dashboard shows.
    """
    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
    reg = registry
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
        workqueue_depth=Gauge(
            WORKQUEUE_DEPTH, "Current depth of the work queue.", ["name"], registry=reg
        ),
        workqueue_adds_total=Counter(
            WORKQUEUE_ADDS_TOTAL, "Adds handled by the work queue.", ["name"], registry=reg
        ),
        workqueue_queue_duration_seconds=Histogram(
            WORKQUEUE_QUEUE_DURATION_SECONDS,
            "How long a key stays in the work queue before it is processed.",
            ["name"],
            buckets=_DURATION_BUCKETS,
            registry=reg,
        ),
        workqueue_work_duration_seconds=Histogram(
            WORKQUEUE_WORK_DURATION_SECONDS,
            "How long processing a key from the work queue takes.",
            ["name"],
            buckets=_DURATION_BUCKETS,
            registry=reg,
        ),
        workqueue_retries_total=Counter(
            WORKQUEUE_RETRIES_TOTAL, "Retries handled by the work queue.", ["name"], registry=reg
        ),
        workqueue_unfinished_work_seconds=Gauge(
            WORKQUEUE_UNFINISHED_WORK_SECONDS,
            "Seconds of work in progress not yet observed by work_duration; large values"
            " mean stuck workers.",
            ["name"],
            registry=reg,
        ),
        workqueue_longest_running_processor_seconds=Gauge(
            WORKQUEUE_LONGEST_RUNNING_PROCESSOR_SECONDS,
            "How long the longest-running processor of the work queue has been running.",
            ["name"],
            registry=reg,
        ),
        active_workers=Gauge(
            ACTIVE_WORKERS,
            "Workers reconciling right now, by controller.",
            ["controller"],
            registry=reg,
        ),
        max_concurrent_reconciles=Gauge(
            MAX_CONCURRENT_RECONCILES,
            "Worker threads, by controller.",
            ["controller"],
            registry=reg,
        ),
        cache_objects=Gauge(
            CACHE_OBJECTS,
            "Objects in the operator's watch-fed cache, by kind.",
            ["kind"],
            registry=reg,
        ),
        rest_client_requests_total=Counter(
            REST_CLIENT_REQUESTS_TOTAL,
            "Requests the operator made to the API server, by method and status code.",
            ["method", "code"],
            registry=reg,
        ),
        leader=Gauge(
            LEADER, "1 while this replica holds the leader Lease.", ["name"], registry=reg
        ),
    )


# ----------------------------------------------------------------------------- faults (#18)
# What went wrong between the operator and the API server, and what it did about it. Kept
# apart from OperatorMetrics: created once at startup on the same registry.

RECONCILE_FAILURES_TOTAL = "kubeloop_reconcile_failures_total"
REST_CLIENT_REQUEST_RETRIES_TOTAL = "rest_client_request_retries_total"
WATCH_RELISTS_TOTAL = "kubeloop_watch_relists_total"


@dataclass(frozen=True)
class FaultMetrics:
    # Failed reconciles told on the object, by kind and condition reason (a bounded set:
    # the API's Status reasons, QuotaExceeded, APIServerUnreachable, ReconcileError).
    reconcile_failures_total: Counter
    # Requests sent again after a 429/5xx or a dropped connection, client-go's name.
    rest_client_request_retries_total: Counter
    # Informers that listed again (410 Gone, or a watch that could not resume), by kind.
    watch_relists_total: Counter


# Retries start at 0 for the code every install can meet (API Priority and Fairness's 429),
# so that rate() sees the first one and the dashboard's panel is never empty.
_RETRIED_AT_START = tuple((m, "429") for m in ("GET", "POST", "PUT", "PATCH", "DELETE"))


def create_fault_metrics(registry: CollectorRegistry) -> FaultMetrics:
    faults = FaultMetrics(
        reconcile_failures_total=Counter(
            RECONCILE_FAILURES_TOTAL,
            "Failed reconciles written to the object's conditions, by kind and reason.",
            ["kind", "reason"],
            registry=registry,
        ),
        rest_client_request_retries_total=Counter(
            REST_CLIENT_REQUEST_RETRIES_TOTAL,
            "Requests retried after a 429, a 5xx or a dropped connection, by method and code.",
            ["method", "code"],
            registry=registry,
        ),
        watch_relists_total=Counter(
            WATCH_RELISTS_TOTAL,
            "Informers that listed again (410 Gone or a broken watch), by kind.",
            ["kind"],
            registry=registry,
        ),
    )
    for method, code in _RETRIED_AT_START:
        faults.rest_client_request_retries_total.labels(method, code)
    return faults
