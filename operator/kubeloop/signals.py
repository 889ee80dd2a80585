"""Reads the closed loop's signals from the serving pods: the only HTTP the operator does.

Why straight from the pods and not from Prometheus: it works on a bare kind install with
no monitoring stack, needs no setup or query URL, and the numbers are exactly what the
servers computed (drift over each pod's own window, live accuracy from its feedback).
In tests, pod IPs are loopback addresses where the real ``kubeloop-serve`` runs.

- :func:`read_signals` asks each Ready **stable** pod for
  ``GET /v2/models/<isvc>/monitoring`` and aggregates: dataset drift if any pod's window
  (with enough data) says so, the drift share as the largest, live accuracy as the mean
  weighted by each pod's labelled count.
- :func:`read_canary` asks each Ready **canary** pod for ``GET /metrics`` (request counts
  by status code, the latency histogram; the pods are new with the canary, so counters
  since start are the canary's) and for ``/monitoring`` (live accuracy).

Pods that do not answer within ``timeout``, or answer with something other than the
document (``kubeloop_runtime.contracts.MonitoringDocument``), are skipped (and logged);
the pure parsing and aggregation functions are unit-tested on their own.
"""

from __future__ import annotations

import logging
import math
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from kubeloop.reconcile.loop_state import CanaryStats, Signals
from kubeloop_runtime import api
from kubeloop_runtime.contracts import (
    HTTP_PORT,
    REQUEST_DURATION_SECONDS,
    REQUESTS_TOTAL,
    MonitoringDocument,
)

log = logging.getLogger(__name__)

PORT = HTTP_PORT  # a module attribute, so a test can point it at a free port
MAX_BYTES = 4 * 1024 * 1024


# ----------------------------------------------------------------------------- pure parts


def aggregate_monitoring(docs: Sequence[MonitoringDocument]) -> Signals:
    """Combine the ``/monitoring`` documents of several pods into one :class:`Signals`."""
    drift: bool | None = None
    share: float | None = None
    features: list[str] = []
    acc_sum = err_sum = 0.0
    acc_n = err_n = 0
    for doc in docs:
        d = doc.drift
        if d.enabled and d.enough_data:
            drift = bool(drift) or d.dataset_drift
            if d.share_drifted is not None:
                share = d.share_drifted if share is None else max(share, d.share_drifted)
            for f in d.drifted_features:
                if f not in features:
                    features.append(f)
        fb = doc.feedback
        # Rolling over the pod's last window_count labelled predictions (its own version).
        if fb is None or fb.window_count <= 0:
            continue
        count = fb.window_count
        if fb.accuracy is not None:
            acc_sum += fb.accuracy * count
            acc_n += count
        if fb.errors.rmse is not None:
            err_sum += fb.errors.rmse * fb.errors.rmse * count
            err_n += count
    return Signals(
        pods=len(docs),
        drift=drift,
        drift_share=share,
        drifted_features=tuple(features),
        accuracy=acc_sum / acc_n if acc_n else None,
        accuracy_count=max(acc_n, err_n),
        live_error=math.sqrt(err_sum / err_n) if err_n else None,
    )


def parse_monitoring(raw: bytes | str) -> MonitoringDocument | None:
    """One pod's ``/monitoring`` answer, or None (logged) when it is not that document."""
    try:
        return MonitoringDocument.model_validate_json(raw)
    except ValidationError as e:
        log.info("Unparseable /monitoring document: %s", e)
        return None


@dataclass(frozen=True)
class RequestCounts:
    """One pod's inference request counters and latency histogram (cumulative)."""

    total: float
    errors: float
    buckets: dict[float, float]  # upper bound -> cumulative count (+Inf included)


