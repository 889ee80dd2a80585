"""A canary's verdict from its numbers: promote, roll back, or wait. Pure: no I/O, no clock.

The numbers are the canary pods' own (``signals.read_canary``: request counts by status
code and the latency histogram since the pods started, live accuracy from feedback); the
limits are the ``analysis`` of ``spec.retraining`` or of a person's ``spec.canary``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from kubeloop.reconcile.loop_state import CanaryStats
from kubeloop_runtime import api


@dataclass(frozen=True)
class Verdict:
    decision: Literal["Pending", "Promote", "Rollback"]
    reason: str  # Rollback: error_rate | latency | accuracy; else ""
    message: str
    metrics: dict[str, float]


def analyse(
    analysis: api.AnalysisSpec,
    stats: CanaryStats | None,
    started: dt.datetime | None,
    now: dt.datetime,
) -> Verdict:
    """Promote, roll back, or wait: the canary's numbers against ``analysis``.

    Judged once the window has passed AND at least ``minRequests`` requests reached the
    canary (until then: Pending). Error rate counts 5xx only. p99 latency and live accuracy
    are checked when their limits are set and there is data (accuracy needs labels).
    """
    if started is None:
        return Verdict("Pending", "", "waiting for the canary pods to be ready", {})
    elapsed = max(0.0, (now - started).total_seconds())
    metrics: dict[str, float] = {"elapsedSeconds": round(elapsed, 1)}
    if stats is None or stats.pods == 0:
        return Verdict("Pending", "", "no canary pod answered with metrics yet", metrics)
    metrics["requests"] = stats.requests
    metrics["errorRate"] = round(stats.error_rate, 6)
    if stats.p99_latency is not None:
        metrics["p99LatencySeconds"] = round(stats.p99_latency, 6)
    if stats.accuracy is not None:
        metrics["accuracy"] = round(stats.accuracy, 6)
        metrics["labelled"] = float(stats.accuracy_count)
    if elapsed < analysis.window_seconds:
        return Verdict(
            "Pending",
            "",
            f"analysing: {elapsed:.0f}s of {analysis.window_seconds}s,"
            f" {stats.requests:.0f} requests",
            metrics,
        )
    if stats.requests < analysis.min_requests:
        return Verdict(
            "Pending",
            "",
            f"waiting for traffic: {stats.requests:.0f} of {analysis.min_requests} requests"
            " reached the canary",
            metrics,
        )
    failures: list[tuple[str, str]] = []
    if stats.error_rate > analysis.max_error_rate:
        failures.append(
            (
                "error_rate",
                f"error rate {stats.error_rate:.4g} > maxErrorRate {analysis.max_error_rate:g}"
                f" ({stats.errors:.0f} of {stats.requests:.0f} requests failed with 5xx)",
            )
        )
    limit = analysis.max_p99_latency_seconds
    if limit is not None and stats.p99_latency is not None and stats.p99_latency > limit:
        failures.append(
            ("latency", f"p99 latency {stats.p99_latency:.4g}s > maxP99LatencySeconds {limit:g}")
        )
    if (
        analysis.min_accuracy is not None
        and stats.accuracy is not None
        and stats.accuracy < analysis.min_accuracy
    ):
        failures.append(
            (
                "accuracy",
                f"live accuracy {stats.accuracy:.4g} < minAccuracy {analysis.min_accuracy:g}"
                f" over {stats.accuracy_count} labelled predictions",
            )
        )
    if failures:
        return Verdict("Rollback", failures[0][0], "; ".join(m for _, m in failures), metrics)
    parts = [f"error rate {stats.error_rate:.4g} <= {analysis.max_error_rate:g}"]
    if limit is not None and stats.p99_latency is not None:
        parts.append(f"p99 {stats.p99_latency:.4g}s <= {limit:g}s")
    if analysis.min_accuracy is not None:
        parts.append(
            f"accuracy {stats.accuracy:.4g} >= {analysis.min_accuracy:g}"
            if stats.accuracy is not None
            else "no labels for accuracy"
        )
    return Verdict(
        "Promote",
        "",
        f"passed after {elapsed:.0f}s and {stats.requests:.0f} requests: " + ", ".join(parts),
        metrics,
    )
