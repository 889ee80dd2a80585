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

Pods that do not answer within ``timeout`` are skipped (and logged); the pure parsing and
aggregation functions are unit-tested on their own.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kubeloop.reconcile.loop_state import CanaryStats, Signals
from kubeloop_runtime import api

log = logging.getLogger(__name__)

PORT = 8080
REQUESTS_TOTAL = "kubeloop_serving_requests_total"
REQUEST_DURATION = "kubeloop_serving_request_duration_seconds"
MAX_BYTES = 4 * 1024 * 1024


# ----------------------------------------------------------------------------- pure parts


def aggregate_monitoring(docs: Sequence[Mapping[str, Any]]) -> Signals:
    """Combine the ``/monitoring`` documents of several pods into one :class:`Signals`."""
    drift: bool | None = None
    share: float | None = None
    features: list[str] = []
    acc_sum = err_sum = 0.0
    acc_n = err_n = 0
    for doc in docs:
        d = doc.get("drift") or {}
        if d.get("enabled") is not False and d.get("enough_data"):
            pod_drift = bool(d.get("dataset_drift"))
            drift = bool(drift) or pod_drift
            s = _number(d.get("share_drifted"))
            if s is not None:
                share = s if share is None else max(share, s)
            for f in d.get("drifted_features") or []:
                if isinstance(f, str) and f not in features:
                    features.append(f)
        for count, accuracy, rmse in _feedback_metrics(doc.get("feedback"), doc.get("version")):
            if accuracy is not None:
                acc_sum += accuracy * count
                acc_n += count
            if rmse is not None:
                err_sum += rmse * rmse * count
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


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _feedback_metrics(fb: Any, version: Any) -> list[tuple[int, float | None, float | None]]:
    """(labelled count, accuracy, rmse) from a pod's ``feedback`` block.

    Accepts the rolling metrics either flat (``{"count", "accuracy", "rmse"}``), under
    ``rolling``, or per version under ``metrics``/``versions`` (the pod's own version is
    preferred; a pod serves one version).
    """
    if not isinstance(fb, Mapping):
        return []
    candidates: list[Mapping[str, Any]] = []
    for key in ("metrics", "versions"):
        per = fb.get(key)
        if isinstance(per, Mapping):
            own = per.get(str(version)) if version is not None else None
            if isinstance(own, Mapping):
                candidates.append(own)
            else:
                candidates.extend(v for v in per.values() if isinstance(v, Mapping))
        elif isinstance(per, list):
            candidates.extend(v for v in per if isinstance(v, Mapping))
    if not candidates and isinstance(fb.get("rolling"), Mapping):
        candidates.append(fb["rolling"])
    if not candidates:
        candidates.append(fb)
    out: list[tuple[int, float | None, float | None]] = []
    for m in candidates:
        count = _labelled_count(m)
        if count <= 0:
            continue
        errors = m.get("errors")
        rmse = _number(m.get("rmse"))
        if rmse is None and isinstance(errors, Mapping):
            rmse = _number(errors.get("rmse"))
        out.append((count, _number(m.get("accuracy")), rmse))
    return out


def _labelled_count(m: Mapping[str, Any]) -> int:
    """Labelled predictions behind the rolling metrics: ``count``, or from ``counts``."""
    for key in ("count", "window_count"):
        count = m.get(key)
        if isinstance(count, int) and not isinstance(count, bool):
            return count
    counts = m.get("counts")
    if isinstance(counts, Mapping):
        for key in ("labelled_predictions", "labelled", "window"):
            v = counts.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        scored = [counts.get(k) for k in ("correct", "incorrect")]
        if all(isinstance(v, int) for v in scored):
            return sum(v for v in scored if isinstance(v, int))
    # Metrics without a count still say something: weigh them as one observation.
    return 1 if m.get("accuracy") is not None or m.get("errors") else 0


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
            elif sample.name == f"{REQUEST_DURATION}_bucket":
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
    counts: Sequence[RequestCounts], monitoring: Sequence[Mapping[str, Any]]
) -> CanaryStats:
    """Sum the canary pods' counters and histograms; accuracy from their monitoring."""
    total = sum(c.total for c in counts)
    errors = sum(c.errors for c in counts)
    merged: dict[float, float] = {}
    for c in counts:
        for le, v in c.buckets.items():
            merged[le] = merged.get(le, 0.0) + v
    sig = aggregate_monitoring(monitoring)
    return CanaryStats(
        pods=len(counts),
        requests=total,
        errors=errors,
        p99_latency=histogram_quantile(0.99, merged) if total > 0 else None,
        accuracy=sig.accuracy,
        accuracy_count=sig.accuracy_count,
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


def _json_docs(raw: Iterable[bytes | None]) -> list[dict[str, Any]]:
    out = []
    for r in raw:
        if r is None:
            continue
        try:
            doc = json.loads(r)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


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
    return aggregate_monitoring(_json_docs(raw))


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
    mon = _json_docs(_fetch_all((_url(ip, f"/v2/models/{isvc}/monitoring") for ip in ips), timeout))
    return canary_stats(counts, mon)
