"""Metrics on held-out data, cross-validation, and the quality gate.

Metric names are those of :data:`kubeloop_runtime.api.CLASSIFICATION_METRICS` and
:data:`~kubeloop_runtime.api.REGRESSION_METRICS`; cross-validated means are
``cv_<metric>_mean``. A metric that is undefined on the data (ROC AUC without
``predict_proba``, or with a class missing from the test set) is left out, never NaN.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate

from kubeloop_runtime import api
from kubeloop_runtime.train.data import BUILTIN_TARGET
from kubeloop_runtime.train.errors import DataError, InvalidSpecError

log = logging.getLogger(__name__)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def classification_metrics(model: Any, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """accuracy, macro f1/precision/recall; roc_auc (ovr) and log_loss when probabilities exist."""
    predicted = model.predict(x)
    out = {
        "accuracy": skm.accuracy_score(y, predicted),
        "f1": skm.f1_score(y, predicted, average="macro", zero_division=0),
        "precision": skm.precision_score(y, predicted, average="macro", zero_division=0),
        "recall": skm.recall_score(y, predicted, average="macro", zero_division=0),
    }
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(x)
        classes = model.classes_
        try:
            if len(classes) == 2:
                out["roc_auc"] = skm.roc_auc_score(np.asarray(y) == classes[1], proba[:, 1])
            else:
                out["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
        except ValueError as e:
            log.info("roc_auc is undefined on this test set: %s", e)
        try:
            out["log_loss"] = skm.log_loss(y, proba, labels=classes)
        except ValueError as e:
            log.info("log_loss is undefined on this test set: %s", e)
    return _finite(out)


def regression_metrics(model: Any, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """rmse, mae and r2."""
    predicted = model.predict(x)
    out = {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, predicted))),
        "mae": skm.mean_absolute_error(y, predicted),
    }
    if len(y) >= 2:
        out["r2"] = skm.r2_score(y, predicted)
    return _finite(out)


def metrics_for(task: api.Task, model: Any, x: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    if task is api.Task.CLASSIFICATION:
        return classification_metrics(model, x, y)
    return regression_metrics(model, x, y)


def evaluate_on(model: Any, frame: pd.DataFrame, spec: api.TrainingJobSpec) -> dict[str, float]:
    """Score a fitted model on a frame holding the spec's features and target.

    This is how the closed loop compares champion and challenger on the same
    ``holdout.csv``.
    """
    target = spec.dataset.target or BUILTIN_TARGET
    if target not in frame.columns:
        raise DataError(f"target column {target!r} not found in the evaluation frame")
    features = spec.dataset.features or [c for c in frame.columns if c != target]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise DataError(f"feature column {missing[0]!r} not found in the evaluation frame")
    return metrics_for(spec.estimator.task, model, frame[features], frame[target])


_CV_SCORERS_CLASSIFICATION = {
    "accuracy": "accuracy",
    "f1": "f1_macro",
    "precision": "precision_macro",
    "recall": "recall_macro",
}
_CV_SCORERS_REGRESSION = {
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
}


def cross_validation_metrics(
    pipeline: Any, x: pd.DataFrame, y: pd.Series, spec: api.TrainingJobSpec
) -> dict[str, float]:
    """k-fold cross-validation on the training split: ``cv_<metric>_mean``."""
    folds = spec.evaluation.cv_folds
    if folds == 0:
        return {}
    if folds == 1:
        raise InvalidSpecError("spec.evaluation.cvFolds must be 0 (off) or at least 2")
    ev = spec.evaluation
    classification = spec.estimator.task is api.Task.CLASSIFICATION
    scorers = dict(_CV_SCORERS_CLASSIFICATION if classification else _CV_SCORERS_REGRESSION)
    if classification and hasattr(pipeline, "predict_proba"):
        scorers["roc_auc"] = "roc_auc_ovr" if y.nunique() > 2 else "roc_auc"
    if classification and ev.stratify and int(y.value_counts().min()) >= folds:
        splitter: Any = StratifiedKFold(folds, shuffle=True, random_state=ev.seed)
    else:
        splitter = KFold(folds, shuffle=True, random_state=ev.seed)
    scores = cross_validate(
        clone(pipeline), x, y, cv=splitter, scoring=scorers, error_score="raise"
    )
    out: dict[str, float] = {}
    for name, scorer in scorers.items():
        values = scores[f"test_{name}"]
        mean = float(values.mean())
        out[f"cv_{name}_mean"] = -mean if scorer.startswith("neg_") else mean
    return _finite(out)


def check_gate(metrics: dict[str, float], gate: api.QualityGateSpec) -> api.GateResult:
    """Compare metrics with the spec's thresholds; the message lists every failure."""
    failures: list[str] = []
    for t in gate.thresholds:
        value = metrics.get(t.metric)
        if value is None:
            failures.append(f"{t.metric} was not computed")
            continue
        if t.min is not None and value < t.min:
            failures.append(f"{t.metric} {value:.4g} < min {t.min:g}")
        if t.max is not None and value > t.max:
            failures.append(f"{t.metric} {value:.4g} > max {t.max:g}")
    if failures:
        return api.GateResult(passed=False, message=("; ".join(failures))[:1024])
    checked = ", ".join(t.metric for t in gate.thresholds)
    return api.GateResult(passed=True, message=f"passed: {checked}" if checked else "no thresholds")
