"""Reconcile metrics for every controller: one context manager, one decorator.

``controller_runtime_reconcile_total{controller,result}`` counts each reconciliation by its outcome
(``success``; ``requeue`` for a :class:`kopf.TemporaryError`, i.e. "not yet, try again";
``error`` for anything else), ``controller_runtime_reconcile_errors_total{controller}`` counts the
errors, and ``controller_runtime_reconcile_time_seconds{controller}`` times each one, as
controller-runtime does for Go controllers.

Use the decorator on a kopf handler (it finds ``memo`` among kopf's keyword arguments)::

    @kopf.on.create(...)
    @instrumented(metrics.TRAININGJOB)
    def reconcile(body, memo, **_): ...

or the context manager around any block that has the metrics object at hand.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import kopf

from kubeloop.metrics import ERROR, REQUEUE, SUCCESS, OperatorMetrics

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["ERROR", "REQUEUE", "SUCCESS", "instrumented", "reconciling"]


@contextmanager
def reconciling(metrics: OperatorMetrics | None, controller: str) -> Iterator[None]:
    """Count and time one reconciliation of ``controller``; re-raises whatever it raised."""
    started = time.perf_counter()
    result = ERROR
    try:
        yield
        result = SUCCESS
    except kopf.TemporaryError:
        result = REQUEUE
        raise
    finally:
        if metrics is not None:
            metrics.reconcile_total.labels(controller, result).inc()
            if result == ERROR:
                metrics.reconcile_errors_total.labels(controller).inc()
            metrics.reconcile_time_seconds.labels(controller).observe(time.perf_counter() - started)


def instrumented(controller: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a sync kopf handler so each call is counted and timed under ``controller``.

    The metrics come from ``memo.metrics`` (built at startup); a memo without them (a unit
    test calling the handler directly) just skips the metrics.
    """

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            memo: Any = kwargs.get("memo")
            metrics: OperatorMetrics | None = getattr(memo, "metrics", None)
            with reconciling(metrics, controller):
                return fn(*args, **kwargs)

        return wrapper

    return wrap
