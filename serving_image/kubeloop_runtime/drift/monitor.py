"""The half of drift detection that runs at serving: a windowed monitor over the traffic.

:class:`DriftMonitor` runs in the model server. ``observe(rows)`` only copies values into a
fixed-size ring buffer per feature; ``compute()`` (on a schedule or on scrape) compares the
window against the training reference (``drift/reference.py``) and returns a
:class:`DriftReport`, with the statistics of ``drift/stats.py``.

Free of HTTP and of metrics libraries: the server turns reports into metrics.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from kubeloop_runtime.drift.reference import (
    CategoricalReference,
    Kind,
    NumericReference,
    ReferenceStats,
    category_key,
)
from kubeloop_runtime.drift.stats import chisquare_p, ks_p, psi

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift numbers over the current window.

    ``psi`` and ``p_value`` are ``None`` while the feature has fewer than the monitor's
    minimum number of observed (non-missing) values in the window.
    """

    name: str
    kind: Kind
    stattest: Literal["ks", "chisquare"]
    n: int
    psi: float | None
    p_value: float | None
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "stattest": self.stattest,
            "n": self.n,
            "psi": self.psi,
            "p_value": self.p_value,
            "drifted": self.drifted,
        }


@dataclass(frozen=True)
class DriftReport:
    """The result of :meth:`DriftMonitor.compute`; ``to_dict()`` is the JSON endpoint's body."""

    features: tuple[FeatureDrift, ...]
    window_count: int
    window_size: int
    enough_data: bool
    share_drifted: float
    dataset_drift: bool
    flag_by: Literal["test", "psi"]
    psi_threshold: float
    p_value_threshold: float
    dataset_drift_share: float
    min_rows: int

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_count": self.window_count,
            "window_size": self.window_size,
            "enough_data": self.enough_data,
            "min_rows": self.min_rows,
            "share_drifted": self.share_drifted,
            "dataset_drift": self.dataset_drift,
            "drifted_features": self.drifted_features,
            "method": {
                "flag_by": self.flag_by,
                "psi_threshold": self.psi_threshold,
                "p_value": self.p_value_threshold,
                "dataset_drift_share": self.dataset_drift_share,
            },
            "features": [f.to_dict() for f in self.features],
        }


FloatArray = np.ndarray[Any, np.dtype[np.float64]]


def _to_float(value: object) -> float:
    """A numeric feature value as float; anything unparseable counts as missing (NaN)."""
    if value is None or (isinstance(value, str | bytes) and not value):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


