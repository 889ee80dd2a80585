"""The champion gate: is the challenger at least as good as the version serving now?

The closed loop starts a retraining with ``spec.champion`` (the ModelVersion serving the
InferenceService) and the operator hands the champion's ModelVersion to the training pod
as JSON in ``KUBELOOP_CHAMPION`` (``{"metadata": {"name": ...}, "spec": ...}``). After the
challenger is evaluated, the champion's artifact is loaded from the same artifact volume
(sha256 checked, safe loading) and scored on the challenger's held-out split — the SAME
rows — and the challenger fails the gate when it is worse by more than
``spec.championGate.maxRegression`` on the gate metric (default accuracy for
classification, rmse for regression; for rmse, mae and log_loss lower is better).

The result records ``champion_<metric>`` next to the challenger's metrics, and a failed
gate names both numbers. A champion evaluated on data it was not trained for (e.g. after
the inputs drifted) usually scores worse there: that is the point of comparing on the
challenger's holdout, which stands for the data the service sees now.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubeloop_runtime import api
from kubeloop_runtime.train.errors import DataError, InvalidSpecError

log = logging.getLogger(__name__)

ENV_CHAMPION = api.ENV_CHAMPION


@dataclass(frozen=True)
class Champion:
    """The champion ModelVersion: its name and spec."""

    name: str
    spec: api.ModelVersionSpec


def parse_champion(text: str | None, env: str = ENV_CHAMPION) -> Champion | None:
    """Parse ``KUBELOOP_CHAMPION`` (or ``env``, same shape); None when unset or empty."""
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise InvalidSpecError(f"{env}: not JSON: {e}") from e
    if not isinstance(doc, Mapping):
        raise InvalidSpecError(f"{env}: expected a ModelVersion object")
    name = (doc.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise InvalidSpecError(f"{env}: metadata.name is required")
    try:
        spec = api.ModelVersionSpec.model_validate(doc.get("spec") or {})
    except ValidationError as e:
        raise InvalidSpecError(f"{env}: ModelVersion {name} has an invalid spec: {e}") from e
    return Champion(name=name, spec=spec)


def gate_metric(spec: api.TrainingJobSpec) -> str:
    """The metric the champion gate compares (spec.championGate.metric or the task default)."""
    if spec.champion_gate is not None and spec.champion_gate.metric:
        return spec.champion_gate.metric
    return "accuracy" if spec.estimator.task is api.Task.CLASSIFICATION else "rmse"


def compare(
    metric: str,
    challenger: float,
    champion: float,
    max_regression: float,
    champion_name: str = "the champion",
) -> api.GateResult:
    """Pass unless the challenger is worse than the champion by more than ``max_regression``.

    Higher is better, except for :data:`api.LOWER_IS_BETTER` metrics. Equal is a pass.
    """
    lower = metric in api.LOWER_IS_BETTER
    regression = (challenger - champion) if lower else (champion - challenger)
    # A tiny tolerance so that equal scores computed in different orders still pass.
    passed = regression <= max_regression + 1e-12
    direction = "lower is better" if lower else "higher is better"
    verdict = "passed" if passed else "failed"
    return api.GateResult(
        passed=passed,
        message=(
            f"champion gate {verdict}: {metric} {challenger:.4g} (challenger) vs {champion:.4g}"
            f" ({champion_name}) on the same held-out data, {direction},"
            f" maxRegression {max_regression:g}"
        ),
    )


def evaluate_champion(
    champion: Champion, x_test: Any, y_test: Any, artifact_root: Path | None
) -> dict[str, float]:
    """Load the champion's artifact and score it on the challenger's held-out rows."""
    from kubeloop_runtime import artifacts  # noqa: PLC0415 (scikit-learn, lazily)
    from kubeloop_runtime.train import evaluate  # noqa: PLC0415

    features = [f.name for f in champion.spec.signature.inputs]
    missing = [c for c in features if c not in x_test.columns]
    if missing:
        raise DataError(
            f"champion {champion.name} needs feature(s) {', '.join(map(repr, missing))} that"
            " the challenger's data does not have; the two cannot be compared"
        )
    ref = champion.spec.artifact
    try:
        path = artifacts.resolve(ref.uri, artifact_root)
        model = artifacts.load_model(path, sha256=ref.sha256, fmt=ref.format)
    except (artifacts.ArtifactError, OSError) as e:
        raise DataError(f"cannot load champion {champion.name} ({ref.uri}): {e}") from e
    return evaluate.metrics_for(champion.spec.task, model, x_test[features], y_test)


def apply_gate(
    spec: api.TrainingJobSpec,
    champion: Champion | None,
    *,
    x_test: Any,
    y_test: Any,
    metrics: dict[str, float],
    gate: api.GateResult,
    artifact_root: Path | None,
) -> tuple[api.GateResult, dict[str, float]]:
    """Combine the absolute gate with the champion gate; returns (gate, extra metrics).

    A no-op when ``spec.champion`` is unset or its ``championGate`` is disabled.
    """
    if spec.champion is None or (spec.champion_gate is not None and not spec.champion_gate.enabled):
        return gate, {}
    if champion is None:
        raise InvalidSpecError(
            f"spec.champion names ModelVersion {spec.champion} but {ENV_CHAMPION} is not set"
            " (the operator sets it when that ModelVersion exists)"
        )
    if champion.name != spec.champion:
        raise InvalidSpecError(
            f"{ENV_CHAMPION} holds ModelVersion {champion.name}, spec.champion is {spec.champion}"
        )
    if champion.spec.task is not spec.estimator.task:
        raise InvalidSpecError(
            f"champion {champion.name} is a {champion.spec.task.value} model; the challenger is"
            f" {spec.estimator.task.value}"
        )
    metric = gate_metric(spec)
    challenger_value = metrics.get(metric)
    if challenger_value is None:
        raise InvalidSpecError(
            f"spec.championGate.metric {metric!r} is not computed for this model"
            f" (computed: {', '.join(sorted(metrics))})"
        )
    scores = evaluate_champion(champion, x_test, y_test, artifact_root)
    champion_value = scores.get(metric)
    if champion_value is None or not math.isfinite(champion_value):
        raise DataError(f"champion {champion.name}: {metric} is undefined on the held-out data")
    margin = spec.champion_gate.max_regression if spec.champion_gate is not None else 0.0
    result = compare(metric, challenger_value, champion_value, margin, champion.name)
    log.info("%s", result.message)
    extra = {f"champion_{metric}": float(champion_value)}
    if not gate.passed and not result.passed:
        combined = api.GateResult(passed=False, message=f"{gate.message}; {result.message}"[:1024])
    elif not gate.passed:
        combined = gate
    elif not result.passed:
        combined = result
    else:
        combined = api.GateResult(passed=True, message=f"{gate.message}; {result.message}"[:1024])
    return combined, extra
