"""Reading the loop's signals: /monitoring aggregation, /metrics parsing, p99 from buckets."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from kubeloop import signals
from kubeloop_runtime import api


def doc(
    drift: bool, share: float, enough: bool = True, fb: api.FeedbackStats | None = None
) -> api.MonitoringDocument:
    """A pod's document in the contract's shape (tests/unit/test_monitoring_contract.py
    checks that shape against the real server)."""
    return api.MonitoringDocument(
        model="iris",
        name="iris",
        version="1",
        model_version="iris-v1",
        role="stable",
        runtime="onnx",
        drift=api.DriftSummary(
            enabled=True,
            enough_data=enough,
            dataset_drift=drift,
            share_drifted=share,
            drifted_features=["a"] if drift else [],
            window_count=100,
            window_size=100,
        ),
        feedback=fb,
    )


def labelled(
    count: int, accuracy: float | None = None, rmse: float | None = None
) -> api.FeedbackStats:
    return api.FeedbackStats(
        accuracy=accuracy, errors=api.FeedbackErrors(rmse=rmse), window_count=count
    )


def test_drift_if_any_pod_says_so() -> None:
    s = signals.aggregate_monitoring([doc(False, 0.0), doc(True, 0.75), doc(False, 0.25)])
    assert (s.pods, s.drift, s.drift_share, s.drifted_features) == (3, True, 0.75, ("a",))


def test_pods_without_enough_data_do_not_decide() -> None:
    s = signals.aggregate_monitoring([doc(True, 1.0, enough=False), doc(False, 0.0, enough=False)])
    assert s.drift is None
    s = signals.aggregate_monitoring([doc(True, 1.0, enough=False), doc(False, 0.0)])
    assert s.drift is False


def test_accuracy_is_weighted_by_labelled_count() -> None:
    a = doc(False, 0.0, fb=labelled(30, accuracy=1.0))
    b = doc(False, 0.0, fb=labelled(10, accuracy=0.5))
    s = signals.aggregate_monitoring([a, b])
    assert s.accuracy == (30 * 1.0 + 10 * 0.5) / 40
    assert s.accuracy_count == 40
    empty = signals.aggregate_monitoring([doc(False, 0.0, fb=labelled(0, accuracy=None))])
    assert empty.accuracy is None and empty.accuracy_count == 0


def test_live_error_is_pooled_rmse() -> None:
    a = doc(False, 0.0, fb=labelled(10, rmse=1.0))
    b = doc(False, 0.0, fb=labelled(30, rmse=3.0))
    s = signals.aggregate_monitoring([a, b])
    assert s.live_error == pytest.approx(((10 * 1 + 30 * 9) / 40) ** 0.5)


def test_documents_that_are_not_monitoring_are_skipped() -> None:
    assert signals.parse_monitoring(b"<html>") is None
    assert signals.parse_monitoring(b'{"drift": {"enabled": true}}') is None  # no model, role


def page(codes: dict[str, int], latencies: list[float]) -> str:
    reg = CollectorRegistry()
    c = Counter(
        "kubeloop_serving_requests", "", ["model", "version", "protocol", "code"], registry=reg
    )
    for code, n in codes.items():
        c.labels("iris", "2", "v2", code).inc(n)
    h = Histogram(
        "kubeloop_serving_request_duration_seconds", "", ["model", "version", "protocol"],
        buckets=(0.001, 0.01, 0.1, 1.0), registry=reg,
    )  # fmt: skip
    for v in latencies:
        h.labels("iris", "2", "v2").observe(v)
    return generate_latest(reg).decode()


def test_parse_metrics_counts_5xx_only() -> None:
    counts = signals.parse_metrics(page({"200": 90, "422": 7, "500": 3}, [0.005] * 10))
    assert (counts.total, counts.errors) == (100, 3)
    assert counts.buckets[float("inf")] == 10


def test_canary_stats_sum_pods_and_p99() -> None:
    a = signals.parse_metrics(page({"200": 50}, [0.0005] * 99 + [0.5]))
    b = signals.parse_metrics(page({"200": 40, "503": 10}, [0.0005] * 100))
    s = signals.canary_stats([a, b], [])
    assert (s.pods, s.requests, s.errors) == (2, 100, 10)
    assert s.error_rate == 0.1  # 10 of 100: exact
    assert s.p99_latency is not None and s.p99_latency <= 0.001


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        ({0.1: 50, 1.0: 100, float("inf"): 100}, 0.5, 0.1),
        ({0.1: 0, 1.0: 100, float("inf"): 100}, 0.5, 0.55),
        ({0.1: 0, 1.0: 0, float("inf"): 10}, 0.99, 1.0),
        ({0.1: 0, float("inf"): 0}, 0.99, None),
    ],
)
def test_histogram_quantile(buckets: dict[float, float], q: float, expected: float | None) -> None:
    got = signals.histogram_quantile(q, buckets)
    assert got == (pytest.approx(expected) if expected is not None else None)


def pod(role: str, ip: str, ready: bool = True, phase: str = "Running") -> dict[str, object]:
    return {
        "metadata": {"labels": {api.LABEL_ROLE: role}},
        "status": {
            "phase": phase,
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_pods_of_role_ready_only() -> None:
    pods = [
        pod("stable", "10.0.0.1"),
        pod("stable", "10.0.0.2", ready=False),
        pod("canary", "10.0.0.3"),
    ]
    assert signals.pods_of(pods, "stable") == ["10.0.0.1"]
    assert signals.pods_of(pods, "canary") == ["10.0.0.3"]


def test_unreachable_pods_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    # A loopback port nothing listens on (whatever else runs on 8080 here): refused
    # quickly, not an exception.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    monkeypatch.setattr(signals, "PORT", free)
    s = signals.read_signals("iris", [pod("stable", "127.0.0.1")], timeout=0.5)
    assert s.pods == 0 and s.drift is None
