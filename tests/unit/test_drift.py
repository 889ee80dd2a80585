"""Drift statistics: reference building, its file format, and the windowed monitor.

A note on "no drift" assertions: a window drawn from the training distribution still
flags each feature with probability p_value (5 %) by design. The tests below use fixed
seeds, so they are deterministic; ``test_false_alarm_rate_is_the_test_level`` checks that
rate itself over many windows, so a seed cannot hide a miscalibrated test.
"""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from sklearn.datasets import load_iris

from kubeloop_runtime.drift import (
    MISSING,
    CategoricalReference,
    DriftMonitor,
    NumericReference,
    ReferenceStats,
    ReferenceStatsError,
    build_reference,
    category_key,
    psi,
)


def normal_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": rng.normal(0.0, 1.0, n),
            "b": rng.normal(10.0, 3.0, n),
            "c": rng.exponential(2.0, n),
            "d": rng.uniform(-5.0, 5.0, n),
            "e": rng.normal(-2.0, 0.5, n),
        }
    )


def mixed_frame(
    rng: np.random.Generator, n: int, p: tuple[float, ...] = (0.5, 0.3, 0.2)
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(0.0, 1.0, n),
            "colour": rng.choice(["red", "green", "blue"], n, p=p),
            "y": rng.normal(5.0, 2.0, n),
        }
    )


# ------------------------------------------------------------------- build_reference


def test_numeric_reference_has_quantile_bins_and_moments() -> None:
    rng = np.random.default_rng(1)
    frame = normal_frame(rng, 2000)
    ref = build_reference(frame, [], bins=10, sample_size=500, seed=3)
    assert ref.rows == 2000
    assert ref.feature_names == ["a", "b", "c", "d", "e"]
    a = ref.features[0]
    assert isinstance(a, NumericReference)
    assert a.kind == "numeric"
    assert len(a.edges) == 9 and len(a.proportions) == 10
    assert a.edges == sorted(a.edges)
    # Deciles: each bin holds a tenth of the reference.
    assert np.allclose(a.proportions, 0.1, atol=0.002)
    assert a.mean == pytest.approx(frame["a"].mean())
    assert a.std == pytest.approx(frame["a"].std(ddof=0))
    assert len(a.sample) == 500
    assert set(a.sample) <= set(frame["a"])


def test_discrete_numeric_edges_are_deduplicated() -> None:
    frame = pd.DataFrame({"k": [0] * 80 + [1] * 15 + [2] * 5})
    ref = build_reference(frame, [], bins=10)
    k = ref.features[0]
    assert isinstance(k, NumericReference)
    assert len(set(k.edges)) == len(k.edges)
    # Every reference value lands in a bin whose share matches its frequency.
    bins = np.searchsorted(k.edges, [0, 1, 2], side="right")
    shares = {v: k.proportions[b] for v, b in zip([0, 1, 2], bins, strict=True)}
    assert shares[0] == pytest.approx(0.8)
    assert sum(k.proportions) == pytest.approx(1.0)


def test_categorical_reference_keeps_top_categories_and_other() -> None:
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 4 + [None]
    frame = pd.DataFrame({"cat": values, "num": np.arange(100.0)})
    ref = build_reference(frame, ["cat"], max_categories=2)
    cat = ref.features[0]
    assert isinstance(cat, CategoricalReference)
    assert cat.categories == ["a", "b"]
    assert cat.proportions == pytest.approx([0.5, 0.3, 0.2])
    assert cat.missing == 1
    assert ref.features[1].kind == "numeric"


def test_non_numeric_columns_are_categorical_without_being_named() -> None:
    frame = pd.DataFrame({"s": ["u", "v"] * 10, "flag": [True, False] * 10, "n": range(20)})
    ref = build_reference(frame, [])
    assert [f.kind for f in ref.features] == ["categorical", "categorical", "numeric"]


def test_build_reference_rejects_bad_input() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match="categorical columns not in the frame: nope"):
        build_reference(frame, ["nope"])
    with pytest.raises(ValueError, match="empty frame"):
        build_reference(frame.iloc[:0], [])
    with pytest.raises(ValueError, match="sample_size"):
        build_reference(frame, [], sample_size=10**9)
    with pytest.raises(ValueError, match="feature 'a': no finite values"):
        build_reference(pd.DataFrame({"a": [math.nan, math.inf]}), [])


def test_category_key_normalises_values() -> None:
    assert category_key(None) == MISSING
    assert category_key(math.nan) == MISSING
    assert category_key(1.0) == category_key(1) == category_key(np.int64(1)) == "1"
    assert category_key(1.5) == "1.5"
    assert category_key(True) == "True"
    assert category_key("red") == "red"


