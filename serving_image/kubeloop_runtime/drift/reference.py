"""The half of drift detection that runs at training: reference statistics of the features.

``build_reference(frame, categorical)`` runs in the trainer on the training features and
returns :class:`ReferenceStats`, saved next to the model with ``to_json()`` (the versioned
``kubeloop.io/reference-stats`` format); the model server reads it back with
``from_json()`` and compares its traffic with it (``drift/monitor.py``). Data validation
(``validation.py``) checks a new dataset against the same file.

Numeric features keep quantile bins and their shares, moments, the range and a bounded
sample (for the KS test); categorical features the shares of their top categories, the
rest under ``__other__``. :func:`category_key` is how a value is compared, at training and
at serving.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

if TYPE_CHECKING:
    import pandas as pd

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

Kind = Literal["numeric", "categorical"]


class ReferenceStatsError(ValueError):
    """A reference statistics document is malformed; the message names the field."""


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
