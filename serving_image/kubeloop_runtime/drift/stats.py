"""The statistics drift is judged by: PSI, Pearson's chi-squared and two-sample KS p-values.

Computed as Evidently computes them (its defaults are ours; ``tests/compat`` checks the
agreement against the real library). scipy is imported only when a test runs: it loads
slowly, and the trainer needs none of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Evidently's substitute for an empty bin's share in PSI.
PSI_EPSILON = 1e-4


def fill_empty(
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
    replacing empty bins' shares by a small epsilon (see :func:`fill_empty`). 0 for
    identical distributions; ``>= 0.1`` is "drifted" by the common rule of thumb, ``>= 0.25``
    a major shift.
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.shape != c.shape:
        raise ValueError(f"psi: share vectors differ in length ({r.size} != {c.size})")
    keep = (r > 0) | (c > 0)
    r, c = fill_empty(r[keep]), fill_empty(c[keep])
    return float(np.sum((r - c) * np.log(r / c)))


def chisquare_p(
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
    props = fill_empty(ref_props[keep])
    props = props / props.sum()
    observed = counts[keep].astype(np.float64)
    expected = props * observed.sum()
    return float(chisquare(observed, expected).pvalue)


# Below this asymptotic KS p-value the exact one is not computed (see ks_p).
KS_EXACT_FLOOR = 1e-8


def ks_p(sample: np.ndarray[Any, np.dtype[np.float64]], current: np.ndarray[Any, Any]) -> float:
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