# ----------------------------------------------------------------------- file format


def test_json_round_trip_is_exact_and_compact() -> None:
    rng = np.random.default_rng(2)
    ref = build_reference(mixed_frame(rng, 3000), ["colour"])
    data = ref.to_json()
    assert b"Infinity" not in data and b"NaN" not in data
    doc = json.loads(data)
    assert doc["format"] == "kubeloop.io/reference-stats"
    assert doc["version"] == 1
    assert ReferenceStats.from_json(data) == ref
    # Bounded: 2 numeric features x 3000 sampled values dominate; well under 200 KB.
    assert len(data) < 200_000


def _doc() -> dict[str, object]:
    rng = np.random.default_rng(3)
    out: dict[str, object] = json.loads(
        build_reference(mixed_frame(rng, 200), ["colour"]).to_json()
    )
    return out


def test_from_json_names_what_is_wrong() -> None:
    with pytest.raises(ReferenceStatsError, match="not valid JSON"):
        ReferenceStats.from_json(b"{")
    with pytest.raises(ReferenceStatsError, match="must be a JSON object"):
        ReferenceStats.from_json(b"[]")
    doc = _doc()
    with pytest.raises(ReferenceStatsError, match="format must be"):
        ReferenceStats.from_json(json.dumps({**doc, "format": "other"}))
    with pytest.raises(ReferenceStatsError, match="unsupported version 2"):
        ReferenceStats.from_json(json.dumps({**doc, "version": 2}))

    bad = _doc()
    bad["features"][0]["proportions"] = bad["features"][0]["proportions"][:-1]  # type: ignore[index]
    with pytest.raises(ReferenceStatsError, match="feature 'x': proportions must have"):
        ReferenceStats.from_json(json.dumps(bad))

    bad = _doc()
    bad["features"][1]["proportions"][0] += 0.5  # type: ignore[index]
    with pytest.raises(ReferenceStatsError, match="feature 'colour': proportions must sum to 1"):
        ReferenceStats.from_json(json.dumps(bad))

    bad = _doc()
    edges = bad["features"][0]["edges"]  # type: ignore[index]
    edges[0], edges[1] = edges[1], edges[0]
    with pytest.raises(ReferenceStatsError, match="edges must be strictly increasing"):
        ReferenceStats.from_json(json.dumps(bad))

    bad = _doc()
    bad["features"][0]["sample"][0] = "NaN"  # type: ignore[index]
    with pytest.raises(ReferenceStatsError, match=r"features\.0\.numeric\.sample\.0"):
        ReferenceStats.from_json(json.dumps(bad))

    bad = _doc()
    bad["features"][0]["kind"] = "text"  # type: ignore[index]
    with pytest.raises(ReferenceStatsError, match=r"features\.0"):
        ReferenceStats.from_json(json.dumps(bad))

    bad = _doc()
    bad["features"][1]["name"] = "x"  # type: ignore[index]
    with pytest.raises(ReferenceStatsError, match="names must be unique"):
        ReferenceStats.from_json(json.dumps(bad))


def test_from_json_refuses_oversized_documents() -> None:
    with pytest.raises(ReferenceStatsError, match="over the"):
        ReferenceStats.from_json(b" " * (64 * 1024 * 1024 + 1))


# ------------------------------------------------------------------------------- psi


def test_psi_matches_the_formula() -> None:
    r = [0.25, 0.25, 0.5]
    c = [0.5, 0.25, 0.25]
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - 0.25) * math.log(0.5 / 0.25)
    assert psi(r, c) == pytest.approx(expected)
    assert psi(r, r) == 0.0
    # An empty current bin gets Evidently's epsilon (1e-4) instead of log(0).
    eps = 1e-4
    assert psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx(
        (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - eps) * math.log(0.5 / eps)
    )
    # Bins empty on both sides are left out.
    assert psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0


# --------------------------------------------------------------------------- monitor


def iris_frame() -> pd.DataFrame:
    frame = load_iris(as_frame=True).data
    assert isinstance(frame, pd.DataFrame)
    return frame


def resample(frame: pd.DataFrame, n: int, rng: np.random.Generator, noise: float) -> pd.DataFrame:
    rows = frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True)
    for col in rows.columns:
        if pd.api.types.is_float_dtype(rows[col]):
            rows[col] = rows[col] + rng.normal(0.0, noise * frame[col].std(), n)
    return rows


