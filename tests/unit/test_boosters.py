"""XGBoost and LightGBM through their scikit-learn estimators: train, store, export, serve.

Each booster is trained once per module by the real trainer (``runner.train``, as
``kubeloop-train`` does) and served through the ASGI app, by ONNX Runtime and, with
``--no-onnx``, from the skops artifact loaded through the allowlist.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from kubeloop_runtime import api, artifacts
from kubeloop_runtime.train.runner import Output, train
from tests.unit.test_serve_trained import Server, _serve, _train

BOOSTERS = {
    "XGBClassifier": "iris",
    "LGBMClassifier": "iris",
    "XGBRegressor": "diabetes",
    "LGBMRegressor": "diabetes",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("boosters")
    out = {}
    for estimator, dataset in BOOSTERS.items():
        spec = api.TrainingJobSpec.model_validate(
            {
                "model": estimator.lower(),
                "dataset": {"builtin": dataset},
                "estimator": {"type": estimator, "hyperparameters": {"n_estimators": 40}},
            }
        )
        out[estimator] = _train(root / estimator, spec, root / "data")
    return out


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


def _spec(manifest: Path) -> api.ModelVersionSpec:
    return api.ModelVersionSpec.model_validate(json.loads(manifest.read_text())["spec"])


def _stored(manifest: Path) -> tuple[Path, Any, Any]:
    """The artifact's path, the fitted Pipeline loaded from it, and its transformed holdout."""
    path = artifacts.resolve(_spec(manifest).artifact.uri)
    fitted = _loaded(manifest)
    holdout = pd.read_csv(path.parent / "holdout.csv").drop(columns=["target"])
    return path, fitted, fitted.named_steps["preprocess"].transform(holdout)


def _loaded(manifest: Path) -> Any:
    spec = _spec(manifest)
    path = artifacts.resolve(spec.artifact.uri)
    return artifacts.load_model(path, sha256=spec.artifact.sha256, fmt="skops")


def test_the_allowlisted_booster_type_names_are_the_real_classes() -> None:
    named = set(artifacts.BOOSTER_TYPES)
    for estimator in BOOSTERS:
        module, _, name = api.ESTIMATORS[estimator][0].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert f"{cls.__module__}.{cls.__qualname__}" in named
    import lightgbm
    import xgboost

    for cls in (xgboost.Booster, lightgbm.Booster):
        assert f"{cls.__module__}.{cls.__qualname__}" in named


@pytest.mark.parametrize("estimator", list(BOOSTERS))
def test_each_booster_keeps_a_verified_onnx_graph(trained: dict[str, Path], estimator: str) -> None:
    spec = _spec(trained[estimator])
    # The graph is recorded only when ONNX Runtime reproduced the estimator's predictions.
    assert spec.artifact.onnx_uri is not None and spec.artifact.onnx_sha256 is not None
    graph = artifacts.resolve(spec.artifact.onnx_uri)
    assert artifacts.sha256_file(graph) == spec.artifact.onnx_sha256


@pytest.mark.parametrize("estimator", ["XGBClassifier", "XGBRegressor"])
def test_xgboost_is_stored_in_its_own_format_inside_the_artifact(
    trained: dict[str, Path], estimator: str
) -> None:
    import xgboost

    path, fitted, x = _stored(trained[estimator])
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        blobs = [archive.read(n) for n in names if n.endswith(".bin")]
        schema = archive.read("schema.json").decode()
    assert "pickle" not in schema.lower()
    # The booster as XGBoost serialises it (its UBJSON snapshot: configuration and model),
    # read back by XGBoost itself.
    (raw,) = blobs
    assert raw[:1] == b"{" and b"Config" in raw and b"learner" in raw
    booster = xgboost.Booster()
    booster.__setstate__({"handle": bytearray(raw)})
    matrix = xgboost.DMatrix(x)
    np.testing.assert_allclose(
        booster.predict(matrix),
        fitted.named_steps["estimator"].get_booster().predict(matrix),
    )


@pytest.mark.parametrize("estimator", ["LGBMClassifier", "LGBMRegressor"])
def test_lightgbm_is_stored_in_its_own_format_inside_the_artifact(
    trained: dict[str, Path], estimator: str
) -> None:
    import lightgbm

    path, fitted, x = _stored(trained[estimator])
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
    found: list[str] = []
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item.startswith('"tree\\nversion='):
            found.append(json.loads(item))  # skops keeps a string as its JSON text
    (text,) = found  # LightGBM's text model format, as Booster.model_to_string writes it
    booster = lightgbm.Booster(model_str=text)
    np.testing.assert_allclose(
        booster.predict(x), fitted.named_steps["estimator"].booster_.predict(x)
    )


@pytest.mark.parametrize("estimator", list(BOOSTERS))
@pytest.mark.parametrize("runtime", ["onnx", "sklearn"])
def test_served_predictions_are_the_estimators(
    runner: asyncio.Runner, trained: dict[str, Path], estimator: str, runtime: str
) -> None:
    manifest = trained[estimator]
    server: Server = _serve(runner, manifest, *(["--no-onnx"] if runtime == "sklearn" else []))
    assert server.dataplane.model.runtime == runtime
    holdout = pd.read_csv(manifest.parent / "holdout.csv")
    features = [c for c in holdout.columns if c != "target"]
    rows = holdout[features].to_numpy(dtype=np.float64)
    body = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64",
                        "data": rows.reshape(-1).tolist()}]}  # fmt: skip
    r = server.v2(body)
    assert r.status_code == 200, r.text
    expected = _loaded(manifest).predict(holdout[features])
    got = np.asarray(r.json()["outputs"][0]["data"])
    if BOOSTERS[estimator] == "iris":
        assert got.tolist() == expected.tolist()
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_lightgbm_through_the_cli_keeps_stdout_to_the_result_line(tmp_path: Path) -> None:
    spec = {
        "model": "lgbm",
        "dataset": {"builtin": "breast_cancer"},
        "estimator": {"type": "LGBMClassifier", "hyperparameters": {"n_estimators": 30}},
        "artifact": {"onnx": False},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run(
        [sys.executable, "-m", "kubeloop_runtime.train.cli", "--spec", str(tmp_path / "spec.yaml"),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert json.loads(line)["reason"] == "Trained"


def test_a_bad_booster_value_names_the_estimator(tmp_path: Path) -> None:
    spec = api.TrainingJobSpec.model_validate(
        {
            "model": "lgbm",
            "dataset": {"builtin": "iris"},
            "estimator": {"type": "LGBMClassifier", "hyperparameters": {"num_leaves": -4}},
        }
    )
    from kubeloop_runtime.train.errors import DataError

    with pytest.raises(DataError, match=r"fitting LGBMClassifier failed: .*num_leaves"):
        train(spec, Output.open(str(tmp_path / "out")), tmp_path)
