"""kubeloop-train's failure paths through the real CLI (a subprocess), and the result document."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kubeloop_runtime import api
from kubeloop_runtime.train import cli, evaluate
from kubeloop_runtime.train.errors import InvalidSpecError
from kubeloop_runtime.train.result import termination_message
from kubeloop_runtime.train.spec import parse_spec


def make_csv(path: Path, n: int = 200) -> Path:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "color": rng.choice(["red", "blue"], size=n),
            "label": rng.integers(0, 2, size=n),
        }
    )
    frame.to_csv(path, index=False)
    return path


def run_cli(tmp_path: Path, spec_text: str) -> tuple[int, dict[str, Any], str, dict[str, Any]]:
    """Run the CLI as a subprocess; returns (exit code, stdout doc, stderr, termination log)."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_text)
    term = tmp_path / "termination-log"
    proc = subprocess.run(
        [
            sys.executable, "-m", "kubeloop_runtime.train.cli",
            "--spec", str(spec_file),
            "--output", str(tmp_path / "out"),
            "--termination-log", str(term),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(lines[0]), proc.stderr, json.loads(term.read_text())


def csv_spec(path: Path, **dataset: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "dataset": {"path": str(path), "target": "label", **dataset},
        "estimator": {"type": "LogisticRegression"},
        "preprocessing": {"categorical": ["color"]},
        "artifact": {"onnx": False},
    }


def assert_failed(
    outcome: tuple[int, dict[str, Any], str, dict[str, Any]],
    code: int,
    reason: str,
    *needles: str,
) -> None:
    rc, doc, stderr, term = outcome
    assert rc == code, (doc, stderr)
    assert doc["succeeded"] is False
    assert doc["reason"] == reason
    for needle in needles:
        assert needle in doc["message"], doc["message"]
    assert term == doc
    assert reason in stderr  # the log names it too


def test_missing_target_column(tmp_path: Path) -> None:
    spec = csv_spec(make_csv(tmp_path / "d.csv"))
    spec["dataset"]["target"] = "outcome"
    out = run_cli(tmp_path, yaml.safe_dump(spec))
    assert_failed(out, api.EXIT_INVALID, "DataError", "'outcome'", "target")


def test_missing_feature_column(tmp_path: Path) -> None:
    spec = csv_spec(make_csv(tmp_path / "d.csv"), features=["x1", "height"])
    out = run_cli(tmp_path, yaml.safe_dump(spec))
    assert_failed(out, api.EXIT_INVALID, "DataError", "'height'")


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    out = run_cli(tmp_path, yaml.safe_dump(csv_spec(empty)))
    assert_failed(out, api.EXIT_INVALID, "DataError", "empty", "empty.csv")


def test_header_only_file(tmp_path: Path) -> None:
    header = tmp_path / "header.csv"
    header.write_text("x1,x2,color,label\n")
    out = run_cli(tmp_path, yaml.safe_dump(csv_spec(header)))
    assert_failed(out, api.EXIT_INVALID, "DataError", "no rows")


def test_non_numeric_column_without_encoding(tmp_path: Path) -> None:
    spec = csv_spec(make_csv(tmp_path / "d.csv"))
    spec["preprocessing"] = {}
    out = run_cli(tmp_path, yaml.safe_dump(spec))
    assert_failed(out, api.EXIT_INVALID, "DataError", "'color'", "spec.preprocessing.categorical")


def test_unknown_hyperparameter_lists_valid_ones(tmp_path: Path) -> None:
    spec = csv_spec(make_csv(tmp_path / "d.csv"))
    spec["estimator"] = {"type": "RandomForestClassifier", "hyperparameters": {"n_estimatorz": 3}}
    out = run_cli(tmp_path, yaml.safe_dump(spec))
    assert_failed(
        out, api.EXIT_INVALID, "InvalidSpec", "'n_estimatorz'", "n_estimators", "max_depth"
    )


def test_unknown_estimator(tmp_path: Path) -> None:
    spec = csv_spec(make_csv(tmp_path / "d.csv"))
    spec["estimator"] = {"type": "CatBoostClassifier"}
    out = run_cli(tmp_path, yaml.safe_dump(spec))
    assert_failed(
        out, api.EXIT_INVALID, "InvalidSpec", "spec.estimator.type", "RandomForestClassifier"
    )


def test_malformed_yaml(tmp_path: Path) -> None:
    out = run_cli(tmp_path, "model: m\ndataset: {builtin: iris\nestimator: [\n")
    assert_failed(out, api.EXIT_INVALID, "InvalidSpec", "not valid YAML")


def test_two_dataset_sources(tmp_path: Path) -> None:
    spec = csv_spec(make_csv(tmp_path / "d.csv"))
    spec["dataset"]["builtin"] = "iris"
    out = run_cli(tmp_path, yaml.safe_dump(spec))
    assert_failed(
        out, api.EXIT_INVALID, "InvalidSpec", "spec.dataset", "exactly one", "builtin, path"
    )


def test_quality_gate_failure_exits_3(tmp_path: Path) -> None:
    spec = csv_spec(make_csv(tmp_path / "d.csv"))  # random labels: accuracy near 0.5
    spec["qualityGate"] = {"thresholds": [{"metric": "accuracy", "min": 0.95}]}
    out = run_cli(tmp_path, yaml.safe_dump(spec))
    assert_failed(out, api.EXIT_GATE_FAILED, "QualityGateFailed", "accuracy", "min 0.95")
    assert "accuracy" in out[1]["metrics"]


@pytest.mark.parametrize("value", [-3, "ten"])
def test_bad_hyperparameter_values_are_refused_before_any_data_is_read(
    tmp_path: Path, value: object
) -> None:
    """docs/training.md: names and values are checked before the dataset is read."""
    spec = csv_spec(tmp_path / "does-not-exist.csv")
    spec["estimator"] = {
        "type": "RandomForestClassifier",
        "hyperparameters": {"n_estimators": value},
    }
    out = run_cli(tmp_path, yaml.safe_dump(spec))
    assert_failed(
        out, api.EXIT_INVALID, "InvalidSpec", "spec.estimator.hyperparameters", "n_estimators"
    )
    assert "does-not-exist.csv" not in out[2]  # the missing file was never opened


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"estimator": {"type": "CatBoostClassifier"}}, "InvalidSpec"),  # schema error
        ({"estimator": {"type": "SVC", "hyperparameters": {"C": "big"}}}, "InvalidSpec"),
        ({"dataset": {"path": "/nonexistent.csv", "target": "label"}}, "DataError"),
        ({"qualityGate": {"thresholds": [{"metric": "accuracy", "min": 0.99}]}},
         "QualityGateFailed"),
        ({}, "Trained"),
    ],
)  # fmt: skip
def test_every_outcome_writes_result_json_and_only_a_servable_one_a_modelversion(
    tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    """One rule: with a usable --output, result.json is the stdout document, whatever
    happened; modelversion.yaml only for a model that passed its gate."""
    spec = {**csv_spec(make_csv(tmp_path / "d.csv")), **change}
    rc, doc, _, _ = run_cli(tmp_path, yaml.safe_dump(spec))
    assert doc["reason"] == reason
    out = tmp_path / "out"
    assert json.loads((out / "result.json").read_text()) == doc
    assert (out / "modelversion.yaml").exists() == (reason == "Trained")
    if reason == "QualityGateFailed":  # docs/registry.md: the refused model is still kept
        assert rc == api.EXIT_GATE_FAILED
        assert (out / "model.skops").is_file() and doc["artifact"]["sha256"]
        assert "onnxUri" not in doc["artifact"]


# ----------------------------------------------------------- in-process spec checks


def test_bare_spec_and_manifest_parse_to_the_same_spec() -> None:
    bare = {"model": "m", "dataset": {"builtin": "iris"}, "estimator": {"type": "SVC"}}
    manifest = {"apiVersion": api.API_VERSION, "kind": "TrainingJob", "spec": bare}
    assert parse_spec(json.dumps(bare)) == parse_spec(yaml.safe_dump(manifest))


def test_manifest_of_another_kind_is_refused() -> None:
    doc = {"kind": "InferenceService", "spec": {}}
    with pytest.raises(InvalidSpecError, match="TrainingJob"):
        parse_spec(yaml.safe_dump(doc))


def test_invalid_hyperparameter_value_is_an_invalid_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {
        "model": "m",
        "dataset": {"builtin": "iris"},
        "estimator": {"type": "RandomForestClassifier", "hyperparameters": {"n_estimators": -3}},
        "artifact": {"onnx": False},
    }
    (tmp_path / "s.json").write_text(json.dumps(spec))
    code = cli.main(["--spec", str(tmp_path / "s.json"), "--output", str(tmp_path / "o")])
    doc = json.loads(capsys.readouterr().out)
    assert code == api.EXIT_INVALID
    assert doc["reason"] == "InvalidSpec" and "n_estimators" in doc["message"]


def test_gate_names_metrics_that_were_not_computed() -> None:
    gate = api.QualityGateSpec.model_validate({"thresholds": [{"metric": "roc_auc", "min": 0.5}]})
    result = evaluate.check_gate({"accuracy": 1.0}, gate)
    assert not result.passed and "roc_auc was not computed" in result.message


# ---------------------------------------------------------------- termination message


def big_result(
    categories: int, parameters: int, category_len: int = 40, inputs: int = 4
) -> api.TrainingResult:
    features = [
        api.FeatureSpec(
            name=f"feature_{i}",
            dtype="string",
            categories=[f"{'c' * category_len}{j}" for j in range(categories)],
        )
        for i in range(inputs)
    ]
    return api.TrainingResult(
        succeeded=True,
        reason="Trained",
        message="trained",
        task=api.Task.CLASSIFICATION,
        artifact=api.ArtifactRef(
            uri="pvc://kubeloop-artifacts/ml/m-1/model.skops",
            sha256="a" * 64,
            format="skops",
            size_bytes=1,
        ),
        signature=api.Signature(
            inputs=features, output=api.OutputSpec(dtype="int64", classes=[0, 1])
        ),
        metrics={"accuracy": 0.9},
        parameters={f"param_{i}": "v" * 200 for i in range(parameters)},
    )


def test_small_result_is_unchanged() -> None:
    result = big_result(categories=2, parameters=3)
    text = termination_message(result)
    assert api.TrainingResult.model_validate_json(text) == result


def test_parameters_are_dropped_first_and_the_message_says_so() -> None:
    result = big_result(categories=2, parameters=40)
    assert len(result.model_dump_json(by_alias=True)) > api.TERMINATION_MESSAGE_LIMIT
    text = termination_message(result)
    assert len(text.encode()) <= api.TERMINATION_MESSAGE_LIMIT
    parsed = api.TrainingResult.model_validate_json(text)
    assert parsed.parameters == {}
    assert parsed.signature == result.signature  # categories kept
    assert "parameters omitted" in parsed.message


def test_categories_are_dropped_next() -> None:
    result = big_result(categories=60, parameters=40)
    text = termination_message(result)
    assert len(text.encode()) <= api.TERMINATION_MESSAGE_LIMIT
    parsed = api.TrainingResult.model_validate_json(text)
    assert parsed.parameters == {}
    assert parsed.signature is not None
    assert all(f.categories is None for f in parsed.signature.inputs)
    assert [f.name for f in parsed.signature.inputs] == [f"feature_{i}" for i in range(4)]
    assert "parameters omitted" in parsed.message
    assert "signature categories omitted" in parsed.message
    assert parsed.artifact == result.artifact and parsed.metrics == result.metrics


def test_even_a_huge_result_fits_and_stays_valid_json() -> None:
    result = big_result(categories=256, parameters=64, category_len=120, inputs=2).model_copy(
        update={"message": "m" * 1024}
    )
    text = termination_message(result)
    assert len(text.encode()) <= api.TERMINATION_MESSAGE_LIMIT
    parsed = api.TrainingResult.model_validate_json(text)
    assert parsed.succeeded and parsed.artifact == result.artifact
    assert len(parsed.message) <= 1024


def test_signature_keeps_within_the_api_category_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 3000  # every category appears about ten times, so all reach the training split
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "small": rng.choice(["a", "b", "c"], size=n),
            "w200": [f"a{i % 200}" for i in range(n)],
            "w250": [f"b{i % 250}" for i in range(n)],
            "w100": [f"c{i % 100}" for i in range(n)],
            "w300": [f"d{i % 300}" for i in range(n)],
            "x": rng.normal(size=n),
            "label": rng.integers(0, 2, size=n),
        }
    )
    frame.to_csv(tmp_path / "d.csv", index=False)
    spec = {
        "model": "m",
        "dataset": {"path": str(tmp_path / "d.csv"), "target": "label"},
        "estimator": {"type": "DecisionTreeClassifier"},
        "preprocessing": {"categorical": ["small", "w200", "w250", "w100", "w300"]},
        "artifact": {"onnx": False},
    }
    (tmp_path / "s.json").write_text(json.dumps(spec))
    code = cli.main(["--spec", str(tmp_path / "s.json"), "--output", str(tmp_path / "o")])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc["message"]
    cats = {f["name"]: f.get("categories") for f in doc["signature"]["inputs"]}
    assert cats["small"] == ["a", "b", "c"]
    # Smallest first within 512 in total: 3 + 100 + 200 fit, 250 more do not;
    # 300 is over the 256 allowed for one input.
    assert len(cats["w100"] or []) == 100
    assert len(cats["w200"] or []) == 200
    assert cats["w250"] is None and cats["w300"] is None
