"""The TrainingResult document: failure results and the size-bounded termination message."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from kubeloop_runtime import api

log = logging.getLogger(__name__)

DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
_MESSAGE_LIMIT = 1024
MODEL_VERSION_FILE = "modelversion.yaml"
_MAX_METRICS = 32


def model_version_manifest(
    spec: api.TrainingJobSpec, result: api.TrainingResult, *, version: int = 1
) -> dict[str, object] | None:
    """The ModelVersion manifest ``kubeloop-serve --model-version`` serves, for a run
    that trained a model and passed its gate (``None`` otherwise).

    The same fields the operator registers (it numbers versions; here it is ``version``).
    """
    if (
        not result.succeeded
        or result.artifact is None
        or result.framework is None
        or result.signature is None
        or result.dataset is None
    ):
        return None
    metrics = {k: v for k, v in result.metrics.items() if math.isfinite(v)}
    mv = api.ModelVersionSpec(
        model=spec.model,
        version=version,
        task=result.task or spec.estimator.task,
        artifact=result.artifact,
        framework=result.framework,
        signature=result.signature,
        metrics=dict(sorted(metrics.items())[:_MAX_METRICS]),
        parameters=dict(sorted(result.parameters.items())[:64]),
        dataset=result.dataset,
        gate=result.gate or api.GateResult(passed=True),
    )
    return {
        "apiVersion": api.API_VERSION,
        "kind": "ModelVersion",
        "metadata": {
            "name": f"{spec.model}-v{version}",
            "labels": {api.LABEL_MODEL: spec.model, api.LABEL_VERSION: str(version)},
        },
        "spec": mv.wire(),
    }


def failure(reason: str, message: str, **fields: object) -> api.TrainingResult:
    """A failed result; ``message`` is clipped to the document's limit."""
    return api.TrainingResult.model_validate(
        {"succeeded": False, "reason": reason, "message": clip(message), **fields}
    )


def clip(message: str, limit: int = _MESSAGE_LIMIT) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def to_json(result: api.TrainingResult) -> str:
    """Compact JSON, one line."""
    return json.dumps(result.wire(), separators=(",", ":"), allow_nan=False)


def _note(result: api.TrainingResult, note: str) -> api.TrainingResult:
    message = f"{result.message} [{note}]" if result.message else f"[{note}]"
    if len(message) > _MESSAGE_LIMIT:
        message = clip(result.message, _MESSAGE_LIMIT - len(note) - 3) + f" [{note}]"
    return result.model_copy(update={"message": message})


def termination_message(
    result: api.TrainingResult, limit: int = api.TERMINATION_MESSAGE_LIMIT
) -> str:
    """The result as JSON under ``limit`` bytes.

    Kubernetes truncates termination messages beyond 4 KiB, which would break the JSON.
    Shrinks in this order, saying so in ``message``: drop ``parameters``, then the
    signature's categories, then the whole signature (result.json keeps everything).
    """
    text = to_json(result)
    if len(text.encode()) <= limit:
        return text
    notes: list[str] = []
    current = result
    if current.parameters:
        notes.append("parameters omitted")
        current = current.model_copy(update={"parameters": {}})
        text = to_json(_note(current, "; ".join(notes) + "; full result in result.json"))
        if len(text.encode()) <= limit:
            return text
    if current.signature is not None:
        inputs = [f.model_copy(update={"categories": None}) for f in current.signature.inputs]
        if any(f.categories for f in current.signature.inputs):
            notes.append("signature categories omitted")
            current = current.model_copy(
                update={"signature": current.signature.model_copy(update={"inputs": inputs})}
            )
            text = to_json(_note(current, "; ".join(notes) + "; full result in result.json"))
            if len(text.encode()) <= limit:
                return text
        notes.append("signature omitted")
        current = current.model_copy(update={"signature": None})
        text = to_json(_note(current, "; ".join(notes) + "; full result in result.json"))
        if len(text.encode()) <= limit:
            return text
    # Last resort: the verdict and where the model is.
    notes.append("metrics omitted")
    current = current.model_copy(update={"metrics": {}, "parameters": {}, "signature": None})
    text = to_json(_note(current, "; ".join(notes) + "; full result in result.json"))
    if len(text.encode()) <= limit:
        return text
    minimal = api.TrainingResult(
        succeeded=result.succeeded,
        reason=result.reason,
        message=clip(result.message, 512) + " [result too large; see result.json]",
        artifact=result.artifact,
    )
    return to_json(minimal)


def write_termination_log(text: str, path: Path | None) -> None:
    """Write the termination message; the default path only where it exists and is writable."""
    target = path
    if target is None:
        if not (DEFAULT_TERMINATION_LOG.exists() and os.access(DEFAULT_TERMINATION_LOG, os.W_OK)):
            return
        target = DEFAULT_TERMINATION_LOG
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as e:
        log.warning("Could not write the termination message to %s: %s", target, e)
