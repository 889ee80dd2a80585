"""Wire the monitoring parts (drift window, feedback store, prediction log) into serving.

The statistics live in ``kubeloop_runtime.drift``, ``.feedback`` and ``.predlog``; this
module adapts them to the small interfaces the data plane calls (see ``dataplane.py``)
and exports their state as Prometheus gauges on scrape. Drift is computed only when
asked (a scrape, ``/drift`` or ``/monitoring``), never per request, and a short cache
keeps a scrape and a ``/monitoring`` poll from computing it twice.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kubeloop_runtime import api, artifacts, drift, feedback, predlog, validation
from kubeloop_runtime.serve.dataplane import DriftWindow, FeedbackSink, PredictionLog
from kubeloop_runtime.serve.errors import (
    ConflictError,
    StartupError,
    UnknownRequestIdError,
    UnprocessableError,
)
from kubeloop_runtime.serve.metrics import MonitoringCollector, TTLCache

if TYPE_CHECKING:
    from kubeloop_runtime.serve.dataplane import DataPlane
    from kubeloop_runtime.serve.model import ServedModel
    from kubeloop_runtime.serve.settings import ServeSettings

log = logging.getLogger(__name__)

# Training-serving skew uses data validation's default limits (docs/monitoring-drift.md).
_SKEW_LIMITS = api.ValidationSpec()


@dataclass(frozen=True)
class Parts:
    drift: DriftWindow | None
    feedback: FeedbackSink | None
    predlog: PredictionLog | None
    request_id: Callable[[], str]


class _Drift:
    """Adapts ``drift.DriftMonitor``: rows go in reference order, in blocks, reports cached.

    Requests hand over a few rows each; copying them into the monitor's ring buffer one
    request at a time costs more than the copy itself, so rows are kept in a small list
    and handed over in blocks of ``flush_rows`` (and before every report).
    """

    def __init__(
        self, monitor: drift.DriftMonitor, order: list[int] | None, flush_rows: int = 256
    ) -> None:
        self._monitor = monitor
        self._order = order
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._flush_rows = min(flush_rows, monitor.window_size)
        self._lock = threading.Lock()
        self._report: TTLCache[dict[str, Any]] = TTLCache(self._compute, ttl=1.0)

    def observe(self, rows: np.ndarray) -> None:
        with self._lock:
            self._pending.append(rows)
            self._pending_rows += rows.shape[0]
            if self._pending_rows < self._flush_rows:
                return
            block = self._take()
        self._hand_over(block)

    def _take(self) -> list[np.ndarray]:
        block, self._pending, self._pending_rows = self._pending, [], 0
        return block

    def _hand_over(self, block: list[np.ndarray]) -> None:
        if not block:
            return
        x = block[0] if len(block) == 1 else np.concatenate(block)
        self._monitor.observe(x if self._order is None else x[:, self._order])

    def _compute(self) -> dict[str, Any]:
        with self._lock:
            block = self._take()
        self._hand_over(block)
        return self._monitor.compute().to_dict()

    def report(self) -> dict[str, Any]:
        return self._report()

    def skew(self) -> dict[str, Any]:
        """Training-serving skew: data validation's checks on the window (see validation.py)."""
        anomalies = validation.serving_skew(self._monitor, self.report(), _SKEW_LIMITS)
        return {
            "enough_data": bool(self.report().get("enough_data")),
            "total": len(anomalies),
            "anomalies": [a.model_dump() for a in anomalies[: api.MAX_ANOMALIES]],
        }


class _Feedback:
    """Adapts ``feedback.FeedbackStore``: typed errors, counts by result, a stats dict."""

    def __init__(self, store: feedback.FeedbackStore, version: str, task: api.Task) -> None:
        self._store = store
        self._version = version
        self._classification = task is api.Task.CLASSIFICATION
        self._correct = 0
        self._incorrect = 0
        self._scored = 0
        self._invalid_requests = 0

    def check_id(self, request_id: str, x: np.ndarray) -> None:
        if self._store.conflicts(request_id, _fingerprint(x)):
            raise ConflictError(
                f"request id {request_id!r} already names an earlier prediction of other rows;"
                " use a new id per request"
            )

    def record(self, request_id: str, predictions: list[Any], x: np.ndarray) -> None:
        try:
            self._store.record(request_id, predictions, self._version, _fingerprint(x))
        except feedback.RequestIdConflictError as e:
            raise ConflictError(str(e)) from e

    def invalid(self) -> None:
        """A feedback body refused before it reached the store (400): count it."""
        self._invalid_requests += 1

    def feedback(self, request_id: str, labels: list[Any]) -> dict[str, Any]:
        try:
            result = self._store.feedback(request_id, labels)
        except feedback.UnknownRequestError as e:
            raise UnknownRequestIdError(str(e)) from e
        except feedback.DuplicateFeedbackError as e:
            raise ConflictError(str(e)) from e
        except feedback.InvalidLabelsError as e:
            raise UnprocessableError(str(e)) from e
        if result.correct is not None:
            self._correct += result.correct
            self._incorrect += result.labelled - result.correct
        else:
            self._scored += result.labelled
        return result.to_dict()

    def stats(self) -> dict[str, Any]:
        rolling = self._store.metrics().get(self._version)
        c = self._store.counters()
        counts = {
            "unknown": c.unknown,
            "duplicate": c.duplicate,
            "invalid": c.invalid + self._invalid_requests,
        }
        if self._classification:
            counts["correct"] = self._correct
            counts["incorrect"] = self._incorrect
        else:
            counts["scored"] = self._scored
        errors: dict[str, float] = {}
        if rolling is not None and rolling.mae is not None:
            errors["mae"] = rolling.mae
        if rolling is not None and rolling.rmse is not None:
            errors["rmse"] = rolling.rmse
        return {
            "accuracy": rolling.accuracy if rolling is not None else None,
            "errors": errors,
            "window_count": rolling.count if rolling is not None else 0,
            "labelled_requests": c.labelled,
            "recorded": c.recorded,
            "remembered": c.remembered,
            "counts": counts,
        }