def test_iris_from_the_training_distribution_does_not_drift() -> None:
    iris = iris_frame()
    ref = build_reference(iris, [])
    monitor = DriftMonitor(ref, window_size=300)
    monitor.observe(resample(iris, 300, np.random.default_rng(7), noise=0.02).to_numpy())
    report = monitor.compute()
    assert report.enough_data and report.window_count == 300
    assert [f.drifted for f in report.features] == [False] * 4, report.to_dict()
    assert not report.dataset_drift and report.share_drifted == 0.0


def test_iris_feature_shifted_by_two_std_drifts_alone() -> None:
    iris = iris_frame()
    ref = build_reference(iris, [])
    monitor = DriftMonitor(ref, window_size=300)
    current = resample(iris, 300, np.random.default_rng(8), noise=0.02)
    current["sepal width (cm)"] += 2 * iris["sepal width (cm)"].std()
    monitor.observe(current.to_numpy())
    report = monitor.compute()
    flags = {f.name: f.drifted for f in report.features}
    assert flags == {
        "sepal length (cm)": False,
        "sepal width (cm)": True,
        "petal length (cm)": False,
        "petal width (cm)": False,
    }, report.to_dict()
    width = report.features[1]
    assert width.p_value is not None and width.p_value < 1e-10
    assert width.psi is not None and width.psi > 1.0
    assert report.share_drifted == 0.25 and not report.dataset_drift


def test_false_alarm_rate_is_the_test_level() -> None:
    """200 in-distribution feature windows: drift flags ~ Binomial(200, 0.05)."""
    rng = np.random.default_rng(11)
    ref = build_reference(normal_frame(rng, 5000), [])
    monitor = DriftMonitor(ref, window_size=400)
    alarms = 0
    for _ in range(40):
        monitor.observe(normal_frame(rng, 400).to_numpy())
        alarms += sum(f.drifted for f in monitor.compute().features)
    # KS against a 5000-row sample is close to exact: P(X > 20) < 0.2 % for X ~ Bin(200, .05).
    assert alarms <= binom.ppf(0.998, 200, 0.05)


def test_synthetic_normal_mean_shift_flags_only_that_feature() -> None:
    rng = np.random.default_rng(12)
    ref = build_reference(normal_frame(rng, 5000), [])
    monitor = DriftMonitor(ref, window_size=500)
    current = normal_frame(rng, 500)
    monitor.observe(current.to_numpy())
    assert monitor.compute().drifted_features == []
    current["b"] += 2 * 3.0
    monitor.observe(current.to_numpy())  # replaces the whole window
    report = monitor.compute()
    assert report.drifted_features == ["b"]
    b = report.features[1]
    assert b.psi is not None and b.psi >= 0.1


def test_categorical_shift_is_detected() -> None:
    rng = np.random.default_rng(131)
    ref = build_reference(mixed_frame(rng, 3000), ["colour"])
    monitor = DriftMonitor(ref, window_size=500)
    monitor.observe(mixed_frame(rng, 500).to_numpy())
    assert monitor.compute().drifted_features == []
    monitor.observe(mixed_frame(rng, 500, p=(0.2, 0.3, 0.5)).to_numpy())
    report = monitor.compute()
    assert report.drifted_features == ["colour"]
    colour = report.features[1]
    assert colour.kind == "categorical" and colour.stattest == "chisquare"
    assert colour.psi is not None and colour.psi > 0.1


def test_unseen_category_counts_as_other_and_drifts() -> None:
    rng = np.random.default_rng(14)
    ref = build_reference(mixed_frame(rng, 3000), ["colour"])
    monitor = DriftMonitor(ref, window_size=200)
    current = mixed_frame(rng, 200)
    current.loc[:49, "colour"] = "purple"
    monitor.observe(current.to_numpy())
    colour = monitor.compute().features[1]
    assert colour.drifted and colour.p_value is not None and colour.p_value < 1e-12


def test_dataset_drift_when_half_the_features_drift() -> None:
    rng = np.random.default_rng(15)
    ref = build_reference(mixed_frame(rng, 3000), ["colour"])
    monitor = DriftMonitor(ref, window_size=300)
    current = mixed_frame(rng, 300, p=(0.1, 0.1, 0.8))
    current["x"] += 2.0
    monitor.observe(current.to_numpy())
    report = monitor.compute()
    assert report.drifted_features == ["x", "colour"]
    assert report.share_drifted == pytest.approx(2 / 3) and report.dataset_drift
    strict = DriftMonitor(ref, window_size=300, dataset_drift_share=0.9)
    strict.observe(current.to_numpy())
    assert not strict.compute().dataset_drift


