"""One training run: spec in, files written, :class:`api.TrainingResult` out.

Output layout (a directory, local or on the artifact PVC)::

    model.skops | model.joblib   the fitted Pipeline (preprocessing + estimator)
    model.onnx                   only when spec.artifact.onnx and verified
    reference.json               drift reference statistics of the training features
    holdout.csv                  the held-out test split, with the target column
    result.json                  the TrainingResult document (written by the CLI)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import skops.io as sio
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import InvalidParameterError

from kubeloop_runtime import api, artifacts, drift, validation
from kubeloop_runtime.train import champion as champion_mod
from kubeloop_runtime.train import data as data_mod
from kubeloop_runtime.train import evaluate, pipeline
from kubeloop_runtime.train import validate as validate_mod
from kubeloop_runtime.train.errors import DataError, InvalidSpecError, TrainError
from kubeloop_runtime.train.output import Output
from kubeloop_runtime.train.result import clip

log = logging.getLogger(__name__)

MODEL_FILES = {"skops": "model.skops", "joblib": "model.joblib"}
ONNX_FILE = "model.onnx"
REFERENCE_FILE = "reference.json"
HOLDOUT_FILE = "holdout.csv"
RESULT_FILE = "result.json"
REFERENCE_MAX_ROWS = 200_000
_MAX_CATEGORIES = 256
_MAX_CATEGORY_CHARS = 128


def _scalar(value: Any) -> api.Scalar:
    item = value.item() if hasattr(value, "item") else value
    if item is None or isinstance(item, int | float | str | bool):
        return item
    return str(item)


def build_signature(
    model: Any, x: pd.DataFrame, columns: data_mod.Columns, task: api.Task
) -> api.Signature:
    """Inputs (dtype, and categories the encoder learned) and output (classes)."""
    categories: dict[str, list[str]] = {}
    if columns.categorical:
        encoder = model.named_steps["preprocess"].named_transformers_["categorical"]
        onehot = encoder.named_steps["onehot"]
        for name, values in zip(columns.categorical, onehot.categories_, strict=True):
            cats = [str(v)[:_MAX_CATEGORY_CHARS] for v in values.tolist() if not pd.isna(v)]
            categories[name] = cats
        # The API bounds categories per input and in total: list the smallest first.
        budget = api.MAX_SIGNATURE_CATEGORIES
        for name in sorted(categories, key=lambda n: len(categories[n])):
            count = len(categories[name])
            if count <= min(budget, _MAX_CATEGORIES):
                budget -= count
            else:
                log.warning("Column %r has %d categories; not listed in the signature", name, count)
                del categories[name]
    inputs = [
        api.FeatureSpec(
            name=name, dtype=validation.dtype_name(x[name]), categories=categories.get(name)
        )
        for name in columns.features
    ]
    if task is api.Task.CLASSIFICATION:
        classes = model.classes_
        kind = classes.dtype.kind
        dtype = {"b": "bool", "i": "int64", "u": "int64", "f": "float64"}.get(kind, "string")
        listed = [_scalar(c) for c in classes.tolist()][:256]
        output = api.OutputSpec(dtype=dtype, classes=listed)
    else:
        output = api.OutputSpec(dtype="float64")
    return api.Signature(inputs=inputs, output=output)


def _split(
    x: pd.DataFrame, y: pd.Series, spec: api.TrainingJobSpec
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    ev = spec.evaluation
    stratify = y if spec.estimator.task is api.Task.CLASSIFICATION and ev.stratify else None
    try:
        parts = train_test_split(
            x, y, test_size=ev.test_size, random_state=ev.seed, stratify=stratify
        )
    except ValueError as e:
        if stratify is None:
            raise DataError(f"cannot split the dataset (testSize {ev.test_size}): {e}") from e
        log.warning("Stratified split impossible (%s); splitting without stratification", e)
        try:
            parts = train_test_split(x, y, test_size=ev.test_size, random_state=ev.seed)
        except ValueError as e2:
            raise DataError(f"cannot split the dataset (testSize {ev.test_size}): {e2}") from e2
    x_train, x_test, y_train, y_test = parts
    return x_train, x_test, y_train, y_test


def _fit_errors(estimator: str) -> tuple[type[Exception], ...]:
    """What a fit raises for bad data or values (LightGBM's error is no ValueError)."""
    if estimator.startswith("LGBM"):
        from lightgbm.basic import LightGBMError  # noqa: PLC0415

        return (ValueError, TypeError, LightGBMError)
    return (ValueError, TypeError)


def _fit(model: Any, x: pd.DataFrame, y: pd.Series, estimator: str) -> None:
    try:
        model.fit(x, y)
    except InvalidParameterError as e:
        raise InvalidSpecError(f"spec.estimator.hyperparameters: {e}") from e
    except _fit_errors(estimator) as e:
        raise DataError(f"fitting {estimator} failed: {e}") from e


def _write_model(model: Any, fmt: str, path: Path) -> None:
    if fmt == "joblib":
        joblib.dump(model, path)
    else:
        sio.dump(model, path)


def write_holdout(frame: pd.DataFrame, path: Path) -> None:
    """CSV through Arrow's writer: about 5x faster than ``DataFrame.to_csv``, same values back."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))


def write_reference(
    x_train: pd.DataFrame,
    categorical: list[str],
    path: Path,
    seed: int = 0,
    *,
    x_test: pd.DataFrame | None = None,
) -> None:
    """Drift reference statistics of the training features.

    Above :data:`REFERENCE_MAX_ROWS` rows they are computed on a seeded uniform sample of
    that many training rows: bin proportions are then within about 0.1 percentage point of
    the full set's, far below the sampling noise of a serving window (at most 100,000
    rows), and building them stays a small part of a large run. The seen range of each
    numeric feature (data validation's OutOfRange) covers every row, the held-out ones
    (``x_test``) included.
    """
    full = x_train if x_test is None else pd.concat([x_train, x_test])
    if len(x_train) > REFERENCE_MAX_ROWS:
        x_train = x_train.sample(n=REFERENCE_MAX_ROWS, random_state=seed)
    try:
        stats = drift.build_reference(x_train, categorical)
    except ValueError as e:
        raise DataError(f"cannot build drift reference statistics: {e}") from e
    features = [
        f.model_copy(update=_seen_range(full[f.name])) if f.kind == "numeric" else f
        for f in stats.features
    ]
    path.write_bytes(stats.model_copy(update={"features": features}).to_json())


def _seen_range(series: pd.Series) -> dict[str, float]:
    values = np.asarray(series, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return {"min": float(finite.min()), "max": float(finite.max())}


def train(
    spec: api.TrainingJobSpec,
    output: Output,
    data_root: Path,
    champion: champion_mod.Champion | None = None,
    artifact_root: Path | None = None,
    *,
    reference: champion_mod.Champion | None = None,
) -> api.TrainingResult:
    """Run the whole pipeline; raises :class:`TrainError` for invalid specs and data.

    With ``spec.champion``, ``champion`` (read from ``KUBELOOP_CHAMPION``) is scored on the
    same held-out rows and gates the challenger (see :mod:`.champion`). With
    ``spec.validation``, the dataset is first checked against ``reference`` (default: the
    champion; see :mod:`.validate`).
    """
    started = time.monotonic()
    task = spec.estimator.task
    # Fail fast on the estimator and the output store before reading any data.
    pipeline.make_estimator(spec.estimator, spec.evaluation.seed)
    output.check()

    loaded = data_mod.load_dataset(spec.dataset, data_root)
    dataset_info = loaded.info()
    log.info("Loaded dataset %s: %d rows, %d columns", loaded.source, *loaded.frame.shape)
    checked = validate_mod.check(
        spec,
        loaded.frame,
        spec.dataset.target or data_mod.BUILTIN_TARGET,
        reference if reference is not None else champion,
        artifact_root,
    )
    columns = data_mod.validate_columns(loaded.frame, spec)
    x_train, x_test, y_train, y_test = _split(
        loaded.frame[columns.features], loaded.frame[columns.target], spec
    )
    del loaded  # the split holds its own rows; drop the full frame before fitting

    model = pipeline.build_pipeline(spec, columns.numeric, columns.categorical)
    fit_started = time.monotonic()
    _fit(model, x_train, y_train, spec.estimator.type)
    log.info(
        "Fitted %s on %d rows in %.2fs",
        spec.estimator.type,
        len(x_train),
        time.monotonic() - fit_started,
    )

    metrics = evaluate.metrics_for(task, model, x_test, y_test)
    metrics.update(evaluate.cross_validation_metrics(model, x_train, y_train, spec))
    gate = evaluate.check_gate(metrics, spec.quality_gate)
    gate, champion_metrics = champion_mod.apply_gate(
        spec, champion, x_test=x_test, y_test=y_test, metrics=metrics, gate=gate,
        artifact_root=artifact_root,
    )  # fmt: skip
    metrics.update(champion_metrics)
    signature = build_signature(model, x_train, columns, task)
    framework = artifacts.running_framework()
    parameters = pipeline.scalar_parameters(model.named_steps["estimator"])
    summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
    common: dict[str, Any] = {
        "task": task,
        "framework": framework,
        "signature": signature,
        "metrics": metrics,
        "parameters": parameters,
        "dataset": dataset_info,
        "gate": gate,
        "validation": checked,
    }
    # A model that misses the gate is still written and registered (never served), so its
    # ModelVersion shows what was tried and why it was refused.
    fmt = spec.artifact.format
    _write_model(model, fmt, output.directory / MODEL_FILES[fmt])
    uri, sha, size = output.publish(MODEL_FILES[fmt])
    ref: dict[str, Any] = {"uri": uri, "sha256": sha, "format": fmt, "size_bytes": size}

    no_onnx: str | None = None
    if spec.artifact.onnx and gate.passed:
        from kubeloop_runtime.train.onnx_export import export_verified  # noqa: PLC0415

        (output.directory / ONNX_FILE).unlink(missing_ok=True)
        impute = spec.preprocessing.impute
        imputed = (columns.numeric if impute.numeric != "none" else []) + (
            columns.categorical if impute.categorical != "none" else []
        )
        no_onnx = export_verified(
            model, x_test, columns.categorical, task, output.directory / ONNX_FILE,
            signature=signature, imputed=imputed,
        )  # fmt: skip
        if no_onnx is None:
            ref["onnx_uri"], ref["onnx_sha256"], _ = output.publish(ONNX_FILE)

    write_reference(
        x_train,
        columns.categorical,
        output.directory / REFERENCE_FILE,
        spec.evaluation.seed,
        x_test=x_test,
    )
    ref["reference_stats_uri"], ref["reference_stats_sha256"], _ = output.publish(REFERENCE_FILE)

    write_holdout(x_test.assign(**{columns.target: y_test}), output.directory / HOLDOUT_FILE)
    output.publish(HOLDOUT_FILE)

    if not gate.passed:
        log.info("Trained %s, which failed its quality gate: %s", spec.model, gate.message)
        return api.TrainingResult(
            succeeded=False,
            reason=api.REASON_QUALITY_GATE_FAILED,
            message=f"quality gate failed: {gate.message}"[:1024],
            artifact=api.ArtifactRef(**ref),
            **common,
        )
    log.info("Trained %s in %.2fs: %s", spec.model, time.monotonic() - started, summary)
    return api.TrainingResult(
        succeeded=True,
        reason="Trained",
        message=clip(
            f"trained {spec.estimator.type} on {len(x_train)} rows: {summary}"
            + (
                f"; data validation warned: {checked.total} anomalies (see status.conditions)"
                if checked is not None and not checked.passed
                else ""
            )
            + (f"; no ONNX graph ({no_onnx}): served by scikit-learn" if no_onnx else "")
        ),
        artifact=api.ArtifactRef(**ref),
        **common,
    )


__all__ = ["Output", "TrainError", "build_signature", "train"]
