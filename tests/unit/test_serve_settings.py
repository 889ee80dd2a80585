"""Settings parsing and model loading refusals (no HTTP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubeloop_runtime.serve.errors import StartupError
from kubeloop_runtime.serve.model import load
from kubeloop_runtime.serve.settings import parse_settings
from kubeloop_runtime.serve.testing import BuiltModel, build_model_version


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    return build_model_version(tmp_path_factory.mktemp("settings") / "iris", estimator="GaussianNB")


def test_env_and_flags(built: BuiltModel) -> None:
    env = {
        "KUBELOOP_MODEL_VERSION": json.dumps(built.document),
        "KUBELOOP_SERVED_NAME": "my-isvc",
        "KUBELOOP_ARTIFACT_ROOT": "/data",
        "KUBELOOP_SERVING": json.dumps(
            {
                "monitoring": {"predictionLogSampleRate": 0.5, "drift": {"windowSize": 200}},
                "maxBatchSize": 8,
                "maxBatchDelayMs": 2.5,
                "role": "canary",
                "inferenceService": "my-isvc",
            }
        ),
    }
    s = parse_settings([], env)
    assert s.served_name == "my-isvc" and s.role == "canary"
    assert s.max_batch_size == 8 and s.max_batch_delay_ms == 2.5
    assert s.monitoring.prediction_log_sample_rate == 0.5
    assert s.monitoring.drift.window_size == 200
    assert s.artifact_root == Path("/data")
    assert s.model_version_name == built.document["metadata"]["name"]
    assert s.version == "1"
    # Flags win over the environment.
    s = parse_settings(["--max-batch-size", "2", "--role", "stable", "--name", "x"], env)
    assert s.max_batch_size == 2 and s.role == "stable" and s.served_name == "x"


def test_grpc_port(built: BuiltModel) -> None:
    env = {"KUBELOOP_MODEL_VERSION": json.dumps(built.document)}
    assert (parse_settings([], env).port, parse_settings([], env).grpc_port) == (8080, 8081)
    assert parse_settings(["--grpc-port", "9000"], env).grpc_port == 9000
    assert parse_settings(["--grpc-port", "0"], env).grpc_port == 0  # any free port
    assert parse_settings(["--no-grpc"], env).grpc_port is None
    with pytest.raises(StartupError, match="--grpc-port 8080 is the HTTP port"):
        parse_settings(["--grpc-port", "8080"], env)
    with pytest.raises(StartupError, match=r"--grpc-port must be within 0\.\.65535"):
        parse_settings(["--grpc-port", "70000"], env)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "no model to serve"),
        ({"KUBELOOP_MODEL_VERSION": "{"}, "not JSON"),
        ({"KUBELOOP_MODEL_VERSION": '{"spec": {"model": "x"}}'}, "invalid ModelVersion spec"),
    ],
)
def test_bad_model_version_is_a_startup_error(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(StartupError, match=fragment):
        parse_settings([], env)


@pytest.mark.parametrize(
    ("serving", "fragment"),
    [
        ({"maxBatchSize": 0}, "maxBatchSize"),
        ({"maxBatchSize": True}, "maxBatchSize"),
        ({"maxBatchDelayMs": 1000}, "maxBatchDelayMs"),
        ({"role": "primary"}, "role"),
        ({"surprise": 1}, "unknown field"),
        ({"monitoring": {"drift": {"windowSize": 1}}}, "monitoring"),
    ],
)
def test_bad_serving_options(built: BuiltModel, serving: dict[str, Any], fragment: str) -> None:
    env = {
        "KUBELOOP_MODEL_VERSION": json.dumps(built.document),
        "KUBELOOP_SERVING": json.dumps(serving),
    }
    with pytest.raises(StartupError, match=fragment):
        parse_settings([], env)


def _spec(built: BuiltModel, **artifact: Any) -> Any:
    doc = json.loads(json.dumps(built.document["spec"]))
    doc["artifact"].update(artifact)
    return type(built.spec).model_validate(doc)


def test_tampered_artifact_is_refused(built: BuiltModel, tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    data = bytearray(Path(built.spec.artifact.uri.removeprefix("file://")).read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(StartupError, match="integrity check failed"):
        load(_spec(built, uri=path.as_uri()))


def test_tampered_onnx_graph_is_refused(built: BuiltModel) -> None:
    with pytest.raises(StartupError, match="ONNX graph integrity"):
        load(_spec(built, onnxSha256="0" * 64))


def test_version_mismatch_is_refused(built: BuiltModel) -> None:
    doc = json.loads(json.dumps(built.document["spec"]))
    doc["framework"]["numpy"] = "1.0.0"
    spec = type(built.spec).model_validate(doc)
    with pytest.raises(StartupError, match="numpy"):
        load(spec)


def test_joblib_needs_consent(tmp_path: Path) -> None:
    b = build_model_version(
        tmp_path / "j", estimator="GaussianNB", fmt="joblib", onnx=False, reference=False
    )
    with pytest.raises(StartupError, match="--allow-pickle"):
        load(b.spec)
    assert load(b.spec, allow_pickle=True).runtime == "sklearn"


def test_missing_onnx_file_is_refused_and_no_onnx_falls_back(built: BuiltModel) -> None:
    with pytest.raises(StartupError, match="not found"):
        load(_spec(built, onnxUri="file:///nonexistent/model.onnx"))
    assert load(built.spec, use_onnx=False).runtime == "sklearn"
    assert load(built.spec).runtime == "onnx"
