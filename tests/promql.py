"""Small helpers shared by the dashboard and alert tests: the metric-name contract and a
PromQL scanner good enough to find which metrics an expression reads.

The contract lists every series Kubeloop exports (operator/kubeloop/metrics.py and
kubeloop_runtime/serve/metrics.py) plus the standard ones dashboards may use.
"""

from __future__ import annotations

import re

OPERATOR_METRICS = frozenset(
    {
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds",
        "kubeloop_objects",
        "kubeloop_training_runs_total",
        "kubeloop_training_duration_seconds",
        "kubeloop_model_version_metric",
        "kubeloop_model_version_info",
        "kubeloop_rollouts_total",
        "kubeloop_rollbacks_total",
        "kubeloop_promotions_total",
        "kubeloop_retrains_total",
        "controller_runtime_active_workers",
        "controller_runtime_max_concurrent_reconciles",
        "workqueue_depth",
        "workqueue_adds_total",
        "workqueue_queue_duration_seconds",
        "workqueue_work_duration_seconds",
        "workqueue_retries_total",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
        "kubeloop_cache_objects",
        "rest_client_requests_total",
        "leader_election_master_status",
        "rest_client_request_retries_total",
        "kubeloop_watch_relists_total",
        "kubeloop_reconcile_failures_total",
    }
)
SERVING_METRICS = frozenset(
    {
        "kubeloop_serving_requests_total",
        "kubeloop_serving_request_duration_seconds",
        "kubeloop_serving_batch_size",
        "kubeloop_serving_predictions_total",
        "kubeloop_serving_prediction_value",
        "kubeloop_serving_model_info",
        "request_predict_seconds",
        "kubeloop_drift_score",
        "kubeloop_drift_p_value",
        "kubeloop_feature_drifted",
        "kubeloop_dataset_drift",
        "kubeloop_drift_share",
        "kubeloop_drift_window_rows",
        "kubeloop_live_accuracy",
        "kubeloop_live_error",
        "kubeloop_feedback_total",
    }
)
HISTOGRAMS = frozenset(
    {
        "controller_runtime_reconcile_time_seconds",
        "workqueue_queue_duration_seconds",
        "workqueue_work_duration_seconds",
        "kubeloop_training_duration_seconds",
        "kubeloop_serving_request_duration_seconds",
        "kubeloop_serving_batch_size",
        "kubeloop_serving_prediction_value",
        "request_predict_seconds",
    }
)
STANDARD_METRICS = frozenset(
    {
        "up",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "python_gc_objects_collected_total",
        "python_gc_collections_total",
        "python_info",
    }
)


def known_series() -> frozenset[str]:
    """Every series name a query may select (histograms expand to _bucket/_sum/_count)."""
    names = set(OPERATOR_METRICS | SERVING_METRICS | STANDARD_METRICS)
    for h in HISTOGRAMS:
        names |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
        names.discard(h)  # a histogram has no series under its bare name
    return frozenset(names)


FUNCTIONS = frozenset(
    {
        "abs",
        "absent",
        "absent_over_time",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_quantile",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "time",
        "timestamp",
        "vector",
        "year",
    }
)
AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)
KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    }
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_DURATION = re.compile(r"\[[^\]]*\]")
_GRAFANA_VAR = re.compile(r"\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?")


def balanced(expr: str) -> bool:
    """Parentheses, braces and brackets nest properly (outside string literals)."""
    pairs = {")": "(", "}": "{", "]": "["}
    stack: list[str] = []
    for ch in _STRING.sub('""', expr):
        if ch in "({[":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


def selected_metrics(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, labels or keywords)."""
    s = _STRING.sub('""', expr)
    s = _GRAFANA_VAR.sub("x", s)
    s = _DURATION.sub("", s)
    # Drop label matchers and grouping label lists: {...} and by/without/on/ignoring (...).
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    found: set[str] = set()
    for m in _IDENT.finditer(s):
        name = m.group(0)
        rest = s[m.end() :].lstrip()
        if name in KEYWORDS or name == "x":
            continue
        if rest.startswith("(") and (name in FUNCTIONS or name in AGGREGATIONS):
            continue
        # Numbers such as 1e3 never match _IDENT's first character; durations are gone.
        found.add(name)
    return found
