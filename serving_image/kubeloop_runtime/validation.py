"""Data validation: a dataset (or the serving window) against a version's reference statistics.

The idea is TFX's ExampleValidator: what a model was trained on is the expected schema of
the next dataset. The expected schema here is what every ModelVersion already carries:
its signature (feature names, dtypes, the categories the encoder learned) and the
reference statistics written next to its artifact (``reference.json``: quantile bins,
category shares, the range seen). Anomaly kinds, one per column at most for each kind:

========================  =====================================================================
``MissingColumn``         a feature of the reference is not in the dataset
``ExtraColumn``           a feature of the dataset is not in the reference
``TypeChanged``           numeric became text or bool, or the other way (int64 and float64 agree)
``AllNull``               every value of the column is missing (the reference had values)
``UnseenCategory``        a categorical value the reference never saw (missing values excepted)
``OutOfRange``            more than ``maxOutOfRangeFraction`` of the values outside [min, max]
``Drift``                 PSI against the reference's bins at or above ``maxPsi``
========================  =====================================================================

:func:`validate_frame` runs in the trainer before fitting; :func:`serving_skew` runs the
checks that apply to rows the server has already validated (all but the first three) on
the drift window, for the ``/monitoring`` document's training-serving skew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kubeloop_runtime import api, drift

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["dtype_name", "serving_skew", "summarize", "validate_frame"]

_EXAMPLES = 3
_NUMERIC = frozenset({"int64", "float64"})


def dtype_name(series: pd.Series) -> str:
    """The signature dtype of a column: bool, int64, float64 or string."""
    import pandas as pd  # noqa: PLC0415  (pandas is a runtime-extra dependency)

    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int64"
    if pd.api.types.is_float_dtype(series):
        return "float64"
    return "string"


def _compatible(expected: str, found: str) -> bool:
    return expected == found or (expected in _NUMERIC and found in _NUMERIC)


def _anomaly(column: str, kind: str, message: str) -> api.Anomaly:
    return api.Anomaly.model_validate(
        {"column": column[:128], "kind": kind, "message": message[:256]}
    )


def _examples(values: Sequence[str]) -> str:
    shown = ", ".join(repr(v[:32]) for v in values[:_EXAMPLES])
    return shown + (", ..." if len(values) > _EXAMPLES else "")


def _range_anomaly(
    name: str, ref: drift.NumericReference, finite: np.ndarray[Any, Any], limit: float
) -> api.Anomaly | None:
    if ref.min is None or ref.max is None or finite.size == 0:
        return None
    outside = int(np.count_nonzero((finite < ref.min) | (finite > ref.max)))
    share = outside / finite.size
    if outside == 0 or share <= limit:
        return None
    return _anomaly(
        name,
        "OutOfRange",
        f"{outside} of {finite.size} values ({share:.1%}) outside the seen range"
        f" [{ref.min:.6g}, {ref.max:.6g}]; found [{finite.min():.6g}, {finite.max():.6g}]",
    )


def _numeric_psi(ref: drift.NumericReference, finite: np.ndarray[Any, Any]) -> float:
    edges = np.asarray(ref.edges, dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=edges.size + 1)
    return drift.psi(ref.proportions, counts / finite.size)


def _drift_anomaly(name: str, value: float, limit: float) -> api.Anomaly | None:
    if value < limit:
        return None
    return _anomaly(name, "Drift", f"PSI {value:.3g} against the reference, limit {limit:g}")


def _known_categories(
    ref: drift.CategoricalReference, feature: api.FeatureSpec | None
) -> set[str] | None:
    """Every category the reference version knows; None when no complete list exists."""
    if ref.proportions[-1] == 0.0:  # nothing fell outside the top categories
        return set(ref.categories)
    if feature is not None and feature.categories is not None:
        return set(feature.categories) | set(ref.categories)
    return None


def _check_numeric(
    name: str, series: pd.Series, ref: drift.NumericReference, spec: api.ValidationSpec
) -> list[api.Anomaly]:
    values = np.asarray(series, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    found = [_range_anomaly(name, ref, finite, spec.max_out_of_range_fraction)]
    found.append(_drift_anomaly(name, _numeric_psi(ref, finite), spec.max_psi))
    return [a for a in found if a is not None]


def _check_categorical(
    name: str,
    series: pd.Series,
    ref: drift.CategoricalReference,
    feature: api.FeatureSpec | None,
    spec: api.ValidationSpec,
) -> list[api.Anomaly]:
    counts: dict[str, int] = {}
    for value, n in series.value_counts(dropna=False, sort=False).items():
        key = drift.category_key(value)
        counts[key] = counts.get(key, 0) + int(n)
    found: list[api.Anomaly] = []
    known = _known_categories(ref, feature)
    if known is not None:
        unseen = sorted(k for k in counts if k not in known and k != drift.MISSING)
        if unseen:
            rows = sum(counts[k] for k in unseen)
            found.append(
                _anomaly(
                    name,
                    "UnseenCategory",
                    f"{len(unseen)} unseen categor{'y' if len(unseen) == 1 else 'ies'} in"
                    f" {rows} rows: {_examples(unseen)}",
                )
            )
    index = {c: i for i, c in enumerate(ref.categories)}
    shares = np.zeros(len(ref.proportions), dtype=np.float64)
    total = sum(counts.values())
    for key, n in counts.items():
        shares[index.get(key, len(ref.categories))] += n / total
    anomaly = _drift_anomaly(name, drift.psi(ref.proportions, shares), spec.max_psi)
    return found + ([anomaly] if anomaly is not None else [])


def validate_frame(
    frame: pd.DataFrame,
    features: Sequence[str],
    reference: drift.ReferenceStats,
    signature: api.Signature,
    spec: api.ValidationSpec,
) -> list[api.Anomaly]:
    """Every anomaly of ``frame``'s ``features`` against a version's statistics and signature.

    ``features`` are the columns the run would train on (``spec.dataset.features``, or
    every column but the target), in the dataset's order.
    """
    refs = {f.name: f for f in reference.features}
    inputs = {f.name: f for f in signature.inputs}
    present = set(str(c) for c in frame.columns)
    anomalies = [
        _anomaly(name, "MissingColumn", "in the reference's features, not in the dataset")
        for name in refs
        if name not in present
    ]
    for name in features:
        ref = refs.get(name)
        if ref is None:
            anomalies.append(_anomaly(name, "ExtraColumn", "not among the reference's features"))
            continue
        if name not in present:
            continue
        series = frame[name]
        if len(series) > 0 and int(series.isna().sum()) == len(series):
            anomalies.append(_anomaly(name, "AllNull", f"all {len(series)} values are missing"))
            continue
        feature = inputs.get(name)
        expected = feature.dtype if feature is not None else None
        found = dtype_name(series)
        if expected is not None and not _compatible(expected, found):
            anomalies.append(
                _anomaly(name, "TypeChanged", f"dtype {found}, the reference has {expected}")
            )
            continue
        if isinstance(ref, drift.NumericReference):
            anomalies.extend(_check_numeric(name, series, ref, spec))
        else:
            anomalies.extend(_check_categorical(name, series, ref, feature, spec))
    return anomalies


def summarize(anomalies: Sequence[api.Anomaly], reference: str, policy: str) -> api.DataValidation:
    """The result's validation document: the count, and the first anomalies by column."""
    ordered = sorted(anomalies, key=lambda a: (a.column, api.ANOMALY_KINDS.index(a.kind)))
    return api.DataValidation.model_validate(
        {
            "reference": reference,
            "policy": policy,
            "passed": not anomalies,
            "total": len(anomalies),
            "anomalies": [a.model_dump() for a in ordered[: api.MAX_ANOMALIES]],
        }
    )


