"""Sampled prediction logging as JSON lines."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging

import numpy as np
import pytest
from scipy.stats import binom

from kubeloop_runtime.predlog import PredictionLogger


def log_n(logger: PredictionLogger, n: int) -> int:
    return sum(
        logger.maybe_log(f"r{i}", "iris", "2", [[5.1, 3.5, 1.4, 0.2]], [0]) for i in range(n)
    )


def test_rate_zero_logs_nothing() -> None:
    out = io.StringIO()
    logger = PredictionLogger(0.0, out, seed=1)
    assert log_n(logger, 1000) == 0
    assert out.getvalue() == "" and logger.logged == 0


def test_rate_one_logs_every_request_as_a_json_line() -> None:
    out = io.StringIO()
    logger = PredictionLogger(1.0, out)
    assert log_n(logger, 50) == 50
    logger.maybe_log(
        "x",
        "iris",
        "2",
        np.array([[1.0, np.nan]]),
        np.array([np.int64(2)]),
        latency_seconds=0.004,
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 51
    records = [json.loads(line) for line in lines]
    assert [r["request_id"] for r in records[:50]] == [f"r{i}" for i in range(50)]
    first = records[0]
    assert set(first) == {"ts", "request_id", "model", "version", "inputs", "outputs"}
    assert first["inputs"] == [[5.1, 3.5, 1.4, 0.2]] and first["outputs"] == [0]
    ts = dt.datetime.fromisoformat(first["ts"])
    assert first["ts"].endswith("Z") and ts.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - ts).total_seconds()) < 60
    last = records[-1]
    assert last["inputs"] == [[1.0, None]] and last["outputs"] == [2]
    assert last["latency_seconds"] == 0.004


def test_rate_half_logs_about_half() -> None:
    n = 4000
    logger = PredictionLogger(0.5, io.StringIO(), seed=42)
    logged = log_n(logger, n)
    lo, hi = binom.ppf(0.0005, n, 0.5), binom.ppf(0.9995, n, 0.5)
    assert lo <= logged <= hi
    # The seed makes the sample reproducible.
    assert log_n(PredictionLogger(0.5, io.StringIO(), seed=42), n) == logged


def test_logs_to_a_logger(caplog: pytest.LogCaptureFixture) -> None:
    target = logging.getLogger("kubeloop.test.predictions")
    with caplog.at_level(logging.INFO, logger=target.name):
        PredictionLogger(1.0, target).maybe_log("r", "m", "1", [1], [2])
    assert json.loads(caplog.records[0].getMessage())["request_id"] == "r"


def test_unserialisable_values_are_skipped_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    logger = PredictionLogger(1.0, out)
    assert logger.maybe_log("r", "m", "1", [object()], [1]) is False
    assert out.getvalue() == "" and logger.failed == 1
    assert "Skipped prediction log line for request r" in caplog.text


def test_rate_is_validated() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        PredictionLogger(1.5)
