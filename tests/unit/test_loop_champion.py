"""The champion gate in the training pod: the math, and a real champion on real holdout."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_iris

from kubeloop.builders.job import build_job
from kubeloop.settings import Settings
from kubeloop_runtime import api
from kubeloop_runtime.train import champion as ch
from kubeloop_runtime.train.errors import InvalidSpecError
from kubeloop_runtime.train.runner import Output, train


@pytest.mark.parametrize(
    ("metric", "challenger", "champion", "margin", "passed"),
    [
        ("accuracy", 0.90, 0.90, 0.0, True),  # equal passes
        ("accuracy", 0.89, 0.90, 0.0, False),
        ("accuracy", 0.86, 0.90, 0.05, True),  # within the margin
        ("accuracy", 0.84, 0.90, 0.05, False),
        ("accuracy", 0.99, 0.50, 0.0, True),
        ("rmse", 10.0, 12.0, 0.0, True),  # lower is better
        ("rmse", 12.5, 12.0, 0.0, False),
        ("rmse", 12.5, 12.0, 1.0, True),
        ("log_loss", 0.3, 0.2, 0.05, False),
        ("r2", 0.7, 0.8, 0.05, False),  # higher is better
    ],
)
def test_compare(
    metric: str, challenger: float, champion: float, margin: float, passed: bool
) -> None:
    g = ch.compare(metric, challenger, champion, margin, "iris-v1")
    assert g.passed is passed
    assert f"{challenger:.4g}" in g.message and f"{champion:.4g}" in g.message
    assert "iris-v1" in g.message


def spec(path: Path | None = None, **extra: object) -> api.TrainingJobSpec:
    dataset: dict[str, object] = (
        {"builtin": "iris"} if path is None else {"path": str(path), "target": "target"}
    )
    return api.TrainingJobSpec.model_validate(
        {
            "model": "iris",
            "dataset": dataset,
            "estimator": {"type": "LogisticRegression", "hyperparameters": {"max_iter": 500}},
            "artifact": {"onnx": False},
            **extra,
        }
    )


def shifted_csv(tmp: Path, shift_std: float) -> Path:
    frame = load_iris(as_frame=True).frame
    col = "petal length (cm)"
    frame[col] = frame[col] + shift_std * frame[col].std()
    path = tmp / "shifted.csv"
    frame.to_csv(path, index=False)
    return path


def champion_from(result: api.TrainingResult, name: str) -> ch.Champion:
    assert result.artifact and result.framework and result.signature and result.dataset
    mv = api.ModelVersionSpec(
        model="iris", version=1, task=api.Task.CLASSIFICATION, artifact=result.artifact,
        framework=result.framework, signature=result.signature, metrics=result.metrics,
        dataset=result.dataset,
    )  # fmt: skip
    return ch.Champion(name=name, spec=mv)


def test_champion_scored_on_the_challengers_holdout(tmp_path: Path) -> None:
    v1 = train(spec(), Output.open(str(tmp_path / "v1")), tmp_path)
    assert v1.succeeded
    champ = champion_from(v1, "iris-v1")
    # A challenger trained on shifted data, judged on ITS holdout: the champion does worse.
    data = shifted_csv(tmp_path, 2.0)
    s = spec(data, champion="iris-v1", championGate={"metric": "accuracy", "maxRegression": 0.05})
    v2 = train(s, Output.open(str(tmp_path / "v2")), tmp_path, champ, None)
    assert v2.succeeded, v2.message
    assert v2.metrics["champion_accuracy"] < v2.metrics["accuracy"]
    assert v2.gate is not None and "champion gate passed" in v2.gate.message


def test_worse_challenger_fails_the_gate_naming_both_numbers(tmp_path: Path) -> None:
    v1 = train(spec(), Output.open(str(tmp_path / "v1")), tmp_path)
    champ = champion_from(v1, "iris-v1")
    # A deliberately weak challenger: one shallow tree on one feature.
    s = api.TrainingJobSpec.model_validate(
        {
            **spec().wire(),
            "dataset": {"builtin": "iris", "features": ["sepal width (cm)"]},
            "estimator": {"type": "DecisionTreeClassifier", "hyperparameters": {"max_depth": 1}},
            "champion": "iris-v1",
        }
    )
    # The champion needs features the challenger's data lacks: a clear error, not a pass.
    with pytest.raises(Exception, match="cannot be compared"):
        train(s, Output.open(str(tmp_path / "v2")), tmp_path, champ, None)
    s = api.TrainingJobSpec.model_validate(
        {
            **spec().wire(),
            "estimator": {"type": "DecisionTreeClassifier", "hyperparameters": {"max_depth": 1}},
            "champion": "iris-v1",
        }
    )
    v2 = train(s, Output.open(str(tmp_path / "v3")), tmp_path, champ, None)
    assert not v2.succeeded and v2.reason == "QualityGateFailed"
    assert v2.gate is not None and not v2.gate.passed
    assert f"{v2.metrics['accuracy']:.4g}" in v2.message
    assert f"{v2.metrics['champion_accuracy']:.4g}" in v2.message


def test_champion_required_when_spec_names_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpecError, match="KUBELOOP_CHAMPION"):
        train(spec(champion="iris-v1"), Output.open(str(tmp_path / "x")), tmp_path)


def test_parse_champion_env() -> None:
    assert ch.parse_champion(None) is None
    with pytest.raises(InvalidSpecError, match=r"metadata\.name"):
        ch.parse_champion(json.dumps({"spec": {}}))
    with pytest.raises(InvalidSpecError, match="not JSON"):
        ch.parse_champion("{")


def test_gate_metric_defaults() -> None:
    assert ch.gate_metric(spec()) == "accuracy"
    reg = api.TrainingJobSpec.model_validate(
        {"model": "d", "dataset": {"builtin": "diabetes"}, "estimator": {"type": "Ridge"}}
    )
    assert ch.gate_metric(reg) == "rmse"


def test_job_carries_the_champion_env() -> None:
    s = spec(champion="iris-v1")
    mv = {"metadata": {"name": "iris-v1"}, "spec": {"model": "iris", "version": 1}}
    job = build_job("iris-retrain-1", "ml", "uid", s, Settings(), champion=mv)
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["KUBELOOP_CHAMPION"]) == {
        "metadata": {"name": "iris-v1"},
        "spec": mv["spec"],
    }
    job = build_job("x", "ml", "uid", spec(), Settings(), champion=mv)
    names = [e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert "KUBELOOP_CHAMPION" not in names


def test_shifted_holdout_is_really_shifted(tmp_path: Path) -> None:
    frame = pd.read_csv(shifted_csv(tmp_path, 2.0))
    assert (
        frame["petal length (cm)"].mean()
        > load_iris(as_frame=True).frame["petal length (cm)"].mean() + 3
    )
