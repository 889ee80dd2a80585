"""Live accuracy from ground-truth feedback, keyed by request id."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from kubeloop_runtime.api import Task
from kubeloop_runtime.feedback import (
    DuplicateFeedbackError,
    FeedbackStore,
    InvalidLabelsError,
    RequestIdConflictError,
    RequestIdGenerator,
    UnknownRequestError,
)


def test_classification_accuracy_is_what_we_count() -> None:
    rng = np.random.default_rng(0)
    store = FeedbackStore(capacity=1000, window=10_000, task=Task.CLASSIFICATION)
    classes = ["setosa", "versicolor", "virginica"]
    correct = total = 0
    for i in range(200):
        n = int(rng.integers(1, 5))
        preds = list(rng.choice(classes, n))
        labels = [p if rng.random() < 0.8 else rng.choice(classes) for p in preds]
        store.record(f"r{i}", preds, "1")
        result = store.feedback(f"r{i}", labels)
        batch = sum(p == lab for p, lab in zip(preds, labels, strict=True))
        correct += batch
        total += n
        assert result.correct == batch and result.labelled == n
    assert result.rolling.count == total
    assert result.rolling.accuracy == pytest.approx(correct / total)
    assert store.metrics()["1"].accuracy == pytest.approx(correct / total)
    counters = store.counters()
    assert counters.recorded == 200 and counters.labelled == 200
    assert counters.labelled_predictions == total


def test_rolling_window_keeps_only_the_last_labels_per_version() -> None:
    store = FeedbackStore(capacity=100, window=4, task=Task.CLASSIFICATION)
    outcomes = [True, True, False, False, False, True]
    for i, ok in enumerate(outcomes):
        store.record(f"a{i}", [1], "v1")
        store.feedback(f"a{i}", [1 if ok else 0])
    store.record("b", [7, 7], "v2")
    store.feedback("b", [7, 7])
    metrics = store.metrics()
    last4 = outcomes[-4:]
    assert metrics["v1"].count == 4
    assert metrics["v1"].accuracy == pytest.approx(sum(last4) / 4)
    assert metrics["v2"].accuracy == 1.0 and metrics["v2"].count == 2


def test_regression_errors() -> None:
    rng = np.random.default_rng(1)
    window = 50
    store = FeedbackStore(capacity=1000, window=window, task="regression")  # type: ignore[arg-type]
    errors: list[float] = []
    for i in range(120):
        pred = [float(x) for x in rng.normal(0, 10, 3)]
        truth = [p + float(e) for p, e in zip(pred, rng.normal(0, 2, 3), strict=True)]
        store.record(str(i), np.asarray(pred), "3")
        result = store.feedback(str(i), truth)
        batch = [t - p for p, t in zip(pred, truth, strict=True)]
        errors += batch
        assert result.mae == pytest.approx(sum(abs(e) for e in batch) / 3)
        assert result.correct is None
    last = errors[-window:]
    m = store.metrics()["3"]
    assert m.count == window and m.accuracy is None
    assert m.mae == pytest.approx(sum(abs(e) for e in last) / window)
    assert m.rmse == pytest.approx(math.sqrt(sum(e * e for e in last) / window))


def test_oldest_predictions_are_evicted_first() -> None:
    store = FeedbackStore(capacity=3, window=10, task=Task.CLASSIFICATION)
    for i in range(5):
        store.record(f"r{i}", [0], "1")
    assert len(store) == 3
    for gone in ("r0", "r1"):
        with pytest.raises(UnknownRequestError, match=f"request id '{gone}' is unknown or expired"):
            store.feedback(gone, [0])
    for kept in ("r2", "r3", "r4"):
        store.feedback(kept, [0])
    c = store.counters()
    assert (c.recorded, c.evicted, c.unknown, c.labelled, c.remembered) == (5, 2, 2, 3, 3)


def test_an_id_names_one_prediction_a_retry_keeps_the_first() -> None:
    store = FeedbackStore(capacity=2, window=10, task=Task.CLASSIFICATION)
    store.record("a", [0], "1", fingerprint="rows-1")
    store.record("a", [0], "1", fingerprint="rows-1")  # a retry of the same request
    with pytest.raises(RequestIdConflictError, match="already names") as e:
        store.record("a", [1], "1", fingerprint="rows-2")  # other rows, same id
    assert e.value.http_status == 409
    assert store.conflicts("a", "rows-2") and not store.conflicts("a", "rows-1")
    assert store.counters().recorded == 1
    assert store.feedback("a", [0]).correct == 1  # scored against the first prediction


def test_feedback_is_accepted_once() -> None:
    store = FeedbackStore(capacity=10, window=10, task=Task.CLASSIFICATION)
    store.record("r", [1, 2], "1")
    store.feedback("r", [1, 2])
    with pytest.raises(DuplicateFeedbackError, match="already received feedback") as e:
        store.feedback("r", [1, 2])
    assert e.value.http_status == 409
    assert store.counters().duplicate == 1
    assert store.metrics()["1"].count == 2  # the repeat changed nothing


def test_bad_labels_are_422_and_do_not_use_up_the_id() -> None:
    store = FeedbackStore(capacity=10, window=10, task=Task.CLASSIFICATION)
    store.record("r", [np.int64(1), np.int64(2)], "1")
    with pytest.raises(InvalidLabelsError, match="expected 2 value") as e:
        store.feedback("r", [1])
    assert e.value.http_status == 422
    with pytest.raises(InvalidLabelsError, match=r"labels\[1\]: expected a number .* got string"):
        store.feedback("r", [1, "2"])
    with pytest.raises(InvalidLabelsError, match=r"labels\[0\]: expected a number .* got bool"):
        store.feedback("r", [True, 2])
    with pytest.raises(InvalidLabelsError, match=r"labels\[0\]: expected a finite number"):
        store.feedback("r", [math.nan, 2])
    assert store.feedback("r", [1.0, 3]).correct == 1
    assert store.counters().invalid == 4

    reg = FeedbackStore(capacity=10, window=10, task=Task.REGRESSION)
    reg.record("r", [1.5], "1")
    with pytest.raises(InvalidLabelsError, match=r"labels\[0\]: expected a finite number"):
        reg.feedback("r", ["1.5"])
    with pytest.raises(InvalidLabelsError, match=r"labels\[0\]: expected a finite number"):
        reg.feedback("r", [math.inf])


def test_unknown_error_maps_to_404_and_reads_well() -> None:
    store = FeedbackStore(capacity=0, window=10, task=Task.CLASSIFICATION)
    store.record("r", [1], "1")  # capacity 0: nothing is kept
    with pytest.raises(UnknownRequestError) as e:
        store.feedback("r", [1])
    assert e.value.http_status == 404
    assert str(e.value).startswith("request id 'r' is unknown")


def test_request_ids_are_unique_and_short() -> None:
    gen = RequestIdGenerator()
    ids: list[str] = []

    def take() -> None:
        ids.extend(gen() for _ in range(5000))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 20_000
    assert all(i.startswith(gen.prefix + "-") for i in ids)
    assert RequestIdGenerator().prefix != gen.prefix
    assert RequestIdGenerator("abc")() == "abc-1"
