"""Every shipped TrainingJob spec trains and passes its own quality gate.

A sample that fails its gate is the first thing a new user runs into: each TrainingJob in
``manifests/samples`` and ``examples`` (and each InferenceService's retraining template) is
trained with the real trainer on its dataset: builtin, or a ConfigMap shipped beside it
(mounted where the operator mounts ConfigMaps), or a local file. The ModelVersion sample
only names metrics the trainer emits for the spec it says it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from kubeloop_runtime import api, search
from kubeloop_runtime.train.runner import Output, train
from tests.manifest_tools import ROOT


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    files = sorted((ROOT / "manifests/samples").glob("*.yaml"))
    files += sorted((ROOT / "examples").rglob("*.yaml"))
    out = []
    for f in files:
        for d in yaml.safe_load_all(f.read_text()):
            if isinstance(d, dict) and "kind" in d and "metadata" in d:
                out.append((f, d))
    return out


def _configmaps(folder: Path) -> dict[str, dict[str, str]]:
    """ConfigMaps shipped in the same folder, by name."""
    out: dict[str, dict[str, str]] = {}
    for f, d in _documents():
        if f.parent == folder and d["kind"] == "ConfigMap":
            out[d["metadata"]["name"]] = d["data"]
    return out


def _specs() -> list[tuple[str, Path, api.TrainingJobSpec]]:
    specs = []
    for f, d in _documents():
        where = f"{f.relative_to(ROOT)}:{d['metadata']['name']}"
        if d["kind"] == "TrainingJob":
            specs.append((where, f, api.TrainingJobSpec.model_validate(d["spec"])))
        elif d["kind"] == "InferenceService" and d["spec"].get("retraining"):
            isvc = api.InferenceServiceSpec.model_validate(d["spec"])
            assert isvc.retraining is not None
            model = isvc.model.model or "retrained"
            body = {"model": model, **isvc.retraining.template.model_dump(exclude_none=True)}
            specs.append((f"{where} (retraining template)", f, api.TrainingJobSpec(**body)))
    return specs


SPECS = _specs()


def test_every_shipped_training_spec_is_covered() -> None:
    kinds = {w.split(":")[0] for w, _, _ in SPECS}
    assert "manifests/samples/trainingjob-iris.yaml" in kinds
    assert "examples/iris/trainingjob.yaml" in kinds
    assert len(SPECS) >= 8


@pytest.mark.parametrize(("where", "source", "spec"), SPECS, ids=[w for w, _, _ in SPECS])
def test_shipped_spec_trains_and_passes_its_gate(
    where: str, source: Path, spec: api.TrainingJobSpec, tmp_path: Path
) -> None:
    data_root = tmp_path / "data"
    ds = spec.dataset
    if ds.config_map is not None:
        maps = _configmaps(source.parent)
        assert ds.config_map.name in maps, f"{where}: ConfigMap {ds.config_map.name} not shipped"
        target = data_root / "configmap" / ds.config_map.key
        target.parent.mkdir(parents=True)
        target.write_text(maps[ds.config_map.name][ds.config_map.key])
    elif ds.uri is not None:
        # An object-store example ships its files in data/: train on all of them (what
        # the prefix holds once every file has landed), written locally.
        files = sorted((source.parent / "data").glob("*.csv"))
        assert files, f"{where}: {ds.uri} has no data shipped beside it"
        local = tmp_path / "all.csv"
        pd.concat([pd.read_csv(f) for f in files]).to_csv(local, index=False)
        spec = spec.model_copy(
            update={
                "dataset": ds.model_copy(update={"uri": None, "path": str(local)}),
                "artifact": spec.artifact.model_copy(update={"uri": None}),
                "storage": None,
            }
        )
    else:
        assert ds.builtin is not None or ds.path is not None, f"{where}: needs a cluster"
    if spec.search is not None:  # a search: its first trial (test_search.py runs them all)
        spec = search.trial_spec(spec, 0)
    result = train(spec, Output.open(str(tmp_path / "out")), data_root)
    assert result.gate is not None and result.gate.passed, f"{where}: {result.message}"
    assert result.succeeded, f"{where}: {result.message}"


def test_the_modelversion_sample_names_only_metrics_its_trainingjob_emits(
    tmp_path: Path,
) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _documents()}
    mv = docs[("ModelVersion", "iris-v1")]
    job = docs[("TrainingJob", mv["spec"]["lineage"]["trainingJob"])]
    spec = api.TrainingJobSpec.model_validate(job["spec"])
    result = train(spec, Output.open(str(tmp_path / "out")), tmp_path)
    unknown = set(mv["spec"]["metrics"]) - set(result.metrics)
    assert not unknown, f"the sample shows metrics the trainer never emits: {sorted(unknown)}"
    params = {k: v for k, v in mv["spec"]["parameters"].items() if k in result.parameters}
    assert params == {k: result.parameters[k] for k in params}


def test_a_model_without_an_onnx_graph_says_so_in_its_result(tmp_path: Path) -> None:
    """The churn sample imputes string categories, which skl2onnx cannot convert: its result
    says it will be served by scikit-learn (never a silent slower path)."""
    where, source, spec = next(s for s in SPECS if "churn" in s[0])
    cm = spec.dataset.config_map
    assert cm is not None
    target = tmp_path / "data" / "configmap" / cm.key
    target.parent.mkdir(parents=True)
    target.write_text(_configmaps(source.parent)[cm.name][cm.key])
    result = train(spec, Output.open(str(tmp_path / "out")), tmp_path / "data")
    assert result.succeeded and result.artifact is not None, where
    assert result.artifact.onnx_uri is None
    assert "no ONNX graph (" in result.message and "served by scikit-learn" in result.message