def _fingerprint(x: np.ndarray) -> object:
    """Identifies a request's rows (tells a retry from another request reusing its id)."""
    if x.dtype == object:
        return hash((x.shape, repr(x.tolist())))
    return hash((x.shape, x.dtype.str, x.tobytes()))


class _PredLog:
    def __init__(self, logger: predlog.PredictionLogger, model: str, version: str) -> None:
        self._logger = logger
        self._model = model
        self._version = version

    def maybe_log(
        self, request_id: str, x: np.ndarray, predictions: list[Any], protocol: str
    ) -> None:
        # The array itself: predlog serialises it only for the sampled requests.
        self._logger.maybe_log(request_id, self._model, self._version, x, predictions)


def _load_reference(spec: api.ModelVersionSpec, settings: ServeSettings) -> drift.ReferenceStats:
    uri = spec.artifact.reference_stats_uri
    assert uri is not None
    where = f"ModelVersion {spec.model} v{spec.version}: reference statistics {uri}"
    try:
        path = artifacts.resolve(uri, artifact_root=settings.artifact_root)
        data = path.read_bytes()
    except (artifacts.ArtifactError, OSError) as e:
        raise StartupError(f"{where}: cannot read: {e}") from e
    if spec.artifact.reference_stats_sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()  # the bytes already read, not the file again
        try:
            artifacts.verify_sha256(digest, spec.artifact.reference_stats_sha256, str(path))
        except artifacts.ArtifactIntegrityError as e:
            raise StartupError(f"{where}: integrity check failed: {e}") from e
    try:
        return drift.ReferenceStats.from_json(data)
    except drift.ReferenceStatsError as e:
        raise StartupError(f"{where}: {e}") from e


def build(settings: ServeSettings, model: ServedModel) -> Parts:
    """Build the monitoring parts the ModelVersion and the monitoring spec ask for."""
    spec = settings.model_version
    mon = settings.monitoring
    drift_part: DriftWindow | None = None
    if mon.drift.enabled and spec.artifact.reference_stats_uri:
        reference = _load_reference(spec, settings)
        names = reference.feature_names
        if sorted(names) != sorted(model.feature_names):
            log.warning(
                "Drift monitoring disabled: reference features %s differ from the signature %s",
                names,
                model.feature_names,
            )
        else:
            order = None
            if names != model.feature_names:
                order = [model.feature_names.index(n) for n in names]
            monitor = drift.DriftMonitor(
                reference,
                window_size=mon.drift.window_size,
                psi_threshold=mon.drift.psi_threshold,
                p_value=mon.drift.p_value,
                dataset_drift_share=mon.drift.dataset_drift_share,
            )
            drift_part = _Drift(monitor, order)
    request_id: Callable[[], str] = feedback.RequestIdGenerator()
    feedback_part: FeedbackSink | None = None
    if mon.feedback_capacity > 0:
        store = feedback.FeedbackStore(
            capacity=mon.feedback_capacity, window=mon.feedback_window, task=spec.task
        )
        feedback_part = _Feedback(store, settings.version, spec.task)
    predlog_part: PredictionLog | None = None
    if mon.prediction_log_sample_rate > 0:
        predlog_part = _PredLog(
            predlog.PredictionLogger(sample_rate=mon.prediction_log_sample_rate),
            settings.served_name,
            settings.version,
        )
    return Parts(drift_part, feedback_part, predlog_part, request_id)


def collector(settings: ServeSettings, dataplane: DataPlane) -> MonitoringCollector:
    """Drift and live-accuracy gauges for the registry, computed on scrape."""

    def drift_report() -> dict[str, Any] | None:
        return None if dataplane.drift is None else dataplane.drift.report()

    return MonitoringCollector(
        model=settings.served_name,
        version=settings.version,
        drift_report=drift_report,
        feedback_stats=dataplane.feedback_stats,
    )
