"""A controller: a work queue of (namespace, name) keys and worker threads that reconcile them.

Like a controller-runtime controller: event handlers (fed by the informers in
:mod:`kubeloop.cache`) only enqueue keys; ``workers`` threads take keys and call the
level-based ``reconcile(namespace, name)``, which reads the caches, writes differences and
returns a :class:`Result`. Different objects are reconciled in parallel, one object never
twice at once (the queue guarantees it), and a failing object is retried with per-object
exponential backoff while the others proceed.

Outcomes, counted in ``controller_runtime_reconcile_total{controller,result}``:

- success: the key's backoff is reset; ``Result.requeue_after`` schedules the next look
  (for work that must be polled, e.g. the closed loop's signals);
- ``kopf.TemporaryError(delay=...)``: "not yet", looked at again after ``delay``;
- ``kopf.PermanentError``: the spec is invalid (already written to status), not retried;
- any other exception: logged, retried with exponential backoff, and handed at once to
  ``on_failure(namespace, name, exception)`` which tells it on the object (a condition and
  a Warning Event, :mod:`kubeloop.handlers._failures`); the next success calls
  ``on_success(namespace, name)``, which clears it.

Workers start only on the leader; a follower keeps its caches warm, so a new leader starts
at once (it enqueues every cached object). ``is_leader`` is checked again before each key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import kopf

from kubeloop.handlers._instrument import reconciling
from kubeloop.kube import NotLeaderError
from kubeloop.metrics import OperatorMetrics
from kubeloop.workqueue import QueueMetrics, WorkQueue

logger = logging.getLogger("kubeloop.controller")

Key = tuple[str, str]


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None


Reconciler = Callable[[str, str], Result | None]
OnFailure = Callable[[str, str, Exception], None]
OnSuccess = Callable[[str, str], None]


class Controller:
    def __init__(
        self,
        name: str,
        reconcile: Reconciler,
        *,
        workers: int,
        metrics: OperatorMetrics | None,
        is_leader: Callable[[], bool] = lambda: True,
        base_delay: float = 0.05,
        max_delay: float = 300.0,
        on_failure: OnFailure | None = None,
        on_success: OnSuccess | None = None,
    ) -> None:
        self.name = name
        self._reconcile = reconcile
        self._workers = workers
        self._metrics = metrics
        self._is_leader = is_leader
        self._on_failure = on_failure
        self._on_success = on_success
        qm = None
        if metrics is not None:
            qm = QueueMetrics(
                depth=metrics.workqueue_depth.labels(name),
                adds=metrics.workqueue_adds_total.labels(name),
                queue_duration=metrics.workqueue_queue_duration_seconds.labels(name),
                work_duration=metrics.workqueue_work_duration_seconds.labels(name),
                retries=metrics.workqueue_retries_total.labels(name),
            )
            metrics.max_concurrent_reconciles.labels(name).set(workers)
            metrics.active_workers.labels(name).set(0)
        self.queue: WorkQueue[Key] = WorkQueue(
            base_delay=base_delay, max_delay=max_delay, metrics=qm
        )
        if metrics is not None:
            # Computed on scrape from the keys being processed (no thread keeps them fresh).
            queue = self.queue
            metrics.workqueue_unfinished_work_seconds.labels(name).set_function(
                lambda: queue.unfinished_seconds()[0]
            )
            metrics.workqueue_longest_running_processor_seconds.labels(name).set_function(
                lambda: queue.unfinished_seconds()[1]
            )
        self._threads: list[threading.Thread] = []
        self._active = 0
        self._active_lock = threading.Lock()

    def enqueue(self, namespace: str, name: str) -> None:
        self.queue.add((namespace, name))

    def enqueue_after(self, namespace: str, name: str, delay: float) -> None:
        self.queue.add_after((namespace, name), delay)

    def forget(self, namespace: str, name: str) -> None:
        self.queue.discard((namespace, name))

    def start(self) -> None:
        for i in range(self._workers):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self.queue.shutdown()
        for t in self._threads:
            t.join(timeout)

    def _set_active(self, delta: int) -> None:
        with self._active_lock:
            self._active += delta
            if self._metrics is not None:
                self._metrics.active_workers.labels(self.name).set(self._active)

    def _work(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                if self._is_leader():
                    self._set_active(1)
                    try:
                        self.process(key)
                    finally:
                        self._set_active(-1)
                # else: not the leader (lost the Lease): the key is dropped, and the next
                # term enqueues every object again (Manager._start_leading).
            finally:
                self.queue.done(key)

    def process(self, key: Key) -> None:
        """Reconcile one key now and schedule what comes next (also used by tests)."""
        namespace, name = key
        try:
            with reconciling(self._metrics, self.name):
                result = self._reconcile(namespace, name)
        except kopf.TemporaryError as e:
            self.queue.forget(key)
            self.queue.add_after(key, float(e.delay or 1.0))
            logger.info("Will look again at %s %s/%s: %s", self.name, namespace, name, e)
        except kopf.PermanentError as e:
            self.queue.forget(key)
            logger.warning("Gave up on %s %s/%s: %s", self.name, namespace, name, e)
        except NotLeaderError:
            logger.info("Stopped reconciling %s %s/%s: not the leader", self.name, namespace, name)
        except Exception as e:
            delay = self.queue.add_rate_limited(key)
            logger.exception(
                "Reconciling %s %s/%s failed; retrying in %.2fs", self.name, namespace, name, delay
            )
            self._tell(self._on_failure, namespace, name, e)
        else:
            self.queue.forget(key)
            if result is not None and result.requeue_after is not None:
                self.queue.add_after(key, result.requeue_after)
            self._tell(self._on_success, namespace, name)

    def _tell(self, hook: Callable[..., None] | None, *args: object) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except NotLeaderError:
            pass
        except Exception:  # telling must never stop the worker
            logger.exception("Could not record the outcome of %s %s/%s", self.name, *args[:2])