def serving_skew(
    monitor: drift.DriftMonitor, report: Mapping[str, Any], spec: api.ValidationSpec
) -> list[api.Anomaly]:
    """Training-serving skew: the checks that apply to served rows, on the drift window.

    Served rows passed the request validation (names, types), so the kinds are AllNull,
    UnseenCategory (when the reference lists every category), OutOfRange and Drift. Nothing
    is reported before the window holds the monitor's minimum number of rows. ``report``
    is the monitor's drift report (``DriftReport.to_dict()``): a feature it flags as drifted
    (by the service's own drift settings, fit for its window size) is a Drift anomaly.
    """
    if not report.get("enough_data"):
        return []
    numeric, codes = monitor.window()
    drifted = {f["name"]: f for f in report.get("features", []) if f.get("drifted")}
    anomalies: list[api.Anomaly] = []
    num_refs = [f for f in monitor.reference.features if isinstance(f, drift.NumericReference)]
    cat_refs = [f for f in monitor.reference.features if isinstance(f, drift.CategoricalReference)]
    for j, ref in enumerate(num_refs):
        column = numeric[:, j]
        finite = column[np.isfinite(column)]
        if finite.size == 0:
            anomalies.append(
                _anomaly(ref.name, "AllNull", f"all {column.size} served values are missing")
            )
            continue
        found = _range_anomaly(ref.name, ref, finite, spec.max_out_of_range_fraction)
        anomalies.extend([found] if found is not None else [])
    for j, cref in enumerate(cat_refs):
        served = codes[:, j]
        other = int(np.count_nonzero(served == len(cref.categories)))
        if other and cref.proportions[-1] == 0.0:
            anomalies.append(
                _anomaly(
                    cref.name,
                    "UnseenCategory",
                    f"{other} of {served.size} served values are categories the training"
                    " data never had",
                )
            )
    for name, f in drifted.items():
        anomalies.append(
            _anomaly(
                name,
                "Drift",
                f"drifted in the serving window: PSI {f['psi']:.3g}, {f['stattest']} p-value"
                f" {f['p_value']:.3g}",
            )
        )
    return anomalies
