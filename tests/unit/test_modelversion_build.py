"""Result -> ModelVersion spec and object; ModelVersion conditions (verification, Ready)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import pytest

from kubeloop.builders.modelversion import (
    IncompleteResultError,
    build_model_version,
    model_version_spec,
)
from kubeloop.reconcile import modelversion as rec
from kubeloop.registry import ANNOTATION_TRAININGJOB_UID
from kubeloop_runtime import api
from tests.unit.test_reconcile_trainingjob import SHA, result_doc

NOW = "2024-05-01T12:00:00Z"


def tj_spec(**overrides: Any) -> api.TrainingJobSpec:
    doc: dict[str, Any] = {
        "model": "iris",
        "dataset": {"builtin": "iris"},
        "estimator": {"type": "LogisticRegression"},
    }
    doc.update(overrides)
    return api.TrainingJobSpec.model_validate(doc)


def result(**overrides: Any) -> api.TrainingResult:
    return api.TrainingResult.model_validate(result_doc(**overrides))


def test_spec_from_result_carries_everything() -> None:
    trigger = {"inferenceService": "iris-svc", "signal": "drift", "value": "0.3"}
    s = model_version_spec(
        trainingjob="run-1",
        spec=tj_spec(trigger=trigger),
        result=result(),
        version=4,
        image="example/runtime:1",
    )
    assert (s.model, s.version, s.task) == ("iris", 4, api.Task.CLASSIFICATION)
    assert s.artifact.sha256 == SHA
    assert s.framework.sklearn == "1.5.2"
    assert s.signature.inputs[0].name == "sepal_length"
    assert s.metrics == {"accuracy": 0.97, "f1": 0.96}
    assert s.parameters == {"C": "1.0"}
    assert s.dataset.rows == 150
    assert s.gate.passed is True
    assert s.lineage.training_job == "run-1"
    assert s.lineage.image == "example/runtime:1"
    assert s.lineage.trigger is not None and s.lineage.trigger.signal == "drift"
    assert s.aliases == []


def test_gate_failure_is_registered_with_passed_false() -> None:
    r = result(
        succeeded=False,
        reason="QualityGateFailed",
        gate={"passed": False, "message": "accuracy 0.66 < 0.999"},
    )
    s = model_version_spec(trainingjob="r", spec=tj_spec(), result=r, version=1, image="i")
    assert s.gate.passed is False
    assert "0.999" in s.gate.message


def test_non_finite_metrics_and_long_parameters_are_bounded() -> None:
    r = result(
        metrics={"accuracy": 0.9, "log_loss": math.inf, "f1": math.nan},
        parameters={f"p{i:03d}": "x" * 400 for i in range(80)},
    )
    s = model_version_spec(trainingjob="r", spec=tj_spec(), result=r, version=1, image="i")
    assert s.metrics == {"accuracy": 0.9}
    assert len(s.parameters) == 64
    assert all(len(v) == 256 for v in s.parameters.values())


@pytest.mark.parametrize("missing", ["artifact", "framework", "signature", "dataset"])
def test_incomplete_result_names_the_field(missing: str) -> None:
    doc = result_doc()
    del doc[missing]
    r = api.TrainingResult.model_validate(doc)
    with pytest.raises(IncompleteResultError, match=missing):
        model_version_spec(trainingjob="r", spec=tj_spec(), result=r, version=1, image="i")


def test_object_has_labels_no_owner_and_the_uid_annotation() -> None:
    s = model_version_spec(
        trainingjob="run-1", spec=tj_spec(), result=result(), version=2, image="i"
    )
    obj = build_model_version("ml", s, trainingjob_uid="uid-9")
    meta = obj["metadata"]
    assert (obj["apiVersion"], obj["kind"]) == ("kubeloop.io/v1alpha1", "ModelVersion")
    assert meta["name"] == "iris-v2"
    assert meta["namespace"] == "ml"
    assert meta["labels"][api.LABEL_MODEL] == "iris"
    assert meta["labels"][api.LABEL_VERSION] == "2"
    assert meta["labels"][api.LABEL_TRAININGJOB] == "run-1"
    assert "ownerReferences" not in meta  # the registry outlives the run
    assert meta["annotations"] == {ANNOTATION_TRAININGJOB_UID: "uid-9"}
    assert api.ModelVersionSpec.model_validate(obj["spec"]) == s


# ------------------------------------------------------------------------- conditions


def checks_for(tmp_path: Path, content: bytes | None, expected: str) -> list[rec.FileCheck]:
    """What the handler computes, with real files and real sha256s."""
    f = tmp_path / "model.skops"
    if content is not None:
        f.write_bytes(content)
    found = hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else None
    return [rec.FileCheck("spec.artifact.uri", "pvc://a/model.skops", expected, found)]


def test_artifact_verified(tmp_path: Path) -> None:
    data = b"model bytes"
    c = rec.artifact_condition(checks_for(tmp_path, data, hashlib.sha256(data).hexdigest()))
    assert (c.status, c.reason) == ("True", "ArtifactVerified")


def test_artifact_missing(tmp_path: Path) -> None:
    c = rec.artifact_condition(checks_for(tmp_path, None, SHA))
    assert (c.status, c.reason) == ("False", "ArtifactMissing")
    assert "spec.artifact.uri" in c.message


def test_checksum_mismatch(tmp_path: Path) -> None:
    c = rec.artifact_condition(checks_for(tmp_path, b"tampered", SHA))
    assert (c.status, c.reason) == ("False", "ChecksumMismatch")
    assert SHA in c.message


def test_not_verifiable_is_unknown_but_ready() -> None:
    s = model_version_spec(trainingjob="r", spec=tj_spec(), result=result(), version=1, image="i")
    art = rec.artifact_condition(None)
    assert (art.status, art.reason) == ("Unknown", "ArtifactNotVerifiable")
    ready = rec.ready_condition(s, art)
    assert (ready.status, ready.reason) == ("True", "ArtifactNotVerifiable")


def test_ready_false_for_gate_failure_and_bad_artifact(tmp_path: Path) -> None:
    gated = model_version_spec(
        trainingjob="r",
        spec=tj_spec(),
        result=result(gate={"passed": False, "message": "too weak"}),
        version=1,
        image="i",
    )
    ok_art = rec.artifact_condition([])
    r = rec.ready_condition(gated, ok_art)
    assert (r.status, r.reason) == ("False", "QualityGateFailed")
    good = model_version_spec(
        trainingjob="r", spec=tj_spec(), result=result(), version=1, image="i"
    )
    bad = rec.artifact_condition(checks_for(tmp_path, b"x", SHA))
    r = rec.ready_condition(good, bad)
    assert (r.status, r.reason) == ("False", "ChecksumMismatch")
    r = rec.ready_condition(None, bad, "spec.version: must be >= 1")
    assert (r.status, r.reason) == ("False", "InvalidSpec")


def test_files_to_check_includes_companions() -> None:
    art = api.ArtifactRef.model_validate(
        {
            "uri": "pvc://a/m.skops",
            "sha256": SHA,
            "format": "skops",
            "sizeBytes": 1,
            "onnxUri": "pvc://a/m.onnx",
            "onnxSha256": "b" * 64,
            "referenceStatsUri": "pvc://a/ref.json",
        }
    )
    fields = [f for f, _, _ in rec.files_to_check(art)]
    # The reference stats carry no checksum here, so they are not checked.
    assert fields == ["spec.artifact.uri", "spec.artifact.onnxUri"]


def test_status_and_phase() -> None:
    s = model_version_spec(trainingjob="r", spec=tj_spec(), result=result(), version=1, image="i")
    art = rec.artifact_condition(None)
    st = rec.desired_modelversion_status(
        old=None, generation=2, conditions=[art, rec.ready_condition(s, art)], now=NOW
    )
    assert st["phase"] == "Ready"
    assert st["observedGeneration"] == 2
    types = {c["type"]: c["status"] for c in st["conditions"]}
    assert types == {"ArtifactVerified": "Unknown", "Ready": "True"}
    assert rec.is_ready({"status": st})


def test_aliases_condition() -> None:
    assert rec.aliases_condition(["production"], ["production"], True).status == "True"
    waiting = rec.aliases_condition(["production"], [], False)
    assert (waiting.status, waiting.reason) == ("False", "VersionNotReady")
    assert rec.aliases_condition(["production"], [], True).status == "Unknown"
