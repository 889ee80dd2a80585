"""Every sample in manifests/samples parses with the pydantic models and is listed."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from kubeloop_runtime.api import (
    API_VERSION,
    ESTIMATORS,
    InferenceServiceSpec,
    ModelVersionSpec,
    Task,
    TrainingJobSpec,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"
MODELS: dict[str, type[BaseModel]] = {
    "TrainingJob": TrainingJobSpec,
    "ModelVersion": ModelVersionSpec,
    "InferenceService": InferenceServiceSpec,
}


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def kubeloop_objects() -> list[tuple[str, dict[str, Any]]]:
    return [(f, d) for f, d in documents() if d["apiVersion"] == API_VERSION]


@pytest.mark.parametrize(
    ("file", "obj"), kubeloop_objects(), ids=[f for f, _ in kubeloop_objects()]
)
def test_sample_parses(file: str, obj: dict[str, Any]) -> None:
    model = MODELS[obj["kind"]]
    spec = model.model_validate(obj["spec"])
    # Nothing in the sample is lost or renamed on the way through the model.
    assert _subset(obj["spec"], spec.model_dump(mode="json", by_alias=True)), file


def _subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and _subset(v, big[k]) for k, v in small.items()
        )
    if isinstance(small, list):
        return isinstance(big, list) and len(small) == len(big) and all(map(_subset, small, big))
    return bool(small == big)


def test_one_kubeloop_object_per_file_and_every_kind() -> None:
    per_file: dict[str, int] = {}
    for file, _ in kubeloop_objects():
        per_file[file] = per_file.get(file, 0) + 1
    assert all(n == 1 for n in per_file.values()), per_file
    kinds = [d["kind"] for _, d in kubeloop_objects()]
    assert set(kinds) == set(MODELS)


def test_kustomization_lists_every_sample() -> None:
    kustomization = yaml.safe_load((SAMPLES / "kustomization.yaml").read_text())
    files = {p.name for p in SAMPLES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_samples_cover_the_brief() -> None:
    specs = {d["metadata"]["name"]: (d["kind"], d["spec"]) for _, d in kubeloop_objects()}
    tasks = {ESTIMATORS[s["estimator"]["type"]][1] for k, s in specs.values() if k == "TrainingJob"}
    assert tasks == {Task.CLASSIFICATION, Task.REGRESSION}
    isvcs = [
        InferenceServiceSpec.model_validate(s) for k, s in specs.values() if k == "InferenceService"
    ]
    assert any(i.model.alias == "production" and i.model.model == "iris" for i in isvcs)
    assert any(i.canary is not None for i in isvcs)
    loops = [i for i in isvcs if i.retraining is not None]
    assert loops and loops[0].retraining is not None and loops[0].retraining.triggers.drift


def test_csv_sample_has_categoricals_and_missing_values() -> None:
    (config_map,) = [d for _, d in documents() if d["kind"] == "ConfigMap"]
    (job,) = [
        TrainingJobSpec.model_validate(d["spec"])
        for _, d in kubeloop_objects()
        if d["kind"] == "TrainingJob" and "configMap" in d["spec"]["dataset"]
    ]
    source = job.dataset.config_map
    assert source is not None and source.name == config_map["metadata"]["name"]
    rows = list(csv.DictReader(io.StringIO(config_map["data"][source.key])))
    assert 30 <= len(rows) <= 60
    columns = set(rows[0])
    assert job.dataset.target in columns
    assert set(job.dataset.features or ()) <= columns
    assert job.preprocessing.categorical
    for column in job.preprocessing.categorical:
        values = {r[column] for r in rows} - {""}
        assert values and not all(_is_number(v) for v in values), column
    assert any("" in r.values() for r in rows), "no missing values"
    assert {r[job.dataset.target or ""] for r in rows} == {"yes", "no"}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
