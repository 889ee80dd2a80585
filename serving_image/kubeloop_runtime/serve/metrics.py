"""Prometheus metrics of the serving runtime, on an explicit registry.

The metric names below are a contract: dashboards and alert rules in ``manifests/``
and the operator's closed loop query them. Change them only together.

Request metrics are updated on the hot path through pre-bound label children; drift
and live-accuracy gauges are computed when Prometheus scrapes (a custom collector),
never per request.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# The two the operator reads from canary pods are defined with the other pod contracts.
from kubeloop_runtime.contracts import REQUEST_DURATION_SECONDS, REQUESTS_TOTAL

# ----------------------------------------------------------------------- names (contract)
BATCH_SIZE = "kubeloop_serving_batch_size"  # rows per model call {model,version}
PREDICTIONS_TOTAL = "kubeloop_serving_predictions_total"  # {model,version,class}
PREDICTION_VALUE = "kubeloop_serving_prediction_value"  # regression {model,version}
MODEL_INFO = "kubeloop_serving_model_info"  # {model,version,sha256,role,runtime} = 1
# KServe's model-server histogram, so existing KServe dashboards keep working.
KSERVE_PREDICT_SECONDS = "request_predict_seconds"  # {model_name}

DRIFT_SCORE = "kubeloop_drift_score"  # {model,version,feature,method="psi"}
DRIFT_P_VALUE = "kubeloop_drift_p_value"  # {model,version,feature}
FEATURE_DRIFTED = "kubeloop_feature_drifted"  # {model,version,feature} 0/1
DATASET_DRIFT = "kubeloop_dataset_drift"  # {model,version} 0/1
DRIFT_SHARE = "kubeloop_drift_share"  # {model,version}
DRIFT_WINDOW_ROWS = "kubeloop_drift_window_rows"  # {model,version}

LIVE_ACCURACY = "kubeloop_live_accuracy"  # {model,version} (classification)
LIVE_ERROR = "kubeloop_live_error"  # {model,version,metric} (regression: rmse, mae)
FEEDBACK_TOTAL = "kubeloop_feedback_total"  # {model,version,result}

ALL_METRIC_NAMES = (
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    BATCH_SIZE,
    PREDICTIONS_TOTAL,
    PREDICTION_VALUE,
    MODEL_INFO,
    KSERVE_PREDICT_SECONDS,
    DRIFT_SCORE,
    DRIFT_P_VALUE,
    FEATURE_DRIFTED,
    DATASET_DRIFT,
    DRIFT_SHARE,
    DRIFT_WINDOW_ROWS,
    LIVE_ACCURACY,
    LIVE_ERROR,
    FEEDBACK_TOTAL,
)

T = TypeVar("T")

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


def _value_buckets() -> tuple[float, ...]:
    """Symmetric 1-2.5-5 buckets from 0.1 to 5000 for regression outputs."""
    pos = [m * 10.0**k for k in range(-1, 4) for m in (1.0, 2.5, 5.0)]
    return (*sorted(-v for v in pos), 0.0, *pos)


def _base(name: str) -> str:
    """prometheus_client adds ``_total`` to counters itself."""
    return name.removesuffix("_total")


class ServingMetrics:
    """The request-path metrics of one served model version."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        model: str,
        version: str,
        sha256: str,
        role: str,
        runtime: str,
        classes: Sequence[str] | None,
    ) -> None:
        self.registry = registry
        self.model = model
        self.version = version
        self._requests = Counter(
            _base(REQUESTS_TOTAL),
            "Inference requests by protocol and HTTP status code.",
            ["model", "version", "protocol", "code"],
            registry=registry,
        )
        self._duration = Histogram(
            REQUEST_DURATION_SECONDS,
            "Inference request latency, body read to response, in seconds.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            BATCH_SIZE,
            "Rows per model call (micro-batching).",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        ).labels(model, version)
        self._kserve_predict = Histogram(
            KSERVE_PREDICT_SECONDS,
            "Model predict latency in seconds (KServe-compatible name).",
            ["model_name"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ).labels(model)
        info = Gauge(
            MODEL_INFO,
            "The served model version; always 1.",
            ["model", "version", "sha256", "role", "runtime"],
            registry=registry,
        )
        info.labels(model, version, sha256[:12], role, runtime).set(1)
        self._predictions: dict[str, Counter] = {}
        self.prediction_value: Histogram | None = None
        if classes is not None:
            predictions = Counter(
                _base(PREDICTIONS_TOTAL),
                "Predicted labels by class.",
                ["model", "version", "class"],
                registry=registry,
            )
            for c in classes:
                self._predictions[c] = predictions.labels(model, version, c)
            self._predictions_family = predictions
        else:
            self.prediction_value = Histogram(
                PREDICTION_VALUE,
                "Predicted values (regression).",
                ["model", "version"],
                buckets=_value_buckets(),
                registry=registry,
            ).labels(model, version)
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}

    def observe_request(self, protocol: str, code: int, seconds: float) -> None:
        key = (protocol, code)
        child = self._request_children.get(key)
        if child is None:
            child = self._requests.labels(self.model, self.version, protocol, str(code))
            self._request_children[key] = child
        child.inc()
        d = self._duration_children.get(protocol)
        if d is None:
            d = self._duration.labels(self.model, self.version, protocol)
            self._duration_children[protocol] = d
        d.observe(seconds)

    def observe_predict(self, seconds: float) -> None:
        self._kserve_predict.observe(seconds)

    def count_classes(self, labels: Iterable[Any]) -> None:
        """Count predicted labels; classes are bounded by the signature."""
        preds = self._predictions
        for label in labels:
            key = label if isinstance(label, str) else _class_key(label)
            child = preds.get(key)
            if child is None:  # a class not in the signature: still bounded by the model
                child = self._predictions_family.labels(self.model, self.version, key)
                preds[key] = child
            child.inc()

    def observe_values(self, values: Iterable[float]) -> None:
        h = self.prediction_value
        assert h is not None, "observe_values is for regression models"
        for v in values:
            if math.isfinite(v):
                h.observe(v)


