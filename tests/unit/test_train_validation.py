"""spec.validation through the real kubeloop-train CLI: one run per anomaly kind.

A reference version is trained once (the CLI writes its ModelVersion manifest); each test
then hands it to a second run as ``KUBELOOP_VALIDATION_REFERENCE``, the way the operator
does, with a dataset that has exactly one kind of anomaly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kubeloop_runtime import api, drift, validation

N = 400


def frame(seed: int = 0, n: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": rng.uniform(0.0, 10.0, size=n),
            "color": rng.choice(["red", "green", "blue"], size=n),
            "label": (x1 > 0).astype(int),
        }
    )


def spec(path: Path, **fields: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "dataset": {"path": str(path), "target": "label"},
        "estimator": {"type": "LogisticRegression"},
        "preprocessing": {"categorical": ["color"]},
        "artifact": {"onnx": False},
        **fields,
    }


def run(
    tmp: Path, spec_doc: dict[str, Any], env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec_doc))
    proc = subprocess.run(
        [
            sys.executable, "-m", "kubeloop_runtime.train.cli",
            "--spec", str(tmp / "spec.yaml"),
            "--output", str(tmp / "out"),
            "--termination-log", str(tmp / "termination-log"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    # The termination message (what the operator reads) carries the same anomalies.
    term = json.loads((tmp / "termination-log").read_text())
    assert term.get("validation") == json.loads(lines[0]).get("validation")
    return proc.returncode, json.loads(lines[0])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The reference version's ModelVersion, as the operator passes it to the pod."""
    tmp = tmp_path_factory.mktemp("reference")
    frame(0).to_csv(tmp / "train.csv", index=False)
    code, doc = run(tmp, spec(tmp / "train.csv"))
    assert code == 0, doc
    manifest = yaml.safe_load((tmp / "out" / "modelversion.yaml").read_text())
    body = {"metadata": {"name": "m-v1"}, "spec": manifest["spec"]}
    return {"KUBELOOP_VALIDATION_REFERENCE": json.dumps(body)}


def _drop_x2(f: pd.DataFrame) -> pd.DataFrame:
    return f.drop(columns=["x2"])


