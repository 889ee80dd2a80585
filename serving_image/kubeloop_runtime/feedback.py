"""Live accuracy: remember recent predictions by request id, score them when labels arrive.

The server calls :meth:`FeedbackStore.record` after each prediction and
:meth:`FeedbackStore.feedback` when a client posts the ground truth for a request id. The
store keeps the rolling accuracy (classification) or MAE/RMSE (regression) of the last
``window`` labelled predictions, per model version, for the server to export as metrics.

Retention is by count, not time: the store remembers the predictions of the last
``capacity`` requests. Recording one more request when full forgets the oldest (counted in
``evicted``); feedback for a forgotten or never-seen id raises :class:`UnknownRequestError`.
An id keeps its slot after it was labelled, so a second feedback for it is a
:class:`DuplicateFeedbackError` until it ages out.

No HTTP here: errors carry the status code the server should answer with.
"""

from __future__ import annotations

import itertools
import math
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubeloop_runtime.api import Task

__all__ = [
    "DuplicateFeedbackError",
    "FeedbackCounters",
    "FeedbackError",
    "FeedbackResult",
    "FeedbackStore",
    "InvalidLabelsError",
    "RequestIdConflictError",
    "RequestIdGenerator",
    "UnknownRequestError",
    "VersionMetrics",
]


class RequestIdGenerator:
    """Fast request ids: a random per-process prefix plus a counter, e.g. ``9f2c41d07a3b-1a``.

    Ids are unique within a process (the counter never repeats) and, across processes and
    replicas, unique unless two processes draw the same 48-bit prefix: with ``k`` processes
    the chance of any collision is about ``k**2 / 2**49`` (under 1e-5 for 75,000 processes).
    ``next()`` on an ``itertools.count`` is atomic under the GIL, so threads may share one.
    """

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix if prefix is not None else secrets.token_hex(6)
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}-{next(self._counter):x}"


class FeedbackError(Exception):
    """Feedback the store cannot accept; ``http_status`` is what the server answers."""

    http_status = 400


class UnknownRequestError(FeedbackError, KeyError):
    """No predictions are remembered for this request id (never recorded, or evicted)."""

    http_status = 404

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else ""


class DuplicateFeedbackError(FeedbackError):
    """This request id already received its feedback."""

    http_status = 409


class RequestIdConflictError(FeedbackError):
    """A prediction for other rows already holds this request id."""

    http_status = 409


class InvalidLabelsError(FeedbackError, ValueError):
    """The labels do not fit the predictions: wrong count or wrong type."""

    http_status = 422


@dataclass(frozen=True)
class VersionMetrics:
    """Rolling quality of one model version over its last ``count`` labelled predictions.

    ``accuracy`` is set for classification, ``mae`` and ``rmse`` for regression.
    """

    version: str
    count: int
    accuracy: float | None = None
    mae: float | None = None
    rmse: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "count": self.count,
            "accuracy": self.accuracy,
            "mae": self.mae,
            "rmse": self.rmse,
        }


@dataclass(frozen=True)
class FeedbackResult:
    """The outcome of one feedback: how these labels scored and the rolling metrics after."""

    request_id: str
    version: str
    labelled: int
    correct: int | None  # classification
    mae: float | None  # regression, over this request's labels
    rolling: VersionMetrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "version": self.version,
            "labelled": self.labelled,
            "correct": self.correct,
            "mae": self.mae,
            "rolling": self.rolling.to_dict(),
        }


@dataclass(frozen=True)
class FeedbackCounters:
    """Monotonic counts since the store was made (export them as ``_total`` counters).

    ``labelled`` counts requests that received feedback, ``labelled_predictions`` the
    individual predictions scored; ``unknown``, ``duplicate`` and ``invalid`` count
    rejected feedback.
    """

    recorded: int
    labelled: int
    labelled_predictions: int
    evicted: int
    unknown: int
    duplicate: int
    invalid: int
    remembered: int


@dataclass
class _Entry:
    predictions: tuple[object, ...]
    version: str
    labelled: bool = False
    fingerprint: object = None  # of the request's rows: tells a retry from a reused id


class _Rolling:
    """Scores of the last ``window`` labelled predictions, with O(1) running sums."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.scores: deque[tuple[float, float]] = deque(maxlen=window)
        self.sum_a = 0.0  # correct (0/1) or absolute error
        self.sum_b = 0.0  # squared error (regression)
        self._since_exact = 0

    def add(self, a: float, b: float) -> None:
        if len(self.scores) == self.window:
            old_a, old_b = self.scores[0]
            self.sum_a -= old_a
            self.sum_b -= old_b
        self.scores.append((a, b))
        self.sum_a += a
        self.sum_b += b
        self._since_exact += 1
        if self._since_exact >= self.window:  # cancel floating-point drift of running sums
            self.sum_a = math.fsum(s[0] for s in self.scores)
            self.sum_b = math.fsum(s[1] for s in self.scores)
            self._since_exact = 0


def _scalar(value: object) -> object:
    """numpy scalars to Python scalars (``np.int64(1)`` -> ``1``), others unchanged."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, str | bytes):
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