def test_too_few_rows_reports_no_drift() -> None:
    rng = np.random.default_rng(16)
    ref = build_reference(normal_frame(rng, 1000), [])
    monitor = DriftMonitor(ref, window_size=100, min_rows=30)
    shifted = normal_frame(rng, 29) + 100.0
    monitor.observe(shifted.to_numpy())
    report = monitor.compute()
    assert not report.enough_data and report.window_count == 29
    assert not report.dataset_drift and report.drifted_features == []
    assert all(f.psi is None and f.p_value is None for f in report.features)
    json.dumps(report.to_dict())  # JSON-ready: no NaN
    monitor.observe(shifted.iloc[:1].to_numpy())
    report = monitor.compute()
    assert report.enough_data and report.dataset_drift


def test_window_slides_back_to_no_drift() -> None:
    rng = np.random.default_rng(170)
    ref = build_reference(normal_frame(rng, 3000), [])
    monitor = DriftMonitor(ref, window_size=250)
    monitor.observe((normal_frame(rng, 250) + 5.0).to_numpy())
    assert monitor.compute().dataset_drift
    # One row at a time, wrapping around the ring several times over.
    for row in normal_frame(rng, 1000).itertuples(index=False):
        monitor.observe([tuple(row)])
    report = monitor.compute()
    assert report.window_count == 250 and monitor.observed_total == 1250
    assert report.drifted_features == []


def test_observe_accepts_lists_arrays_and_frames_in_feature_order() -> None:
    rng = np.random.default_rng(18)
    frame = mixed_frame(rng, 1000)
    ref = build_reference(frame, ["colour"])
    current = mixed_frame(rng, 100)
    reports = []
    for rows in (
        current.to_numpy(),  # object array
        [tuple(r) for r in current.itertuples(index=False)],
        current[["y", "colour", "x"]],  # a frame is read by column name
    ):
        m = DriftMonitor(ref, window_size=100)
        m.observe(rows)
        reports.append(m.compute().to_dict())
    assert reports[0] == reports[1] == reports[2]
    m = DriftMonitor(ref, window_size=100)
    with pytest.raises(ValueError, match=r"row 0 has 2 values, expected 3"):
        m.observe([(1.0, "red")])
    with pytest.raises(ValueError, match=r"expected rows of 3 values \(x, colour, y\)"):
        m.observe(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="columns missing from the frame: y"):
        m.observe(current[["x", "colour"]])


def test_missing_and_unparseable_numbers_are_left_out() -> None:
    rng = np.random.default_rng(19)
    ref = build_reference(normal_frame(rng, 1000)[["a"]], [])
    monitor = DriftMonitor(ref, window_size=100)
    values = [(v,) for v in rng.normal(0.0, 1.0, 40)] + [(None,), ("oops",), ("",)] * 20
    monitor.observe(values)
    report = monitor.compute()
    assert report.window_count == 100
    assert report.features[0].n == 40
    assert report.features[0].p_value is not None


def test_flag_by_psi() -> None:
    rng = np.random.default_rng(20)
    ref = build_reference(normal_frame(rng, 3000), [])
    current = normal_frame(rng, 300)
    current["a"] += 0.5
    by_psi = DriftMonitor(ref, window_size=300, flag_by="psi", psi_threshold=0.1)
    by_psi.observe(current.to_numpy())
    report = by_psi.compute()
    for f in report.features:
        assert f.psi is not None
        assert f.drifted == (f.psi >= 0.1)
    assert "a" in report.drifted_features


def test_monitor_rejects_bad_settings() -> None:
    ref = build_reference(pd.DataFrame({"a": np.arange(100.0)}), [])
    with pytest.raises(ValueError, match="window_size"):
        DriftMonitor(ref, window_size=0)
    with pytest.raises(ValueError, match="p_value"):
        DriftMonitor(ref, window_size=10, p_value=1.5)
    with pytest.raises(ValueError, match="flag_by"):
        DriftMonitor(ref, window_size=10, flag_by="vibes")  # type: ignore[arg-type]


def test_observe_and_compute_from_threads() -> None:
    rng = np.random.default_rng(21)
    ref = build_reference(normal_frame(rng, 2000), [])
    monitor = DriftMonitor(ref, window_size=500)
    batches = [normal_frame(rng, 7).to_numpy() for _ in range(300)]
    errors: list[BaseException] = []

    def writer() -> None:
        for b in batches:
            monitor.observe(b)

    def reader() -> None:
        try:
            for _ in range(20):
                r = monitor.compute()
                assert 0 <= r.window_count <= 500
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert monitor.observed_total == 2100 and monitor.window_count == 500
    # The window holds exactly the last 500 rows observed.
    last = np.concatenate(batches)[-500:]
    expected = DriftMonitor(ref, window_size=500)
    expected.observe(last)
    assert monitor.compute().to_dict() == expected.compute().to_dict()
