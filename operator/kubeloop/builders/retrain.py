"""The closed loop's child: the TrainingJob of one retraining run, and its name. Pure.

A run is named ``<isvc>-retrain-<n>`` (hashed when the service's name is long), so a
restart never creates a second run for the same decision: creating it again is a 409.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from kubeloop.builders.predictor import Owner
from kubeloop_runtime import api

RETRAIN_INFIX = "-retrain-"
MAX_NAME = 63


def retrain_index(isvc: str, name: str) -> int:
    """``n`` of ``<isvc>-retrain-<n>`` (also of a hashed long name); 0 when not ours."""
    found = re.search(r"-retrain-(\d+)$", name)
    if found is None:
        return 0
    return int(found.group(1)) if name.startswith(retrain_prefix(isvc)) else 0


def retrain_prefix(isvc: str) -> str:
    """The name prefix of this service's retraining runs (hashed when the name is long)."""
    prefix = f"{isvc}{RETRAIN_INFIX}"
    # Room for a 4-digit counter and the Job suffix "-train" (the Job is named after it).
    if len(prefix) + 4 + len("-train") <= MAX_NAME:
        return prefix
    digest = hashlib.sha256(isvc.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(RETRAIN_INFIX) - len(digest) - 1 - 4 - len("-train")
    return f"{isvc[:keep].rstrip('-')}-{digest}{RETRAIN_INFIX}"


def retrain_name(isvc: str, index: int) -> str:
    return f"{retrain_prefix(isvc)}{index}"


def _validation(
    validation: api.ValidationSpec | None, serving: str | None
) -> api.ValidationSpec | None:
    if validation is None or validation.reference is not None:
        return validation
    if serving is None:
        return None  # nothing serves yet: nothing to validate against
    return validation.model_copy(update={"reference": serving})


def build_trainingjob(
    owner: Owner,
    retraining: api.RetrainingSpec,
    *,
    name: str,
    model: str,
    trigger: api.TriggerRef,
    champion: str | None,
) -> dict[str, Any]:
    """The TrainingJob of one retraining run: the template, the model, trigger, champion.

    Owned by the InferenceService (listed and garbage-collected with it; not as controller,
    the TrainingJob controller reconciles it). The ModelVersion it registers has no owner.
    """
    tpl = retraining.template
    gate = retraining.champion_gate
    spec = api.TrainingJobSpec(
        model=model,
        dataset=tpl.dataset,
        estimator=tpl.estimator,
        preprocessing=tpl.preprocessing,
        evaluation=tpl.evaluation,
        quality_gate=tpl.quality_gate,
        artifact=tpl.artifact,
        run_policy=tpl.run_policy,
        resources=tpl.resources,
        image=tpl.image,
        storage=tpl.storage,
        trigger=trigger,
        champion=champion if gate.enabled else None,
        champion_gate=gate if gate.enabled and champion else None,
        # Validate against the version serving now unless the template names another.
        validation=_validation(tpl.validation, champion),
    )
    return {
        "apiVersion": api.API_VERSION,
        "kind": "TrainingJob",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": {
                api.LABEL_INFERENCESERVICE: owner.name,
                api.LABEL_MODEL: model,
                api.LABEL_MANAGED_BY: api.MANAGED_BY,
                api.LABEL_PART_OF: "kubeloop",
            },
            "annotations": {
                api.ANNOTATION_TRIGGER: trigger.model_dump_json(by_alias=True, exclude_none=True)
            },
            "ownerReferences": [owner.reference(controller=False)],
        },
        "spec": spec.wire(),
    }