def _add_x3(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(x3=1.0)


def _x2_text(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(x2=[f"v{i}" for i in range(len(f))])


def _purple(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(color=["purple" if i % 50 == 0 else c for i, c in enumerate(f["color"])])


def _x2_beyond(f: pd.DataFrame) -> pd.DataFrame:
    # 5% of the rows beyond the seen maximum (about 10), the rest as before.
    x2 = f["x2"].to_numpy().copy()
    x2[: len(x2) // 20] = 50.0
    return f.assign(x2=x2)


def _x2_null(f: pd.DataFrame) -> pd.DataFrame:
    return f.assign(x2=np.nan)


def _x1_shifted(f: pd.DataFrame) -> pd.DataFrame:
    # Inside the seen range, but most values now in the reference's upper bins.
    x1 = f["x1"].to_numpy()
    return f.assign(x1=np.clip(np.abs(x1) + 0.5, None, x1.max()))


CASES: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str, str]] = {
    "MissingColumn": (_drop_x2, "x2", "not in the dataset"),
    "ExtraColumn": (_add_x3, "x3", "not among the reference's features"),
    "TypeChanged": (_x2_text, "x2", "dtype string, the reference has float64"),
    "UnseenCategory": (_purple, "color", "'purple'"),
    "OutOfRange": (_x2_beyond, "x2", "outside the seen range"),
    "AllNull": (_x2_null, "x2", f"all {N} values are missing"),
    "Drift": (_x1_shifted, "x1", "PSI"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_each_anomaly_kind_fails_the_run_and_names_its_column(
    kind: str, reference: dict[str, str], tmp_path: Path
) -> None:
    change, column, needle = CASES[kind]
    change(frame(1)).to_csv(tmp_path / "new.csv", index=False)
    code, doc = run(
        tmp_path, spec(tmp_path / "new.csv", validation={"reference": "m-v1"}), reference
    )
    assert code == api.EXIT_INVALID, doc
    assert doc["reason"] == "DataValidationFailed"
    result = api.DataValidation.model_validate(doc["validation"])
    assert not result.passed and result.reference == "m-v1"
    # Exactly the anomaly this dataset was made to have: no other kind, no other column.
    assert [(a.column, a.kind) for a in result.anomalies] == [(column, kind)], result
    assert needle in result.anomalies[0].message
    assert f"{column}: {kind}" in doc["message"]
    assert not (tmp_path / "out" / "model.skops").exists()  # nothing was fitted


def test_a_dataset_like_the_reference_passes_and_is_recorded(
    reference: dict[str, str], tmp_path: Path
) -> None:
    frame(2).to_csv(tmp_path / "new.csv", index=False)
    code, doc = run(
        tmp_path, spec(tmp_path / "new.csv", validation={"reference": "m-v1"}), reference
    )
    assert code == 0, doc
    assert doc["validation"] == {
        "reference": "m-v1", "policy": "fail", "passed": True, "total": 0, "anomalies": [],
    }  # fmt: skip


def test_policy_warn_trains_anyway_and_keeps_the_anomalies(
    reference: dict[str, str], tmp_path: Path
) -> None:
    _purple(_x2_beyond(frame(3))).to_csv(tmp_path / "new.csv", index=False)
    validation_spec = {"reference": "m-v1", "policy": "warn"}
    code, doc = run(tmp_path, spec(tmp_path / "new.csv", validation=validation_spec), reference)
    assert code == 0, doc
    assert doc["succeeded"] is True and doc["reason"] == "Trained"
    kinds = [(a["column"], a["kind"]) for a in doc["validation"]["anomalies"]]
    assert kinds == [("color", "UnseenCategory"), ("x2", "OutOfRange")]
    assert "data validation warned: 2 anomalies" in doc["message"]
    assert (tmp_path / "out" / "model.skops").exists()


def test_a_reference_the_operator_did_not_pass_is_an_invalid_spec(tmp_path: Path) -> None:
    frame(0).to_csv(tmp_path / "new.csv", index=False)
    code, doc = run(tmp_path, spec(tmp_path / "new.csv", validation={"reference": "m-v9"}))
    assert code == api.EXIT_INVALID
    assert doc["reason"] == "InvalidSpec"
    assert "KUBELOOP_VALIDATION_REFERENCE" in doc["message"] and "m-v9" in doc["message"]


def test_validation_needs_a_reference_or_a_champion() -> None:
    with pytest.raises(ValueError, match=r"spec\.validation\.reference"):
        api.TrainingJobSpec.model_validate(spec(Path("x.csv"), validation={"policy": "warn"}))
    s = api.TrainingJobSpec.model_validate(spec(Path("x.csv"), champion="m-v3", validation={}))
    assert s.validation_reference == "m-v3"


def test_serving_skew_on_the_drift_window() -> None:
    train = frame(0).drop(columns=["label"])
    stats = drift.build_reference(train, ["color"])
    monitor = drift.DriftMonitor(stats, window_size=500, flag_by="psi")
    served = frame(4).drop(columns=["label"])
    served.loc[:40, "x2"] = 99.0  # about 10% out of range
    served.loc[:40, "color"] = "purple"
    monitor.observe(served[stats.feature_names])
    found = validation.serving_skew(monitor, monitor.compute().to_dict(), api.ValidationSpec())
    kinds = sorted((a.column, a.kind) for a in found)
    assert ("x2", "OutOfRange") in kinds and ("color", "UnseenCategory") in kinds
    assert all(c != "x1" for c, _ in kinds), found
    # Too few rows: nothing reported yet.
    quiet = drift.DriftMonitor(stats, window_size=500)
    quiet.observe(served[stats.feature_names].head(5))
    assert validation.serving_skew(quiet, quiet.compute().to_dict(), api.ValidationSpec()) == []


def test_the_docs_example_runs_as_written(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "data-validation.md").read_text()
    block = text.split("## Try it without a cluster", 1)[1].split("```bash\n", 1)[1]
    script = block.split("\n```\n", 1)[0]
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.splitlines()[0])
    assert doc["reason"] == "DataValidationFailed"
    kinds = [(a["column"], a["kind"]) for a in doc["validation"]["anomalies"]]
    assert kinds == [("color", "UnseenCategory"), ("x2", "OutOfRange")]
    assert proc.stdout.splitlines()[-1] == "exit code 2"
