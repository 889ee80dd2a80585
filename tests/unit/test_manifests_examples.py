"""Every example users apply after the quickstart parses with the API models the operator
and the runtime use, ConfigMap datasets agree with their TrainingJobs, and every file the
READMEs tell users to apply exists."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
import yaml

from kubeloop_runtime import api
from tests.manifest_tools import ROOT

EXAMPLES = ROOT / "examples"
SPECS: dict[str, type[api.Model]] = {
    "TrainingJob": api.TrainingJobSpec,
    "ModelVersion": api.ModelVersionSpec,
    "InferenceService": api.InferenceServiceSpec,
}


def _docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in sorted(EXAMPLES.rglob("*.yaml")):
        for i, d in enumerate(yaml.safe_load_all(f.read_text())):
            if d:
                out.append((f"{f.relative_to(ROOT)}#{i}", d))
    return out


DOCS = _docs()


def test_every_example_folder_has_manifests_and_a_readme() -> None:
    for name in ("iris", "regression", "csv-configmap", "canary", "closed-loop"):
        d = EXAMPLES / name
        assert (d / "README.md").is_file(), name
        assert list(d.glob("*.yaml")), name


@pytest.mark.parametrize(("where", "doc"), DOCS, ids=[w for w, _ in DOCS])
def test_example_parses(where: str, doc: dict[str, Any]) -> None:
    kind = doc["kind"]
    name = doc["metadata"]["name"]
    assert re.fullmatch(api.DNS1123_LABEL, name) and len(name) <= 63, where
    assert "namespace" not in doc["metadata"], f"{where}: examples go to the current namespace"
    if kind in SPECS:
        assert doc["apiVersion"] == api.API_VERSION, where
        SPECS[kind].model_validate(doc["spec"])  # raises with the field on a mistake
    else:
        assert kind == "ConfigMap", f"{where}: unexpected kind {kind}"


def _objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for _, d in DOCS}


def test_configmap_datasets_match_their_trainingjobs() -> None:
    objs = _objects()
    checked = 0
    for (kind, _), doc in objs.items():
        if kind != "TrainingJob":
            continue
        spec = api.TrainingJobSpec.model_validate(doc["spec"])
        ref = spec.dataset.config_map
        if ref is None:
            continue
        cm = objs[("ConfigMap", ref.name)]
        rows = list(csv.DictReader(io.StringIO(cm["data"][ref.key])))
        assert len(rows) >= 30, "too few rows to split and evaluate"
        columns = set(rows[0])
        assert spec.dataset.target in columns
        assert set(spec.dataset.features or []) <= columns
        assert set(spec.preprocessing.categorical) <= columns
        classes = {r[spec.dataset.target] for r in rows}
        assert "" not in classes, "missing target values"
        assert len(classes) >= 2
        checked += 1
    assert checked >= 1


def test_examples_cover_the_features() -> None:
    specs = {w: SPECS[d["kind"]].model_validate(d["spec"]) for w, d in DOCS if d["kind"] in SPECS}
    isvcs = [s for s in specs.values() if isinstance(s, api.InferenceServiceSpec)]
    jobs = [s for s in specs.values() if isinstance(s, api.TrainingJobSpec)]
    assert any(s.canary and s.canary.analysis for s in isvcs), "a canary with analysis"
    assert any(s.retraining for s in isvcs), "a closed loop"
    assert any(s.model.alias == "production" for s in isvcs), "serving by alias"
    assert any(j.estimator.task is api.Task.REGRESSION for j in jobs), "a regression"
    assert any(j.preprocessing.categorical for j in jobs), "categorical features"


_APPLY = re.compile(r"kubectl (?:apply|delete) -f ([^\s`]+)")


def test_readme_commands_name_existing_files() -> None:
    readmes = [*EXAMPLES.rglob("README.md")]
    named = 0
    for readme in readmes:
        for target in _APPLY.findall(readme.read_text()):
            assert (ROOT / target).exists(), f"{readme.relative_to(ROOT)}: {target} missing"
            named += 1
    assert named >= 8


def test_readme_model_version_names_follow_the_registry_convention() -> None:
    """READMEs wait for <model>-v<version>: check each name against a TrainingJob model."""
    models = {d["spec"]["model"] for _, d in DOCS if d["kind"] == "TrainingJob"}
    for readme in EXAMPLES.rglob("README.md"):
        for model, _ in re.findall(r"\b([a-z][a-z0-9-]*)-v(\d+)\b(?!\.)", readme.read_text()):
            assert model in models, f"{readme.relative_to(ROOT)}: no TrainingJob trains {model}"
