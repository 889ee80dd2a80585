"""Data drift: reference statistics built at training time, a cheap windowed monitor at serving.

Two halves share one file format:

* ``build_reference(frame, categorical)`` runs in the trainer on the training features and
  returns :class:`ReferenceStats`, saved next to the model with ``to_json()``.
* :class:`DriftMonitor` runs in the model server. ``observe(rows)`` only copies values into a
  fixed-size ring buffer per feature; ``compute()`` (on a schedule or on scrape) compares the
  window against the reference and returns a :class:`DriftReport`.

Methods (``docs/monitoring-drift.md`` explains them in full):

* numeric features: PSI over the reference's quantile bins, and the two-sample
  Kolmogorov-Smirnov test against a bounded reference sample;
* categorical features: PSI over the reference's top categories (the rest in
  ``__other__``), and Pearson's chi-squared test of the window's counts against the
  reference proportions scaled to the window's size.

A feature is *drifted* when its test's p-value is ``<= p_value`` (the flag is driven by the
statistical test by default; ``flag_by="psi"`` drives it by ``psi >= psi_threshold``
instead). Both numbers are always reported. The dataset drifts when the share of drifted
features is ``>= dataset_drift_share``. These are Evidently's defaults.

The module is free of HTTP and of metrics libraries: the server turns reports into metrics.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

if TYPE_CHECKING:
    import pandas as pd

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

FORMAT: Final = "kubeloop.io/reference-stats"
FORMAT_VERSION: Final = 1
# Bucket for categories outside the reference's top categories, and the label of a missing
# categorical value.
OTHER = "__other__"
MISSING = "__missing__"
# Bounds that keep a reference file small (and a hostile one harmless to load).
MAX_FEATURES = 256
MAX_BINS = 100
MAX_CATEGORIES = 256
MAX_SAMPLE_SIZE = 20_000
MAX_REFERENCE_BYTES = 64 * 1024 * 1024
# Evidently's substitute for an empty bin's share in PSI.
PSI_EPSILON = 1e-4

Kind = Literal["numeric", "categorical"]


class ReferenceStatsError(ValueError):
    """A reference statistics document is malformed; the message names the field."""


# ------------------------------------------------------------------ reference statistics


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Proportion = Annotated[FiniteFloat, Field(ge=0.0, le=1.0)]


def _check_proportions(name: str, props: Sequence[float], of: str, expected: int) -> None:
    """``props`` has one share per bucket (``expected``, described by ``of``) and sums to 1."""
    where = f"feature {name!r}: proportions"
    if len(props) != expected:
        raise ValueError(f"{where} must have {of} = {expected} entries (got {len(props)})")
    total = math.fsum(props)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{where} must sum to 1 (got {total:.9g})")


class NumericReference(_Wire):
    """A numeric feature: quantile bins, their reference shares, moments and a sample.

    ``edges`` are the interior bin edges, strictly increasing; the outer edges are -inf and
    +inf, so there are ``len(edges) + 1`` bins and as many ``proportions``. A value ``x``
    falls in bin ``searchsorted(edges, x, side="right")``: bins are ``[e[i-1], e[i])``.
    """

    kind: Literal["numeric"] = "numeric"
    name: Annotated[str, Field(min_length=1, max_length=128)]
    count: Annotated[int, Field(ge=1)]
    missing: Annotated[int, Field(ge=0)] = 0
    mean: FiniteFloat
    std: Annotated[FiniteFloat, Field(ge=0.0)]
    edges: Annotated[list[FiniteFloat], Field(max_length=MAX_BINS - 1)]
    proportions: Annotated[list[Proportion], Field(min_length=1, max_length=MAX_BINS)]
    sample: Annotated[list[FiniteFloat], Field(min_length=1, max_length=MAX_SAMPLE_SIZE)]
    # The range seen in training (data validation); absent in files from older runtimes.
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @model_validator(mode="after")
    def _consistent(self) -> NumericReference:
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"feature {self.name!r}: edges must be strictly increasing")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min must be <= max")
        _check_proportions(self.name, self.proportions, "len(edges) + 1", len(self.edges) + 1)
        return self


class CategoricalReference(_Wire):
    """A categorical feature: shares of its top categories, the rest under ``__other__``.

    ``proportions`` has ``len(categories) + 1`` entries, the last one for ``__other__``.
    Values are compared as strings made by :func:`category_key`.
    """

    kind: Literal["categorical"] = "categorical"
    name: Annotated[str, Field(min_length=1, max_length=128)]
    count: Annotated[int, Field(ge=1)]
    missing: Annotated[int, Field(ge=0)] = 0
    categories: Annotated[
        list[Annotated[str, Field(max_length=256)]], Field(min_length=1, max_length=MAX_CATEGORIES)
    ]
    proportions: Annotated[list[Proportion], Field(min_length=2, max_length=MAX_CATEGORIES + 1)]

    @model_validator(mode="after")
    def _consistent(self) -> CategoricalReference:
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"feature {self.name!r}: categories must be unique")
        if OTHER in self.categories:
            raise ValueError(f"feature {self.name!r}: {OTHER!r} is reserved")
        _check_proportions(
            self.name, self.proportions, "len(categories) + 1", len(self.categories) + 1
        )
        return self


FeatureReference = Annotated[NumericReference | CategoricalReference, Field(discriminator="kind")]


class ReferenceStats(_Wire):
    """What the trainer learned about the training features' distribution (versioned JSON)."""

    format: Literal["kubeloop.io/reference-stats"] = FORMAT
    version: Literal[1] = FORMAT_VERSION
    rows: Annotated[int, Field(ge=1)]
    features: Annotated[list[FeatureReference], Field(min_length=1, max_length=MAX_FEATURES)]

    @model_validator(mode="after")
    def _unique_names(self) -> ReferenceStats:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("features: names must be unique")
        return self

    @property
    def feature_names(self) -> list[str]:
        """Feature names in the order ``DriftMonitor.observe`` expects row values."""
        return [f.name for f in self.features]

    def to_json(self) -> bytes:
        """Serialise to compact UTF-8 JSON (no NaN or infinities: edges are interior only)."""
        data = self.model_dump(mode="json")
        return json.dumps(data, allow_nan=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ReferenceStats:
        """Parse and validate; raises :class:`ReferenceStatsError` naming what is wrong."""
        size = len(data.encode() if isinstance(data, str) else data)
        if size > MAX_REFERENCE_BYTES:
            raise ReferenceStatsError(
                f"reference statistics are {size} bytes, over the {MAX_REFERENCE_BYTES} limit"
            )
        try:
            raw: Any = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ReferenceStatsError(f"reference statistics are not valid JSON: {e}") from e
        if not isinstance(raw, dict):
            raise ReferenceStatsError("reference statistics must be a JSON object")
        if raw.get("format") != FORMAT:
            raise ReferenceStatsError(
                f"reference statistics: format must be {FORMAT!r} (got {raw.get('format')!r})"
            )
        if raw.get("version") != FORMAT_VERSION:
            raise ReferenceStatsError(
                f"reference statistics: unsupported version {raw.get('version')!r}"
                f" (this runtime reads version {FORMAT_VERSION})"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ReferenceStatsError(f"invalid reference statistics: {e}") from e


def category_key(value: object) -> str:
    """The string a categorical value is compared as, at training and at serving time.

    ``None`` and NaN become ``__missing__``; integral floats print as integers (so a CSV's
    ``1`` and a JSON ``1.0`` are the same category); everything else is ``str(value)``.
    """
    if value is None:
        return MISSING
    if isinstance(value, float | np.floating):
        f = float(value)
        if math.isnan(f):
            return MISSING
        if f.is_integer() and abs(f) < 2**53:
            return str(int(f))
        return repr(f)
    if isinstance(value, np.generic):
        return category_key(value.item())
    return str(value)


def _is_categorical_dtype(series: pd.Series) -> bool:
    import pandas as pd  # noqa: PLC0415  (pandas is a runtime-extra dependency)

    return not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def build_reference(
    frame: pd.DataFrame,
    categorical: Sequence[str],
    *,
    bins: int = 10,
    sample_size: int = 5000,
    seed: int = 0,
    max_categories: int = 50,
) -> ReferenceStats:
    """Summarise the training features in ``frame`` (feature columns only, in serving order).

    Columns named in ``categorical``, and columns whose dtype is not numeric (or is bool),
    are categorical; the rest are numeric. Missing values are counted and left out of the
    numeric statistics; for categorical features they are the category ``__missing__``.
    """
    if not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be between 1 and {MAX_BINS} (got {bins})")
    if not 1 <= sample_size <= MAX_SAMPLE_SIZE:
        raise ValueError(f"sample_size must be between 1 and {MAX_SAMPLE_SIZE} (got {sample_size})")
    if not 1 <= max_categories <= MAX_CATEGORIES:
        raise ValueError(
            f"max_categories must be between 1 and {MAX_CATEGORIES} (got {max_categories})"
        )
    if len(frame) == 0:
        raise ValueError("cannot build reference statistics from an empty frame")
    if frame.shape[1] > MAX_FEATURES:
        raise ValueError(f"at most {MAX_FEATURES} features are supported (got {frame.shape[1]})")
    columns = [str(c) for c in frame.columns]
    unknown = sorted(set(categorical) - set(columns))
    if unknown:
        raise ValueError(f"categorical columns not in the frame: {', '.join(unknown)}")
    rng = np.random.default_rng(seed)
    wanted = set(categorical)
    features: list[NumericReference | CategoricalReference] = []
    for name, col in zip(columns, frame.columns, strict=True):
        series = frame[col]
        if name in wanted or _is_categorical_dtype(series):
            features.append(_categorical_reference(name, series, max_categories))
        else:
            features.append(_numeric_reference(name, series, bins, sample_size, rng))
    return ReferenceStats(rows=len(frame), features=features)


def _numeric_reference(
    name: str, series: pd.Series, bins: int, sample_size: int, rng: np.random.Generator
) -> NumericReference:
    values = np.asarray(series, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(f"feature {name!r}: no finite values to build reference statistics from")
    quantiles = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    edges = np.unique(quantiles)
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=edges.size + 1)
    sample = finite if finite.size <= sample_size else rng.choice(finite, sample_size, False)
    return NumericReference(
        name=name,
        count=int(finite.size),
        missing=int(values.size - finite.size),
        mean=float(finite.mean()),
        std=float(finite.std()),
        edges=edges.tolist(),
        proportions=(counts / finite.size).tolist(),
        sample=sample.tolist(),
        min=float(finite.min()),
        max=float(finite.max()),
    )


def _categorical_reference(
    name: str, series: pd.Series, max_categories: int
) -> CategoricalReference:
    # Key each distinct value once (the key depends on the value alone), not every row.
    counts: dict[str, int] = {}
    for v, n in series.value_counts(dropna=False, sort=False).items():
        k = category_key(v)
        counts[k] = counts.get(k, 0) + int(n)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = [(k, c) for k, c in ranked if k != OTHER][:max_categories]
    total = len(series)
    other = total - sum(c for _, c in top)
    return CategoricalReference(
        name=name,
        count=total,
        missing=counts.get(MISSING, 0),
        categories=[k for k, _ in top],
        proportions=[c / total for _, c in top] + [other / total],
    )


# ------------------------------------------------------------------------- statistics


def _fill_empty(
    shares: np.ndarray[Any, np.dtype[np.float64]],
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Replace empty bins' zero share as Evidently does before taking logarithms.

    The substitute is ``1e-4``, or the smallest non-zero share divided by ``1e6`` when that
    share is itself ``<= 1e-4`` (so a substitute never outweighs a real bin).
    """
    out = shares.astype(np.float64, copy=True)
    zero = out == 0
    if zero.any() and not zero.all():
        smallest = float(out[~zero].min())
        out[zero] = smallest / 1e6 if smallest <= PSI_EPSILON else PSI_EPSILON
    return out


def psi(
    reference: Sequence[float] | np.ndarray[Any, Any],
    current: Sequence[float] | np.ndarray[Any, Any],
) -> float:
    """Population stability index of two share vectors over the same bins.

    ``sum((r - c) * ln(r / c))`` over the bins that are non-empty on either side, after
    replacing empty bins' shares by a small epsilon (see :func:`_fill_empty`). 0 for
    identical distributions; ``>= 0.1`` is "drifted" by the common rule of thumb, ``>= 0.25``
    a major shift.
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.shape != c.shape:
        raise ValueError(f"psi: share vectors differ in length ({r.size} != {c.size})")
    keep = (r > 0) | (c > 0)
    r, c = _fill_empty(r[keep]), _fill_empty(c[keep])
    return float(np.sum((r - c) * np.log(r / c)))


def _chisquare_p(
    ref_props: np.ndarray[Any, np.dtype[np.float64]], counts: np.ndarray[Any, Any]
) -> float:
    """p-value of Pearson's chi-squared test of ``counts`` against reference proportions.

    Expected counts are the reference proportions scaled to the window's size. Buckets
    empty in both are left out (they add nothing and would inflate the degrees of freedom);
    a bucket the reference never saw gets the PSI epsilon as its share, so a new category
    gives a huge statistic (p ~ 0) rather than a division by zero.
    """
    from scipy.stats import chisquare  # noqa: PLC0415  (scipy loads slowly; only here)

    keep = (ref_props > 0) | (counts > 0)
    if int(keep.sum()) < 2:
        return 1.0
    props = _fill_empty(ref_props[keep])
    props = props / props.sum()
    observed = counts[keep].astype(np.float64)
    expected = props * observed.sum()
    return float(chisquare(observed, expected).pvalue)


# Below this asymptotic KS p-value the exact one is not computed (see _ks_p).
KS_EXACT_FLOOR = 1e-8


def _ks_p(sample: np.ndarray[Any, np.dtype[np.float64]], current: np.ndarray[Any, Any]) -> float:
    """Two-sided two-sample KS p-value, as ``scipy.stats.ks_2samp`` computes it by default.

    scipy's default (``method="auto"``, exact for samples up to 10,000) is what Evidently
    uses, but the exact computation grows slow, up to hundreds of milliseconds, when the
    samples differ a lot. So the cheap asymptotic p-value comes first; when it is below
    ``KS_EXACT_FLOOR`` the feature has drifted beyond doubt and that value is reported
    (it differs from the exact one by far less than the floor); otherwise the default.
    """
    from scipy.stats import ks_2samp  # noqa: PLC0415

    asymptotic = float(ks_2samp(sample, current, method="asymp").pvalue)
    if asymptotic < KS_EXACT_FLOOR:
        return asymptotic
    return float(ks_2samp(sample, current).pvalue)


# ---------------------------------------------------------------------------- monitor


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
        p = _ks_p(self._samples[j], x)
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
        p = _chisquare_p(ref, counts)
        return FeatureDrift(
            name, "categorical", "chisquare", n, psi_value, p, self._flag(psi_value, p)
        )
