"""The ModelVersion a training run registers: a pure function of the run's result.

The ModelVersion carries everything a server needs to load and check the model (artifact
URI and sha256, library versions, signature) and everything a person needs to compare it
(metrics, parameters, dataset fingerprint, lineage). It has no owner reference: the
registry outlives the TrainingJob that filled it.
"""

from __future__ import annotations

import math
from typing import Any

from kubeloop.registry import ANNOTATION_TRAININGJOB_UID, model_version_name
from kubeloop_runtime import api

COMPONENT = "model-version"
MAX_METRICS = 32
MAX_PARAMETERS = 64
MAX_PARAMETER_VALUE = 256


class IncompleteResultError(ValueError):
    """The training result lacks a field a ModelVersion needs; the message names it."""


def _metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Finite metrics only (JSON has no NaN), at most MAX_METRICS, in name order."""
    finite = {k: float(v) for k, v in sorted(metrics.items()) if math.isfinite(v)}
    return dict(list(finite.items())[:MAX_METRICS])


def _parameters(parameters: dict[str, str]) -> dict[str, str]:
    items = sorted(parameters.items())[:MAX_PARAMETERS]
    return {k[:128]: v[:MAX_PARAMETER_VALUE] for k, v in items}


def model_version_spec(
    *,
    trainingjob: str,
    spec: api.TrainingJobSpec,
    result: api.TrainingResult,
    version: int,
    image: str,
    trial: api.TrialRef | None = None,
) -> api.ModelVersionSpec:
    """The ModelVersion spec for ``result`` of TrainingJob ``trainingjob``, as ``version``.

    ``trial``: the search trial ``result`` came from (the best of ``spec.search``), named in
    the lineage with its hyperparameters.

    Raises :class:`IncompleteResultError` when the result lacks the artifact, framework,
    signature, dataset or task (a run that failed before producing a model).
    """
    missing = [
        name
        for name, value in (
            ("artifact", result.artifact),
            ("framework", result.framework),
            ("signature", result.signature),
            ("dataset", result.dataset),
        )
        if value is None
    ]
    if missing:
        raise IncompleteResultError(
            f"the training result has no {', '.join(missing)}: nothing to register"
        )
    assert result.artifact is not None
    assert result.framework is not None
    assert result.signature is not None
    assert result.dataset is not None
    return api.ModelVersionSpec(
        model=spec.model,
        version=version,
        task=result.task or spec.estimator.task,
        # How servers reach an object-store artifact: the run's storage (never its values).
        artifact=(
            result.artifact.model_copy(update={"storage": spec.storage})
            if spec.storage is not None
            and result.artifact.uri.startswith(("s3://", "gs://", "az://"))
            else result.artifact
        ),
        framework=result.framework,
        signature=result.signature,
        metrics=_metrics(result.metrics),
        parameters=_parameters(result.parameters),
        dataset=result.dataset,
        lineage=api.Lineage(
            training_job=trainingjob, image=image, trigger=spec.trigger, trial=trial
        ),
        gate=result.gate or api.GateResult(passed=result.succeeded, message=result.message),
    )


def labels(model: str, version: int, trainingjob: str | None) -> dict[str, str]:
    out = {
        api.LABEL_MODEL: model,
        api.LABEL_VERSION: str(version),
        api.LABEL_NAME: "kubeloop",
        api.LABEL_COMPONENT: COMPONENT,
        api.LABEL_PART_OF: "kubeloop",
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
    }
    if trainingjob:
        out[api.LABEL_TRAININGJOB] = trainingjob
    return out


def build_model_version(
    namespace: str, spec: api.ModelVersionSpec, *, trainingjob_uid: str | None = None
) -> dict[str, Any]:
    """The ModelVersion object ``<model>-v<version>`` for ``spec`` (no owner reference)."""
    metadata: dict[str, Any] = {
        "name": model_version_name(spec.model, spec.version),
        "namespace": namespace,
        "labels": labels(spec.model, spec.version, spec.lineage.training_job),
    }
    if trainingjob_uid:
        metadata["annotations"] = {ANNOTATION_TRAININGJOB_UID: trainingjob_uid}
    return {
        "apiVersion": api.API_VERSION,
        "kind": "ModelVersion",
        "metadata": metadata,
        "spec": spec.wire(),
    }
