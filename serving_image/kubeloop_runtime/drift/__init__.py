"""Data drift: reference statistics built at training time, a cheap windowed monitor at serving.

Two halves share one file format, each in its own module (this package re-exports both):

* ``drift/reference.py``: ``build_reference(frame, categorical)`` runs in the trainer on
  the training features and returns :class:`ReferenceStats`, saved next to the model with
  ``to_json()``.
* ``drift/monitor.py``: :class:`DriftMonitor` runs in the model server. ``observe(rows)``
  only copies values into a fixed-size ring buffer per feature; ``compute()`` (on a
  schedule or on scrape) compares the window against the reference and returns a
  :class:`DriftReport`.

Methods (``drift/stats.py``; ``docs/monitoring-drift.md`` explains them in full):

* numeric features: PSI over the reference's quantile bins, and the two-sample
  Kolmogorov-Smirnov test against a bounded reference sample;
* categorical features: PSI over the reference's top categories (the rest in
  ``__other__``), and Pearson's chi-squared test of the window's counts against the
  reference proportions scaled to the window's size.

A feature is *drifted* when its test's p-value is ``<= p_value`` (the flag is driven by the
statistical test by default; ``flag_by="psi"`` drives it by ``psi >= psi_threshold``
instead). Both numbers are always reported. The dataset drifts when the share of drifted
features is ``>= dataset_drift_share``. These are Evidently's defaults.

The package is free of HTTP and of metrics libraries: the server turns reports into metrics.
"""

from __future__ import annotations

from kubeloop_runtime.drift.monitor import DriftMonitor, DriftReport, FeatureDrift
from kubeloop_runtime.drift.reference import (
    FORMAT,
    MAX_CATEGORIES,
    MAX_REFERENCE_BYTES,
    MAX_SAMPLE_SIZE,
    MISSING,
    OTHER,
    CategoricalReference,
    NumericReference,
    ReferenceStats,
    ReferenceStatsError,
    build_reference,
    category_key,
)
from kubeloop_runtime.drift.stats import psi

__all__ = [
    "FORMAT",
    "MAX_CATEGORIES",
    "MAX_REFERENCE_BYTES",
    "MAX_SAMPLE_SIZE",
    "MISSING",
    "OTHER",
    "CategoricalReference",
    "DriftMonitor",
    "DriftReport",
    "FeatureDrift",
    "NumericReference",
    "ReferenceStats",
    "ReferenceStatsError",
    "build_reference",
    "category_key",
    "psi",
]
