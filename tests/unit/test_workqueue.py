"""The work queue: one entry per key, never two workers on one key, backoff, delays."""

from __future__ import annotations

import threading
import time

from kubeloop import metrics as m
from kubeloop.controller import Controller, Result
from kubeloop.workqueue import QueueMetrics, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_added_many_times_is_queued_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    for _ in range(1000):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert q.get(timeout=0) == "a"
    assert q.get(timeout=0) == "b"
    assert q.get(timeout=0) is None


def test_a_key_being_processed_is_not_handed_out_again_until_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")  # an event while a worker has it
    assert q.get(timeout=0) is None  # not to a second worker
    q.done("a")
    assert q.get(timeout=0) == "a"  # once more, after the first is done
    q.done("a")
    assert q.get(timeout=0) is None


def test_backoff_doubles_per_failure_and_forget_resets_it() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(base_delay=0.1, max_delay=1.0, clock=clock)
    assert [q.add_rate_limited("a") for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert q.get(timeout=0) is None  # not due yet
    clock.now = 0.1
    assert q.get(timeout=0) == "a"
    q.done("a")
    q.forget("a")
    assert q.add_rate_limited("a") == 0.1


def test_add_after_keeps_the_earliest_timer_per_key() -> None:
    clock = Clock()
    q: WorkQueue[str] = WorkQueue(clock=clock)
    q.add_after("a", 10)
    q.add_after("a", 5)
    q.add_after("a", 20)
    assert q.pending_timers() == 1
    clock.now = 5
    assert q.get(timeout=0) == "a"
    q.done("a")
    clock.now = 30
    assert q.get(timeout=0) is None  # the superseded timers do not fire again


def test_memory_stays_bounded_under_churn() -> None:
    clock = Clock()
    q: WorkQueue[int] = WorkQueue(clock=clock)
    for i in range(10_000):
        q.add_after(i % 10, 1000 - i * 0.01)
    assert q.pending_timers() == 10
    assert len(q._delayed) < 200


def test_metrics_use_client_go_names() -> None:
    metrics = m.create_metrics()
    qm = QueueMetrics(
        depth=metrics.workqueue_depth.labels("x"),
        adds=metrics.workqueue_adds_total.labels("x"),
        queue_duration=metrics.workqueue_queue_duration_seconds.labels("x"),
        work_duration=metrics.workqueue_work_duration_seconds.labels("x"),
        retries=metrics.workqueue_retries_total.labels("x"),
    )
    q: WorkQueue[str] = WorkQueue(metrics=qm)
    q.add("a")
    q.add("b")
    reg = metrics.registry
    assert reg.get_sample_value("workqueue_depth", {"name": "x"}) == 2
    assert reg.get_sample_value("workqueue_adds_total", {"name": "x"}) == 2
    q.get(timeout=0)
    q.done("a")
    assert reg.get_sample_value("workqueue_depth", {"name": "x"}) == 1
    assert reg.get_sample_value("workqueue_work_duration_seconds_count", {"name": "x"}) == 1
    assert reg.get_sample_value("workqueue_queue_duration_seconds_count", {"name": "x"}) == 1


def test_controller_runs_objects_in_parallel_but_one_object_never_twice_at_once() -> None:
    metrics = m.create_metrics()
    lock = threading.Lock()
    running: dict[str, int] = {}
    overlap: list[str] = []
    peak = [0]
    calls: dict[str, int] = {}

    def reconcile(ns: str, name: str) -> Result:
        with lock:
            running[name] = running.get(name, 0) + 1
            calls[name] = calls.get(name, 0) + 1
            if running[name] > 1:
                overlap.append(name)
            peak[0] = max(peak[0], sum(running.values()))
        time.sleep(0.02)
        with lock:
            running[name] -= 1
        return Result()

    c = Controller("test", reconcile, workers=4, metrics=metrics)
    c.start()
    for _ in range(5):
        for i in range(8):
            c.enqueue("ns", f"o{i}")
        time.sleep(0.005)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (len(c.queue) or any(running.values())):
        time.sleep(0.01)
    time.sleep(0.1)
    c.stop()
    assert not overlap
    assert peak[0] > 1  # different objects in parallel
    assert set(calls) == {f"o{i}" for i in range(8)}
    assert metrics.registry.get_sample_value(
        "controller_runtime_reconcile_total", {"controller": "test", "result": "success"}
    ) == sum(calls.values())


def test_controller_retries_errors_with_backoff_and_requeues_on_request() -> None:
    attempts: list[float] = []

    def reconcile(ns: str, name: str) -> Result:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("transient")
        return Result()

    metrics = m.create_metrics()
    c = Controller("test", reconcile, workers=1, metrics=metrics, base_delay=0.05)
    c.start()
    c.enqueue("ns", "a")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(attempts) < 3:
        time.sleep(0.01)
    c.stop()
    assert len(attempts) == 3
    assert attempts[2] - attempts[1] >= attempts[1] - attempts[0] >= 0.04
    assert c.queue.failures(("ns", "a")) == 0  # success forgot the failures
    assert (
        metrics.registry.get_sample_value(
            "controller_runtime_reconcile_errors_total", {"controller": "test"}
        )
        == 2
    )


def test_controller_exports_unfinished_work_while_a_worker_is_busy() -> None:
    metrics = m.create_metrics()
    started, release = threading.Event(), threading.Event()

    def reconcile(ns: str, name: str) -> Result:
        started.set()
        release.wait(5)
        return Result()

    c = Controller("busy", reconcile, workers=1, metrics=metrics)
    reg = metrics.registry
    labels = {"name": "busy"}
    assert reg.get_sample_value("workqueue_unfinished_work_seconds", labels) == 0
    c.start()
    c.enqueue("ns", "a")
    assert started.wait(5)
    time.sleep(0.2)
    unfinished = reg.get_sample_value("workqueue_unfinished_work_seconds", labels)
    longest = reg.get_sample_value("workqueue_longest_running_processor_seconds", labels)
    release.set()
    assert unfinished is not None and unfinished >= 0.2
    assert longest is not None and longest >= 0.2
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and reg.get_sample_value(
        "workqueue_unfinished_work_seconds", labels
    ):
        time.sleep(0.01)
    c.stop()
    assert reg.get_sample_value("workqueue_unfinished_work_seconds", labels) == 0
    assert reg.get_sample_value("workqueue_longest_running_processor_seconds", labels) == 0
