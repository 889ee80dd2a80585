"""kubeloop-train end to end on real data: scikit-learn's bundled datasets and CSVs made here."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import yaml

from kubeloop_runtime import api, artifacts
from kubeloop_runtime.drift import ReferenceStats
from kubeloop_runtime.train import cli, runner
from kubeloop_runtime.train.evaluate import evaluate_on
from kubeloop_runtime.train.onnx_export import onnx_feeds


def run_main(
    spec: dict[str, Any], out: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    """Run the CLI in-process with a spec file; returns (exit code, stdout document)."""
    spec_file = out.parent / f"{out.name}-spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    code = cli.main(["--spec", str(spec_file), "--output", str(out), *extra])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    return code, json.loads(lines[0])


def spec_for(dataset: dict[str, Any], estimator: str, **fields: Any) -> dict[str, Any]:
    hp = fields.pop("hyperparameters", {})
    return {
        "model": "m",
        "dataset": dataset,
        "estimator": {"type": estimator, "hyperparameters": hp},
        "artifact": {"onnx": False},
        **fields,
    }


def load_result_model(result: dict[str, Any]) -> Any:
    art = result["artifact"]
    return artifacts.load_model(
        artifacts.resolve(art["uri"]), sha256=art["sha256"], fmt=art["format"]
    )


def make_mixed_csv(path: Path, n: int = 800, seed: int = 0) -> Path:
    """Numeric and categorical columns with missing values; the label depends on both."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.uniform(0, 10, size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    size = rng.choice(["S", "M", "L"], size=n)
    score = 1.5 * x1 + (color == "red") * 2.0 - (size == "S") * 1.0 + 0.1 * x2
    label = np.where(score > np.median(score), "yes", "no")
    frame = pd.DataFrame({"x1": x1, "x2": x2, "color": color, "size": size, "label": label})
    frame["x1"] = frame["x1"].mask(rng.random(n) < 0.05)
    frame["color"] = frame["color"].mask(rng.random(n) < 0.05)
    frame.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------- builtin datasets


def test_iris_random_forest_meets_accuracy_and_records_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "iris"
    spec = spec_for(
        {"builtin": "iris"},
        "RandomForestClassifier",
        hyperparameters={"n_estimators": 10},
        qualityGate={"thresholds": [{"metric": "accuracy", "min": 0.9}]},
    )
    code, result = run_main(spec, out, capsys)
    assert code == api.EXIT_OK, result["message"]
    parsed = api.TrainingResult.model_validate(result)
    assert parsed.succeeded and parsed.reason == "Trained"
    assert parsed.metrics["accuracy"] >= 0.9
    assert {"f1", "precision", "recall", "roc_auc"} <= set(parsed.metrics)
    assert parsed.gate is not None and parsed.gate.passed
    # Artifact hash and size are those of the file on disk.
    assert parsed.artifact is not None
    model_path = artifacts.resolve(parsed.artifact.uri)
    assert model_path == out / "model.skops"
    assert parsed.artifact.sha256 == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert parsed.artifact.size_bytes == model_path.stat().st_size
    assert parsed.artifact.onnx_uri is None
    # Reference statistics are the drift module's format, over the 4 training features.
    ref_path = artifacts.resolve(parsed.artifact.reference_stats_uri or "")
    assert artifacts.sha256_file(ref_path) == parsed.artifact.reference_stats_sha256
    ref = ReferenceStats.from_json(ref_path.read_bytes())
    assert ref.rows == 120 and len(ref.features) == 4
    # Signature, dataset, framework, parameters.
    assert parsed.signature is not None
    assert [f.dtype for f in parsed.signature.inputs] == ["float64"] * 4
    assert parsed.signature.output.classes == [0, 1, 2]
    assert parsed.dataset is not None
    assert (parsed.dataset.rows, parsed.dataset.columns) == (150, 5)
    assert parsed.dataset.source == "builtin:iris"
    assert parsed.framework is not None
    artifacts.check_versions(parsed.framework)
    assert parsed.parameters["n_estimators"] == "10"
    assert parsed.parameters["random_state"] == "42"
    # result.json equals stdout; the model loads and scores the held-out set identically.
    assert json.loads((out / "result.json").read_text()) == result
    holdout = pd.read_csv(out / "holdout.csv")
    assert len(holdout) == 30 and "target" in holdout.columns
    model = load_result_model(result)
    again = evaluate_on(model, holdout, api.TrainingJobSpec.model_validate(spec))
    assert again["accuracy"] == pytest.approx(parsed.metrics["accuracy"])


