"""A rate-limited work queue of object keys, in the manner of client-go's workqueue.

- A key waiting in the queue is there once, however often it is added (a set, so memory is
  bounded by the number of objects, not by the number of events).
- A key being processed is never handed to a second worker: added meanwhile, it is marked
  dirty and queued again when the first worker calls :meth:`done`.
- :meth:`add_after` delays a key (one pending timer per key, the earliest wins);
  :meth:`add_rate_limited` delays it exponentially by its number of failures
  (``base * 2**failures``, capped), and :meth:`forget` resets that count.

Metrics use client-go's names: ``workqueue_depth``, ``workqueue_adds_total``,
``workqueue_queue_duration_seconds``, ``workqueue_work_duration_seconds``,
``workqueue_retries_total``, ``workqueue_unfinished_work_seconds`` and
``workqueue_longest_running_processor_seconds``, each with the queue's ``name``.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class QueueMetrics:
    """The queue's series (prometheus_client metrics already labelled with the name)."""

    depth: Any
    adds: Any
    queue_duration: Any
    work_duration: Any
    retries: Any


class WorkQueue(Generic[K]):
    def __init__(
        self,
        *,
        base_delay: float = 0.005,
        max_delay: float = 300.0,
        metrics: QueueMetrics | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self._cond = threading.Condition()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: dict[K, float] = {}  # key -> when its processing started
        self._added_at: dict[K, float] = {}
        self._delayed: list[tuple[float, int, K]] = []  # heap of (when, seq, key)
        self._delayed_at: dict[K, float] = {}
        self._seq = 0
        self._failures: dict[K, int] = {}
        self._shutdown = False
        self._base = base_delay
        self._max = max_delay
        self._metrics = metrics
        self._clock = clock

    # ------------------------------------------------------------------ adding

    def add(self, key: K) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: K) -> None:
        if self._shutdown or key in self._dirty:
            return
        if self._metrics is not None:
            self._metrics.adds.inc()
        self._dirty.add(key)
        self._added_at.setdefault(key, self._clock())
        if key in self._processing:
            return  # queued again by done()
        self._queue.append(key)
        self._publish_depth()
        self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            when = self._clock() + delay
            current = self._delayed_at.get(key)
            if current is not None and current <= when:
                return  # an earlier timer is already pending
            self._delayed_at[key] = when
            self._seq += 1
            heapq.heappush(self._delayed, (when, self._seq, key))
            self._compact_locked()
            self._cond.notify()

    def add_rate_limited(self, key: K) -> float:
        """Add ``key`` after its exponential backoff; returns the delay."""
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        if self._metrics is not None:
            self._metrics.retries.inc()
        delay: float = min(self._base * (2.0**n), self._max)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def discard(self, key: K) -> None:
        """The object is gone: drop its backoff and any pending timer."""
        with self._cond:
            self._failures.pop(key, None)
            self._delayed_at.pop(key, None)  # its heap entry is skipped when it fires

    # ------------------------------------------------------------------ taking

    def get(self, timeout: float | None = None) -> K | None:
        """The next key to process (blocking); None on shutdown or timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                self._promote_due()
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    now = self._clock()
                    self._processing[key] = now
                    added = self._added_at.pop(key, now)
                    if self._metrics is not None:
                        self._metrics.queue_duration.observe(max(0.0, now - added))
                    self._publish_depth()
                    return key
                if self._shutdown:
                    return None
                wait = None
                if self._delayed:
                    wait = max(0.0, self._delayed[0][0] - self._clock())
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            when, _, key = heapq.heappop(self._delayed)
            if self._delayed_at.get(key) != when:
                continue  # superseded by an earlier timer, or discarded
            del self._delayed_at[key]
            self._add_locked(key)

    def _compact_locked(self) -> None:
        """Drop the heap entries of superseded timers: memory stays bounded by the keys."""
        if len(self._delayed) > 2 * len(self._delayed_at) + 64:
            live = [(w, s, k) for (w, s, k) in self._delayed if self._delayed_at.get(k) == w]
            heapq.heapify(live)
            self._delayed = live

    def done(self, key: K) -> None:
        with self._cond:
            started = self._processing.pop(key, None)
            if started is not None and self._metrics is not None:
                self._metrics.work_duration.observe(max(0.0, self._clock() - started))
            if key in self._dirty:
                self._queue.append(key)
                self._publish_depth()
                self._cond.notify()

    # ------------------------------------------------------------------ state

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def pending_timers(self) -> int:
        with self._cond:
            return len(self._delayed_at)

    def unfinished_seconds(self) -> tuple[float, float]:
        """(sum, longest) of the time the keys being processed have taken so far."""
        with self._cond:
            now = self._clock()
            ages = [now - t for t in self._processing.values()]
        return (sum(ages), max(ages, default=0.0))

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def _publish_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.depth.set(len(self._queue))
