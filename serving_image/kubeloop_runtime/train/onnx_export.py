"""Optional ONNX export, kept only when ONNX Runtime reproduces scikit-learn's predictions.

Graph inputs: one per feature, in signature order, each of shape ``[N, 1]``: ``float``
(float32) for numeric columns, ``string`` for string categorical columns and ``int64`` for
integer categorical columns. skl2onnx renames inputs to identifiers, so the feature each
input carries is recorded in the graph's metadata (``onnx_graph.INPUTS_KEY``). Outputs: the
label first (then probabilities, as a plain tensor, for classifiers).

The export is verified with the server's own predictor (``onnx_graph.OnnxPredictor`` fed
the rows as the server validates them) on the held-out set, and on the same rows with one
imputed column missing per row: classification labels must be identical and regression
values within 1e-4 relative, and every output finite; otherwise it is discarded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubeloop_runtime import api
from kubeloop_runtime.onnx_graph import INPUTS_KEY, OnnxPredictor, server_rows

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


def with_missing(x: pd.DataFrame, imputed: list[str]) -> pd.DataFrame:
    """``x`` with, in row ``i``, imputed column ``i % len(imputed)`` set missing."""
    out = x.copy()
    if not imputed:
        return out.iloc[0:0]
    for k, column in enumerate(imputed):
        rows = np.arange(k, len(out), len(imputed))
        col = out[column]
        if not pd.api.types.is_float_dtype(col) and pd.api.types.is_numeric_dtype(col):
            out[column] = col.astype(np.float64)
        elif not pd.api.types.is_numeric_dtype(col):
            out[column] = col.astype(object)
        out.iloc[rows, out.columns.get_loc(column)] = np.nan
    return out


_registered: set[str] = set()


def register_booster_converters(estimator: Any) -> dict[str, int] | None:
    """Teach skl2onnx XGBoost's and LightGBM's estimators (onnxmltools' converters).

    skl2onnx converts a whole Pipeline only through converters it knows by class; the
    boosters' come from onnxmltools and are registered with skl2onnx's public API, once,
    for the library the estimator is from (importing the other is left out). Returns the
    opsets to convert with: onnxmltools' tree converters write ``ai.onnx.ml`` version 3
    (None: skl2onnx's defaults, for every other estimator).
    """
    module = type(estimator).__module__.split(".", 1)[0]
    if module not in ("xgboost", "lightgbm"):
        return None
    from skl2onnx import get_latest_tested_opset_version  # noqa: PLC0415

    opset = {"": get_latest_tested_opset_version(), "ai.onnx.ml": 3}
    if module in _registered:
        return opset
    from skl2onnx import update_registered_converter  # noqa: PLC0415
    from skl2onnx.common.shape_calculator import (  # noqa: PLC0415
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    if module == "xgboost":
        import xgboost  # noqa: PLC0415
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import (  # noqa: PLC0415
            convert_xgboost,
        )

        classifier, regressor, convert = (
            xgboost.XGBClassifier,
            xgboost.XGBRegressor,
            convert_xgboost,
        )
        alias = "XGBoostXGB"
    else:
        import lightgbm  # noqa: PLC0415
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import (  # noqa: PLC0415
            convert_lightgbm,
        )

        classifier, regressor = lightgbm.LGBMClassifier, lightgbm.LGBMRegressor
        convert, alias = convert_lightgbm, "LightGbmLGBM"
    update_registered_converter(
        classifier,
        f"{alias}Classifier",
        calculate_linear_classifier_output_shapes,
        convert,
        options=classifier_options,
    )
    update_registered_converter(
        regressor, f"{alias}Regressor", calculate_linear_regressor_output_shapes, convert
    )
    _registered.add(module)
    return opset


def _verify(
    predictor: OnnxPredictor, model: Any, frame: pd.DataFrame, task: api.Task, what: str
) -> str | None:
    """None when the graph reproduces ``model`` on ``frame``, else why not."""
    if frame.empty:
        return None
    labels, proba = predictor.predict(server_rows(frame))
    if proba is not None and not np.isfinite(proba).all():
        return f"non-finite probabilities on {what}"
    if not _matches(task, labels, np.asarray(model.predict(frame))):
        return f"ONNX Runtime predictions differ from scikit-learn's on {what}"
    return None


def export_verified(
    model: Any,
    x_holdout: pd.DataFrame,
    categorical: list[str],
    task: api.Task,
    path: Path,
    *,
    signature: api.Signature,
    imputed: list[str] | None = None,
) -> str | None:
    """Write ``path`` if the converted graph, fed as the server feeds it, reproduces
    ``model`` on ``x_holdout`` (and on it with ``imputed`` columns missing).

    Returns ``None`` when the graph was kept, else why there is none (logged too; the
    result's message says it, so a model served by scikit-learn is never a surprise).
    The scikit-learn artifact is always the source of truth.
    """
    reason = _export(model, x_holdout, categorical, task, path, signature, imputed or [])
    if reason is None:
        log.info("Exported ONNX graph %s (verified on %d held-out rows)", path, len(x_holdout))
    else:
        log.warning("No ONNX graph: %s; the model is served by scikit-learn", reason)
    return reason


def _export(  # noqa: PLR0917 - private, called once with everything it needs
    model: Any,
    x_holdout: pd.DataFrame,
    categorical: list[str],
    task: api.Task,
    path: Path,
    signature: api.Signature,
    imputed: list[str],
) -> str | None:
    try:
        # Optional and heavy (about a second to import): only when ONNX is asked for.
        import onnxruntime  # noqa: F401, PLC0415
        from skl2onnx import convert_sklearn  # noqa: PLC0415
        from skl2onnx.common.data_types import (  # noqa: PLC0415
            FloatTensorType,
            Int64TensorType,
            StringTensorType,
        )
    except ImportError as e:
        return f"ONNX export unavailable ({e})"

    wanted = set(categorical)
    kinds = [_input_kind(x_holdout[c], c in wanted) for c in x_holdout.columns]
    types = {"float": FloatTensorType, "int64": Int64TensorType, "string": StringTensorType}
    features = [str(c) for c in x_holdout.columns]
    initial = [(c, types[k]([None, 1])) for c, k in zip(features, kinds, strict=True)]
    estimator = model.steps[-1][1]
    options = {id(estimator): {"zipmap": False}} if task is api.Task.CLASSIFICATION else None
    try:
        opset = register_booster_converters(estimator)
        onx = convert_sklearn(model, initial_types=initial, options=options, target_opset=opset)
        graph_inputs = [i.name for i in onx.graph.input]
        if len(graph_inputs) != len(features):
            return f"the graph has {len(graph_inputs)} inputs for {len(features)} features"
        # skl2onnx keeps the order of initial_types; record which feature each input is.
        entry = onx.metadata_props.add()
        entry.key = INPUTS_KEY
        entry.value = json.dumps(features)
        blob = onx.SerializeToString()
        predictor = OnnxPredictor(blob, signature, task)
        missing = with_missing(x_holdout, [c for c in features if c in set(imputed)])
        reason = _verify(predictor, model, x_holdout, task, "the held-out set") or _verify(
            predictor, model, missing, task, "held-out rows with imputed values missing"
        )
    except Exception as e:
        return f"conversion or inference failed: {str(e)[:200]}"
    if reason is not None:
        return reason
    path.write_bytes(blob)
    return None