class DriftMonitor:
    """A sliding window of the last ``window_size`` rows, compared with the reference on demand.

    ``observe`` is cheap (a copy into per-kind ring buffers under a lock, plus one dict
    lookup per categorical value); all statistics happen in ``compute``. Rows are given in
    the reference's feature order (``reference.feature_names``). Safe to call ``observe``
    from an event loop while ``compute`` runs in a worker thread: both take one lock, and
    ``compute`` holds it only to copy the window.
    """

    def __init__(
        self,
        reference: ReferenceStats,
        *,
        window_size: int,
        psi_threshold: float = 0.1,
        p_value: float = 0.05,
        dataset_drift_share: float = 0.5,
        min_rows: int = 30,
        flag_by: Literal["test", "psi"] = "test",
    ) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1 (got {window_size})")
        if not 0.0 < p_value < 1.0:
            raise ValueError(f"p_value must be in (0, 1) (got {p_value})")
        if psi_threshold <= 0.0:
            raise ValueError(f"psi_threshold must be > 0 (got {psi_threshold})")
        if not 0.0 < dataset_drift_share <= 1.0:
            raise ValueError(f"dataset_drift_share must be in (0, 1] (got {dataset_drift_share})")
        if min_rows < 2:
            raise ValueError(f"min_rows must be >= 2 (got {min_rows})")
        if flag_by not in ("test", "psi"):
            raise ValueError(f"flag_by must be 'test' or 'psi' (got {flag_by!r})")
        self.reference = reference
        self.window_size = window_size
        self.psi_threshold = psi_threshold
        self.p_value = p_value
        self.dataset_drift_share = dataset_drift_share
        self.min_rows = min_rows
        self.flag_by = flag_by
        self.feature_names = reference.feature_names
        self._num_idx = [i for i, f in enumerate(reference.features) if f.kind == "numeric"]
        self._cat_idx = [i for i, f in enumerate(reference.features) if f.kind == "categorical"]
        self._num_refs = [f for f in reference.features if isinstance(f, NumericReference)]
        self._cat_refs = [f for f in reference.features if isinstance(f, CategoricalReference)]
        self._edges = [np.asarray(f.edges, dtype=np.float64) for f in self._num_refs]
        self._num_props = [np.asarray(f.proportions, dtype=np.float64) for f in self._num_refs]
        self._samples = [np.asarray(f.sample, dtype=np.float64) for f in self._num_refs]
        self._cat_codes = [{c: i for i, c in enumerate(f.categories)} for f in self._cat_refs]
        self._cat_props = [np.asarray(f.proportions, dtype=np.float64) for f in self._cat_refs]
        self._num_buf: FloatArray = np.full((window_size, len(self._num_idx)), np.nan)
        self._cat_buf = np.zeros((window_size, len(self._cat_idx)), dtype=np.int32)
        self._pos = 0
        self._count = 0
        self._observed_total = 0
        self._lock = threading.Lock()

    @property
    def window_count(self) -> int:
        """Rows currently in the window (at most ``window_size``)."""
        return self._count

    @property
    def observed_total(self) -> int:
        """Rows observed since this monitor was made (or reset)."""
        return self._observed_total

    def window(self) -> tuple[FloatArray, np.ndarray[Any, np.dtype[np.int32]]]:
        """Copies of the window: numeric values (NaN: missing) and categorical codes.

        Columns follow the reference's numeric and categorical features in order; a code
        equal to ``len(categories)`` is a value outside the reference's categories.
        """
        with self._lock:
            return self._num_buf[: self._count].copy(), self._cat_buf[: self._count].copy()

    def reset(self) -> None:
        """Empty the window (for example after the served model changes)."""
        with self._lock:
            self._num_buf.fill(np.nan)
            self._cat_buf.fill(0)
            self._pos = 0
            self._count = 0
            self._observed_total = 0

    # -- observe ----------------------------------------------------------------------

    def observe(
        self, rows: np.ndarray[Any, Any] | pd.DataFrame | Sequence[Sequence[object]]
    ) -> None:
        """Add a batch of rows to the window.

        ``rows`` is a 2-D numpy array (float or object), a list of row sequences, or a
        pandas DataFrame; arrays and lists hold the values in ``feature_names`` order,
        a DataFrame is read by column name. Numeric values that are missing or not
        numbers are recorded as missing; categorical values are matched with
        :func:`category_key`, unknown ones counted as ``__other__``.
        """
        table = self._as_table(rows)
        n = table.shape[0]
        if n == 0:
            return
        num = self._numeric_block(table)
        cat = self._categorical_block(table)
        w = self.window_size
        if n > w:
            num, cat, n = num[-w:], cat[-w:], w
        with self._lock:
            start = self._pos
            end = start + n
            if end <= w:
                self._num_buf[start:end] = num
                self._cat_buf[start:end] = cat
            else:
                first = w - start
                self._num_buf[start:] = num[:first]
                self._cat_buf[start:] = cat[:first]
                self._num_buf[: n - first] = num[first:]
                self._cat_buf[: n - first] = cat[first:]
            self._pos = end % w
            self._count = min(w, self._count + n)
            self._observed_total += table.shape[0]

    def _as_table(self, rows: object) -> np.ndarray[Any, Any]:
        width = len(self.feature_names)
        if isinstance(rows, np.ndarray):
            table = rows
        elif hasattr(rows, "columns") and hasattr(rows, "to_numpy"):
            missing = [c for c in self.feature_names if c not in rows.columns]
            if missing:
                raise ValueError(f"observe: columns missing from the frame: {', '.join(missing)}")
            table = rows[self.feature_names].to_numpy(dtype=object)  # type: ignore[index]
        else:
            seq = list(rows)  # type: ignore[call-overload]
            if not seq:
                return np.empty((0, width), dtype=object)
            table = np.empty((len(seq), width), dtype=object)
            for i, row in enumerate(seq):
                if len(row) != width:
                    raise ValueError(f"observe: row {i} has {len(row)} values, expected {width}")
                table[i, :] = list(row)
        if table.ndim == 1 and table.size == width:
            table = table.reshape(1, width)
        if table.ndim != 2 or table.shape[1] != width:
            raise ValueError(
                f"observe: expected rows of {width} values ({', '.join(self.feature_names)}),"
                f" got shape {table.shape}"
            )
        return table

    def _numeric_block(self, table: np.ndarray[Any, Any]) -> FloatArray:
        cols = table[:, self._num_idx]
        try:
            return np.asarray(cols, dtype=np.float64)
        except (TypeError, ValueError):
            converted = np.vectorize(_to_float, otypes=[np.float64])(cols)
            return np.asarray(converted, dtype=np.float64)

    def _categorical_block(
        self, table: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, np.dtype[np.int32]]:
        out = np.empty((table.shape[0], len(self._cat_idx)), dtype=np.int32)
        for j, (i, codes) in enumerate(zip(self._cat_idx, self._cat_codes, strict=True)):
            other = len(codes)
            out[:, j] = [codes.get(category_key(v), other) for v in table[:, i]]
        return out

    # -- compute ----------------------------------------------------------------------

    def compute(self) -> DriftReport:
        """Compare the current window with the reference (costs O(window x features))."""
        with self._lock:
            count = self._count
            num = self._num_buf[:count].copy()
            cat = self._cat_buf[:count].copy()
        results: dict[int, FeatureDrift] = {}
        for j, i in enumerate(self._num_idx):
            results[i] = self._numeric_drift(j, num[:, j])
        for j, i in enumerate(self._cat_idx):
            results[i] = self._categorical_drift(j, cat[:, j])
        features = tuple(results[i] for i in range(len(self.feature_names)))
        enough = count >= self.min_rows
        drifted = sum(f.drifted for f in features)
        share = drifted / len(features) if features else 0.0
        return DriftReport(
            features=features,
            window_count=count,
            window_size=self.window_size,
            enough_data=enough,
            share_drifted=share,
            dataset_drift=enough and share >= self.dataset_drift_share,
            flag_by=self.flag_by,
            psi_threshold=self.psi_threshold,
            p_value_threshold=self.p_value,
            dataset_drift_share=self.dataset_drift_share,
            min_rows=self.min_rows,
        )

    def _flag(self, psi_value: float, p: float) -> bool:
        if self.flag_by == "psi":
            return psi_value >= self.psi_threshold
        return p <= self.p_value

    def _numeric_drift(self, j: int, column: FloatArray) -> FeatureDrift:
        name = self._num_refs[j].name
        x = column[np.isfinite(column)]
        if x.size < self.min_rows:
            return FeatureDrift(name, "numeric", "ks", int(x.size), None, None, False)
        edges = self._edges[j]
        counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)
        psi_value = psi(self._num_props[j], counts / x.size)
        p = ks_p(self._samples[j], x)
        return FeatureDrift(
            name, "numeric", "ks", int(x.size), psi_value, p, self._flag(psi_value, p)
        )

    def _categorical_drift(self, j: int, codes: np.ndarray[Any, Any]) -> FeatureDrift:
        name = self._cat_refs[j].name
        n = int(codes.size)
        if n < self.min_rows:
            return FeatureDrift(name, "categorical", "chisquare", n, None, None, False)
        ref = self._cat_props[j]
        counts = np.bincount(codes, minlength=ref.size)
        psi_value = psi(ref, counts / n)
        p = chisquare_p(ref, counts)
        return FeatureDrift(
            name, "categorical", "chisquare", n, psi_value, p, self._flag(psi_value, p)
        )