def _class_key(label: Any) -> str:
    if isinstance(label, bool):
        return "true" if label else "false"
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)


def class_key(label: Any) -> str:
    """The ``class`` label value of a predicted label (ints without ``.0``, bools lower)."""
    return label if isinstance(label, str) else _class_key(label)


class MonitoringCollector(Collector):
    """Drift and live-accuracy gauges, computed when scraped.

    ``drift_report`` returns the drift monitor's ``to_dict()`` (or None without a
    monitor); ``feedback_stats`` returns ``{"accuracy": float|None, "errors": {metric:
    value}, "counts": {result: n}}`` (or None). Both are read under the monitor's own
    locking; a short cache keeps a scrape and a ``/drift`` call from computing twice.
    """

    def __init__(
        self,
        *,
        model: str,
        version: str,
        drift_report: Callable[[], dict[str, Any] | None],
        feedback_stats: Callable[[], dict[str, Any] | None],
    ) -> None:
        self.model = model
        self.version = version
        self._drift_report = drift_report
        self._feedback_stats = feedback_stats

    def describe(self) -> list[Metric]:
        return []  # computed on collect; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        base = [self.model, self.version]
        report = self._drift_report()
        if report is not None:
            score = GaugeMetricFamily(
                DRIFT_SCORE,
                "Population stability index of a feature vs the training reference.",
                labels=["model", "version", "feature", "method"],
            )
            p_value = GaugeMetricFamily(
                DRIFT_P_VALUE,
                "Statistical test p-value of a feature vs the training reference.",
                labels=["model", "version", "feature"],
            )
            drifted = GaugeMetricFamily(
                FEATURE_DRIFTED,
                "1 when the feature is judged drifted.",
                labels=["model", "version", "feature"],
            )
            for feature, f in _features(report):
                psi = f.get("psi")
                if isinstance(psi, int | float):
                    score.add_metric([*base, feature, "psi"], float(psi))
                pv = f.get("p_value")
                if isinstance(pv, int | float):
                    p_value.add_metric([*base, feature], float(pv))
                drifted.add_metric([*base, feature], 1.0 if f.get("drifted") else 0.0)
            yield score
            yield p_value
            yield drifted
            yield _gauge(
                DATASET_DRIFT,
                "1 when the share of drifted features reaches the threshold.",
                base,
                1.0 if report.get("dataset_drift") else 0.0,
            )
            yield _gauge(
                DRIFT_SHARE,
                "Share of features judged drifted.",
                base,
                _num(report.get("share_drifted")),
            )
            yield _gauge(
                DRIFT_WINDOW_ROWS,
                "Rows in the current drift window.",
                base,
                _num(report.get("window_count")),
            )
        stats = self._feedback_stats()
        if stats is not None:
            acc = stats.get("accuracy")
            if isinstance(acc, int | float):
                yield _gauge(LIVE_ACCURACY, "Accuracy over the feedback window.", base, acc)
            errors = stats.get("errors") or {}
            if errors:
                g = GaugeMetricFamily(
                    LIVE_ERROR,
                    "Error over the feedback window (regression).",
                    labels=["model", "version", "metric"],
                )
                for metric, value in sorted(errors.items()):
                    if isinstance(value, int | float):
                        g.add_metric([*base, metric], float(value))
                yield g
            counts = stats.get("counts") or {}
            c = CounterMetricFamily(
                _base(FEEDBACK_TOTAL),
                "Feedback by result: correct, incorrect (classification) and scored (regression)"
                " count labelled predictions; unknown (id not remembered), duplicate (second"
                " feedback for an id) and invalid (body or labels refused) count requests.",
                labels=["model", "version", "result"],
            )
            for result, n in sorted(counts.items()):
                c.add_metric([*base, result], float(n))
            yield c


def _gauge(name: str, doc: str, base: list[str], value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["model", "version"])
    g.add_metric(base, float(value))
    return g


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def _features(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    feats = report.get("features") or {}
    if isinstance(feats, dict):
        return [(str(k), v) for k, v in feats.items() if isinstance(v, dict)]
    out = []
    for f in feats:
        if isinstance(f, dict) and "name" in f:
            out.append((str(f["name"]), f))
    return out


class TTLCache(Generic[T]):
    """Cache the result of an expensive call for ``ttl`` seconds (thread-safe)."""

    def __init__(self, fn: Callable[[], T], ttl: float = 1.0) -> None:
        self._fn = fn
        self._ttl = ttl
        self._lock = threading.Lock()
        self._at = -math.inf
        self._value: T

    def __call__(self) -> T:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= self._ttl:
                self._value = self._fn()
                self._at = now
            return self._value