class FeedbackStore:
    """Predictions by request id (bounded) and rolling live quality per model version.

    Thread-safe: every method takes one lock, and none of them does more than O(batch)
    work, so the server may call them from its event loop.
    """

    def __init__(self, capacity: int, window: int, task: Task) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0 (got {capacity})")
        if window < 1:
            raise ValueError(f"window must be >= 1 (got {window})")
        self.capacity = capacity
        self.window = window
        self.task = Task(task)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._rolling: dict[str, _Rolling] = {}
        self._lock = threading.Lock()
        self._recorded = 0
        self._labelled = 0
        self._labelled_predictions = 0
        self._evicted = 0
        self._unknown = 0
        self._duplicate = 0
        self._invalid = 0

    def __len__(self) -> int:
        return len(self._entries)

    def conflicts(self, request_id: str, fingerprint: object) -> bool:
        """Whether ``request_id`` already names a remembered prediction of other rows."""
        with self._lock:
            entry = self._entries.get(request_id)
            return entry is not None and entry.fingerprint != fingerprint

    def record(
        self,
        request_id: str,
        predictions: Iterable[object],
        version: str,
        fingerprint: object = None,
    ) -> None:
        """Remember a request's predictions (one per input row) for later feedback.

        An id names one prediction: recording it again for the same rows (``fingerprint``,
        a retry) keeps the first record; for other rows it raises
        :class:`RequestIdConflictError` and the first record stays. With ``capacity`` 0
        nothing is remembered.
        """
        entry = _Entry(tuple(_scalar(p) for p in predictions), version, fingerprint=fingerprint)
        with self._lock:
            if self.capacity == 0:
                self._recorded += 1
                return
            held = self._entries.get(request_id)
            if held is not None:
                if held.fingerprint != fingerprint:
                    raise RequestIdConflictError(
                        f"request id {request_id!r} already names an earlier prediction of"
                        " other rows; use a new id per request"
                    )
                return  # a retry of the same request: the first record stands
            self._recorded += 1
            self._entries[request_id] = entry
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
                self._evicted += 1

    def feedback(self, request_id: str, labels: Iterable[object]) -> FeedbackResult:
        """Score the ground truth ``labels`` (one per prediction, in order) of a request.

        Raises :class:`UnknownRequestError` (404), :class:`DuplicateFeedbackError` (409) or
        :class:`InvalidLabelsError` (422); a rejected feedback changes no metric.
        """
        values = [_scalar(v) for v in labels]
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None:
                self._unknown += 1
                raise UnknownRequestError(
                    f"request id {request_id!r} is unknown or expired (predictions of the last"
                    f" {self.capacity} requests are kept)"
                )
            if entry.labelled:
                self._duplicate += 1
                raise DuplicateFeedbackError(f"request id {request_id!r} already received feedback")
            try:
                scores = self._score(entry.predictions, values)
            except InvalidLabelsError:
                self._invalid += 1
                raise
            entry.labelled = True
            self._labelled += 1
            self._labelled_predictions += len(scores)
            rolling = self._rolling.get(entry.version)
            if rolling is None:
                rolling = self._rolling[entry.version] = _Rolling(self.window)
            for a, b in scores:
                rolling.add(a, b)
            metrics = self._metrics(entry.version, rolling)
        if self.task is Task.CLASSIFICATION:
            correct: int | None = sum(int(a) for a, _ in scores)
            mae = None
        else:
            correct = None
            mae = math.fsum(a for a, _ in scores) / len(scores) if scores else None
        return FeedbackResult(request_id, entry.version, len(scores), correct, mae, metrics)

    def _score(
        self, predictions: tuple[object, ...], labels: list[object]
    ) -> list[tuple[float, float]]:
        if len(labels) != len(predictions):
            raise InvalidLabelsError(
                f"labels: expected {len(predictions)} value(s), one per prediction,"
                f" got {len(labels)}"
            )
        out: list[tuple[float, float]] = []
        for i, (pred, label) in enumerate(zip(predictions, labels, strict=True)):
            if self.task is Task.CLASSIFICATION:
                want, got = _kind(pred), _kind(label)
                if want != got:
                    raise InvalidLabelsError(
                        f"labels[{i}]: expected a {want} like the model's classes, got {got}"
                        f" {label!r}"
                    )
                if got == "number" and not math.isfinite(float(label)):  # type: ignore[arg-type]
                    raise InvalidLabelsError(
                        f"labels[{i}]: expected a finite number, got {label!r}"
                    )
                out.append((1.0 if label == pred else 0.0, 0.0))
            else:
                if _kind(label) != "number" or not math.isfinite(float(label)):  # type: ignore[arg-type]
                    raise InvalidLabelsError(
                        f"labels[{i}]: expected a finite number, got {label!r}"
                    )
                err = float(label) - float(pred)  # type: ignore[arg-type]
                out.append((abs(err), err * err))
        return out

    def _metrics(self, version: str, rolling: _Rolling) -> VersionMetrics:
        n = len(rolling.scores)
        if n == 0:
            return VersionMetrics(version, 0)
        if self.task is Task.CLASSIFICATION:
            return VersionMetrics(version, n, accuracy=rolling.sum_a / n)
        return VersionMetrics(
            version,
            n,
            mae=rolling.sum_a / n,
            rmse=math.sqrt(max(rolling.sum_b, 0.0) / n),
        )

    def metrics(self) -> dict[str, VersionMetrics]:
        """Rolling metrics of every version that has received feedback."""
        with self._lock:
            return {v: self._metrics(v, r) for v, r in self._rolling.items()}

    def counters(self) -> FeedbackCounters:
        with self._lock:
            return FeedbackCounters(
                recorded=self._recorded,
                labelled=self._labelled,
                labelled_predictions=self._labelled_predictions,
                evicted=self._evicted,
                unknown=self._unknown,
                duplicate=self._duplicate,
                invalid=self._invalid,
                remembered=len(self._entries),
            )