def test_wine_logistic_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_for(
        {"builtin": "wine"},
        "LogisticRegression",
        hyperparameters={"max_iter": 500},
        preprocessing={"scaling": "standard"},
    )
    code, result = run_main(spec, tmp_path / "wine", capsys)
    assert code == 0, result["message"]
    assert result["metrics"]["accuracy"] >= 0.9
    assert result["signature"]["output"]["classes"] == [0, 1, 2]


def test_diabetes_ridge_regression_with_cross_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec_for(
        {"builtin": "diabetes"},
        "Ridge",
        hyperparameters={"alpha": 0.1},
        evaluation={"cvFolds": 3},
        qualityGate={"thresholds": [{"metric": "r2", "min": 0.3}]},
    )
    code, result = run_main(spec, tmp_path / "diabetes", capsys)
    assert code == 0, result["message"]
    metrics = result["metrics"]
    assert metrics["r2"] > 0.3
    assert metrics["rmse"] > 0 and metrics["mae"] > 0
    assert metrics["cv_r2_mean"] > 0.3 and metrics["cv_rmse_mean"] > 0
    assert result["task"] == "regression"
    assert result["signature"]["output"] == {"name": "predict", "dtype": "float64"}


def test_breast_cancer_gradient_boosting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec_for(
        {"builtin": "breast_cancer"},
        "HistGradientBoostingClassifier",
        hyperparameters={"max_iter": 20},
    )
    code, result = run_main(spec, tmp_path / "bc", capsys)
    assert code == 0, result["message"]
    assert result["metrics"]["accuracy"] >= 0.9
    assert result["metrics"]["roc_auc"] >= 0.95


# --------------------------------------------------------------------- generated CSV


