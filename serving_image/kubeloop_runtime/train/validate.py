"""spec.validation in the trainer: the dataset against the reference version, before fitting.

The reference is a ModelVersion (``spec.validation.reference``, default ``spec.champion``)
that the operator hands to the pod as JSON, like the champion (``KUBELOOP_CHAMPION``, or
``KUBELOOP_VALIDATION_REFERENCE`` when the reference is another version). Its reference
statistics are read from the artifact volume, sha256 checked. See
:mod:`kubeloop_runtime.validation` for the anomaly kinds.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from kubeloop_runtime import api, artifacts, drift, validation
from kubeloop_runtime.train.champion import ENV_CHAMPION, Champion
from kubeloop_runtime.train.errors import DataError, DataValidationError, InvalidSpecError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ENV_REFERENCE = api.ENV_VALIDATION_REFERENCE


def reference_statistics(version: Champion, artifact_root: Path | None) -> drift.ReferenceStats:
    """The reference version's training statistics, read and checked."""
    ref = version.spec.artifact
    if ref.reference_stats_uri is None:
        raise DataError(
            f"spec.validation: ModelVersion {version.name} has no reference statistics"
            " (spec.artifact.referenceStatsUri) to validate against"
        )
    where = f"reference statistics of ModelVersion {version.name} ({ref.reference_stats_uri})"
    try:
        data = artifacts.resolve(ref.reference_stats_uri, artifact_root).read_bytes()
        if ref.reference_stats_sha256 is not None:
            digest = hashlib.sha256(data).hexdigest()
            artifacts.verify_sha256(digest, ref.reference_stats_sha256, ref.reference_stats_uri)
        return drift.ReferenceStats.from_json(data)
    except (artifacts.ArtifactError, OSError, drift.ReferenceStatsError) as e:
        raise DataError(f"spec.validation: cannot read the {where}: {e}") from e


def check(
    spec: api.TrainingJobSpec,
    frame: pd.DataFrame,
    target: str,
    reference: Champion | None,
    artifact_root: Path | None,
) -> api.DataValidation | None:
    """Validate ``frame`` per spec.validation; raises on anomalies when the policy is fail."""
    name = spec.validation_reference
    if spec.validation is None or name is None:
        return None
    if reference is None or reference.name != name:
        env = ENV_CHAMPION if name == spec.champion else ENV_REFERENCE
        raise InvalidSpecError(
            f"spec.validation: ModelVersion {name} is the reference but {env} does not hold"
            " it (the operator sets it when that ModelVersion exists)"
        )
    stats = reference_statistics(reference, artifact_root)
    columns = [str(c) for c in frame.columns]
    features = (
        list(spec.dataset.features)
        if spec.dataset.features is not None
        else [c for c in columns if c != target]
    )
    anomalies = validation.validate_frame(
        frame, features, stats, reference.spec.signature, spec.validation
    )
    result = validation.summarize(anomalies, name, spec.validation.policy)
    if result.passed:
        log.info("Validated the dataset against ModelVersion %s: no anomalies", name)
        return result
    if spec.validation.policy == "fail":
        raise DataValidationError(result)
    log.warning("Data validation (policy warn): %s", result.summary())
    return result
