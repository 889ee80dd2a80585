"""Optional ONNX export, kept only when ONNX Runtime reproduces scikit-learn's predictions.

Graph inputs: one per feature, in signature order, each of shape ``[N, 1]``: ``float``
(float32) for numeric columns, ``string`` for string categorical columns and ``int64`` for
integer categorical columns. Outputs: the label first (then probabilities, as a plain
tensor, for classifiers). The export is verified on the held-out set: classification labels
must be identical and regression values within 1e-4 relative; otherwise it is discarded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubeloop_runtime import api

log = logging.getLogger(__name__)

REGRESSION_RTOL = 1e-4
REGRESSION_ATOL = 1e-6


def _input_kind(series: pd.Series, categorical: bool) -> str:
    if categorical and pd.api.types.is_integer_dtype(series):
        return "int64"
    if categorical:
        return "string"
    return "float"


def onnx_feeds(frame: pd.DataFrame, kinds: list[str], names: list[str]) -> dict[str, Any]:
    """ONNX Runtime inputs for ``frame``, one ``[N, 1]`` array per feature."""
    feeds: dict[str, Any] = {}
    for input_name, column, kind in zip(names, frame.columns, kinds, strict=True):
        series = frame[column]
        if kind == "float":
            arr = series.to_numpy(dtype=np.float32, na_value=np.nan)
        elif kind == "int64":
            arr = series.to_numpy(dtype=np.int64)
        else:
            arr = series.astype(object).where(series.notna(), "").to_numpy(dtype=object)
            arr = np.array([str(v) for v in arr], dtype=object)
        feeds[input_name] = arr.reshape(-1, 1)
    return feeds


def _matches(task: api.Task, onnx_out: np.ndarray, expected: np.ndarray) -> bool:
    got = np.asarray(onnx_out).reshape(-1)
    if got.shape != expected.reshape(-1).shape:
        return False
    if task is api.Task.CLASSIFICATION:
        return bool(got.tolist() == expected.reshape(-1).tolist())
    return bool(
        np.allclose(got.astype(np.float64), expected, rtol=REGRESSION_RTOL, atol=REGRESSION_ATOL)
    )


def export_verified(
    model: Any,
    x_holdout: pd.DataFrame,
    categorical: list[str],
    task: api.Task,
    path: Path,
) -> bool:
    """Write ``path`` if the converted graph reproduces ``model`` on ``x_holdout``.

    Returns whether the file was kept. Any conversion or runtime failure is logged and
    means "no ONNX"; the scikit-learn artifact is always the source of truth.
    """
    try:
        # Optional and heavy (about a second to import): only when ONNX is asked for.
        import onnxruntime as ort  # noqa: PLC0415
        from skl2onnx import convert_sklearn  # noqa: PLC0415
        from skl2onnx.common.data_types import (  # noqa: PLC0415
            FloatTensorType,
            Int64TensorType,
            StringTensorType,
        )
    except ImportError as e:
        log.warning("ONNX export skipped: %s", e)
        return False

    wanted = set(categorical)
    kinds = [_input_kind(x_holdout[c], c in wanted) for c in x_holdout.columns]
    types = {"float": FloatTensorType, "int64": Int64TensorType, "string": StringTensorType}
    initial = [(str(c), types[k]([None, 1])) for c, k in zip(x_holdout.columns, kinds, strict=True)]
    estimator = model.steps[-1][1]
    options = {id(estimator): {"zipmap": False}} if task is api.Task.CLASSIFICATION else None
    try:
        onx = convert_sklearn(model, initial_types=initial, options=options)
        blob = onx.SerializeToString()
        session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        out = session.run(None, onnx_feeds(x_holdout, kinds, names))[0]
    except Exception as e:
        log.warning("ONNX export skipped: conversion or inference failed: %s", e)
        return False
    expected = model.predict(x_holdout)
    if not _matches(task, out, expected):
        log.warning(
            "ONNX export discarded: ONNX Runtime predictions differ from scikit-learn's on"
            " the held-out set"
        )
        return False
    path.write_bytes(blob)
    log.info("Exported ONNX graph %s (verified on %d held-out rows)", path, len(x_holdout))
    return True