def test_csv_with_categorical_columns_and_missing_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = make_mixed_csv(tmp_path / "mixed.csv")
    spec = spec_for(
        {"path": str(csv), "target": "label"},
        "LogisticRegression",
        preprocessing={"categorical": ["color", "size"], "scaling": "standard"},
        evaluation={"cvFolds": 3},
    )
    code, result = run_main(spec, tmp_path / "mixed", capsys)
    assert code == 0, result["message"]
    assert result["metrics"]["accuracy"] >= 0.8
    assert result["metrics"]["cv_accuracy_mean"] >= 0.8
    # The fingerprint is the sha256 of the raw file.
    assert result["dataset"]["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert result["dataset"]["source"] == f"file:{csv}"
    inputs = {f["name"]: f for f in result["signature"]["inputs"]}
    assert inputs["x1"]["dtype"] == "float64"
    assert inputs["color"] == {
        "name": "color",
        "dtype": "string",
        "categories": ["blue", "green", "red"],
    }
    assert result["signature"]["output"]["classes"] == ["no", "yes"]
    # The stored model handles unseen categories and missing values at prediction time.
    model = load_result_model(result)
    probe = pd.DataFrame(
        {"x1": [0.5, np.nan], "x2": [1.0, 2.0], "color": ["purple", None], "size": ["M", "L"]}
    )
    assert set(model.predict(probe)) <= {"no", "yes"}


def test_parquet_from_a_pvc_source_under_the_data_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_root = tmp_path / "data"
    (data_root / "pvc" / "sets").mkdir(parents=True)
    frame = pd.read_csv(make_mixed_csv(tmp_path / "m.csv"))
    frame.to_parquet(data_root / "pvc" / "sets" / "train.parquet")
    spec = spec_for(
        {"pvc": {"claimName": "datasets", "path": "sets/train.parquet"}, "target": "label"},
        "DecisionTreeClassifier",
        preprocessing={"categorical": ["color", "size"]},
    )
    code, result = run_main(spec, tmp_path / "o", capsys, "--data-root", str(data_root))
    assert code == 0, result["message"]
    assert result["dataset"]["source"] == "pvc:datasets/sets/train.parquet"


def test_configmap_source_and_pvc_output_uri(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_root = tmp_path / "data"
    (data_root / "configmap").mkdir(parents=True)
    make_mixed_csv(data_root / "configmap" / "train.csv", n=300)
    artifact_root = tmp_path / "artifacts"
    spec = spec_for(
        {"configMap": {"name": "small", "key": "train.csv"}, "target": "label"},
        "GaussianNB",
        preprocessing={"categorical": ["color", "size"]},
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(
        json.dumps({"apiVersion": api.API_VERSION, "kind": "TrainingJob", "spec": spec})
    )
    capsys.readouterr()
    code = cli.main(
        [
            "--spec", str(spec_file),
            "--output", "pvc://kubeloop-artifacts/ml/m-1",
            "--artifact-root", str(artifact_root),
            "--data-root", str(data_root),
        ]
    )  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result["message"]
    assert result["artifact"]["uri"] == "pvc://kubeloop-artifacts/ml/m-1/model.skops"
    assert (artifact_root / "ml" / "m-1" / "model.skops").is_file()
    assert (artifact_root / "ml" / "m-1" / "result.json").is_file()
    local = artifacts.resolve(result["artifact"]["uri"], artifact_root=artifact_root)
    artifacts.load_model(local, sha256=result["artifact"]["sha256"], fmt="skops")


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static file server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_url_source_is_fetched_and_hashed_over_raw_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], http_dir: tuple[str, Path]
) -> None:
    base, root = http_dir
    csv = make_mixed_csv(root / "train.csv", n=300)
    spec = spec_for(
        {"url": f"{base}/train.csv", "target": "label"},
        "KNeighborsClassifier",
        preprocessing={"categorical": ["color", "size"], "scaling": "minmax"},
    )
    code, result = run_main(spec, tmp_path / "o", capsys)
    assert code == 0, result["message"]
    assert result["dataset"]["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert result["dataset"]["source"] == f"{base}/train.csv"


# ------------------------------------------------------------------------------- ONNX


def test_onnx_random_forest_on_iris_predicts_identical_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "onnx"
    spec = spec_for(
        {"builtin": "iris"},
        "RandomForestClassifier",
        hyperparameters={"n_estimators": 10},
        artifact={"onnx": True},
    )
    code, result = run_main(spec, out, capsys)
    assert code == 0, result["message"]
    art = result["artifact"]
    assert art["onnxUri"] == (out / "model.onnx").as_uri()
    onnx_path = artifacts.resolve(art["onnxUri"])
    assert artifacts.sha256_file(onnx_path) == art["onnxSha256"]
    holdout = pd.read_csv(out / "holdout.csv")
    features = holdout.drop(columns="target")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    labels = session.run(None, onnx_feeds(features, ["float"] * 4, names))[0]
    model = load_result_model(result)
    assert labels.tolist() == model.predict(features).tolist()


# ----------------------------------------------------------------------- spec sources


def test_spec_from_environment_variable_as_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = {
        "apiVersion": api.API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": "iris"},
        "spec": spec_for({"builtin": "iris"}, "DecisionTreeClassifier"),
    }
    monkeypatch.setenv(cli.ENV_SPEC, json.dumps(manifest))
    term = tmp_path / "termination-log"
    capsys.readouterr()
    code = cli.main(["--output", str(tmp_path / "o"), "--termination-log", str(term)])
    out = capsys.readouterr().out
    assert code == 0
    # A small result goes to the termination message unchanged.
    assert json.loads(term.read_text()) == json.loads(out)
    assert len(term.read_bytes()) <= api.TERMINATION_MESSAGE_LIMIT


def test_quality_gate_failure_still_writes_the_model_to_register_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec_for(
        {"builtin": "iris"},
        "DecisionTreeClassifier",
        hyperparameters={"max_depth": 1},
        qualityGate={
            "thresholds": [{"metric": "accuracy", "min": 0.99}, {"metric": "f1", "max": 0.1}]
        },
    )
    code, result = run_main(spec, tmp_path / "gate", capsys)
    assert code == api.EXIT_GATE_FAILED
    assert not result["succeeded"] and result["reason"] == "QualityGateFailed"
    assert "accuracy" in result["gate"]["message"] and "f1" in result["gate"]["message"]
    assert result["metrics"]["accuracy"] < 0.99
    # Registered but never served: the model is written so its ModelVersion can exist.
    model = tmp_path / "gate" / "model.skops"
    assert result["artifact"]["sha256"] == artifacts.sha256_file(model)
    assert "onnxUri" not in result["artifact"], "no ONNX export for a refused model"


def test_reference_statistics_use_a_bounded_sample_of_large_training_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = pd.DataFrame({"x": np.arange(500, dtype=float), "c": ["a", "b"] * 250})
    monkeypatch.setattr(runner, "REFERENCE_MAX_ROWS", 100)
    runner.write_reference(frame, ["c"], tmp_path / "ref.json", seed=1)
    ref = ReferenceStats.from_json((tmp_path / "ref.json").read_bytes())
    assert ref.rows == 100
    runner.write_reference(frame.head(80), ["c"], tmp_path / "small.json")
    assert ReferenceStats.from_json((tmp_path / "small.json").read_bytes()).rows == 80