def parse_metrics(text: str) -> RequestCounts:
    """Request totals, 5xx errors and the latency histogram from a ``/metrics`` page."""
    total = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == REQUESTS_TOTAL:
                total += sample.value
                if str(sample.labels.get("code", "")).startswith("5"):
                    errors += sample.value
            elif sample.name == f"{REQUEST_DURATION_SECONDS}_bucket":
                le = float(sample.labels.get("le", "+Inf"))
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return RequestCounts(total, errors, buckets)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated as Prometheus does."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if math.isinf(b):
                return prev_bound  # the highest finite bound, as histogram_quantile does
            if c == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (c - prev_count)
        prev_bound, prev_count = b, c
    return prev_bound


def canary_stats(
    counts: Sequence[RequestCounts], monitoring: Sequence[MonitoringDocument]
) -> CanaryStats:
    """Sum the canary pods' counters and histograms; accuracy from their monitoring."""
    total = sum(c.total for c in counts)
    errors = sum(c.errors for c in counts)
    merged: dict[float, float] = {}
    for c in counts:
        for le, v in c.buckets.items():
            merged[le] = merged.get(le, 0.0) + v
    live = aggregate_monitoring(monitoring)
    return CanaryStats(
        pods=len(counts),
        requests=total,
        errors=errors,
        p99_latency=histogram_quantile(0.99, merged) if total > 0 else None,
        accuracy=live.accuracy,
        accuracy_count=live.accuracy_count,
    )


# ----------------------------------------------------------------------------- HTTP


def pod_ready_ip(pod: Mapping[str, Any]) -> str | None:
    """The IP of a Running, Ready, not-terminating pod; None otherwise."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    st = pod.get("status") or {}
    if st.get("phase") != "Running" or not st.get("podIP"):
        return None
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
    )
    return str(st["podIP"]) if ready else None


def _get(url: str, timeout: float) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data: bytes = r.read(MAX_BYTES)
            return data
    except (urllib.error.URLError, OSError, ValueError) as e:
        log.info("Could not read %s: %s", url, e)
        return None


def _url(ip: str, path: str) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{PORT}{path}"


def _fetch_all(urls: Iterable[str], timeout: float) -> list[bytes | None]:
    urls = list(urls)
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        return list(pool.map(lambda u: _get(u, timeout), urls))


def _monitoring_docs(raw: Iterable[bytes | None]) -> list[MonitoringDocument]:
    docs = (parse_monitoring(r) for r in raw if r is not None)
    return [d for d in docs if d is not None]


def pods_of(pods: Iterable[Mapping[str, Any]], role: str) -> list[str]:
    """Ready pod IPs of one role (``stable`` or ``canary``)."""
    ips = []
    for p in pods:
        labels = (p.get("metadata") or {}).get("labels") or {}
        if labels.get(api.LABEL_ROLE) != role:
            continue
        ip = pod_ready_ip(p)
        if ip is not None:
            ips.append(ip)
    return ips


def read_signals(isvc: str, pods: Iterable[Mapping[str, Any]], timeout: float) -> Signals:
    """Drift and live accuracy over the Ready stable pods of ``isvc``."""
    ips = pods_of(pods, "stable")
    raw = _fetch_all((_url(ip, f"/v2/models/{isvc}/monitoring") for ip in ips), timeout)
    return aggregate_monitoring(_monitoring_docs(raw))


def read_canary(isvc: str, pods: Iterable[Mapping[str, Any]], timeout: float) -> CanaryStats:
    """Request counts, 5xx, p99 latency and live accuracy over the Ready canary pods."""
    ips = pods_of(pods, "canary")
    metrics_raw = _fetch_all((_url(ip, "/metrics") for ip in ips), timeout)
    counts = []
    for r in metrics_raw:
        if r is None:
            continue
        try:
            counts.append(parse_metrics(r.decode("utf-8", errors="replace")))
        except ValueError as e:
            log.info("Unparseable /metrics from a canary pod of %s: %s", isvc, e)
    mon = _monitoring_docs(
        _fetch_all((_url(ip, f"/v2/models/{isvc}/monitoring") for ip in ips), timeout)
    )
    return canary_stats(counts, mon)
