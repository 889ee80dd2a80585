"""The real ``kubeloop-serve`` process over HTTP on loopback (no cluster needed).

Starts the console script on a free port, waits for readiness, checks predictions and
metrics, checks that a tampered artifact and a library version mismatch each refuse to
start, and runs schemathesis against the server's own OpenAPI document (no 5xx).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from kubeloop_runtime import jsonlog
from kubeloop_runtime.serve.testing import BuiltModel, build_model_version

READY_TIMEOUT = 60.0


def _command() -> list[str]:
    exe = shutil.which("kubeloop-serve")
    return [exe] if exe else [sys.executable, "-m", "kubeloop_runtime.serve.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.grpc_port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.proc = subprocess.Popen(
            [
                *_command(),
                *args,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--grpc-port",
                str(self.grpc_port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                raise AssertionError(f"server exited with {self.proc.returncode}: {err.decode()}")
            try:
                if httpx.get(f"{self.base}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server not ready in time")

    def stop(self) -> bool:
        """SIGTERM; True when the server drained and shut down cleanly."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _, err = self.proc.communicate()
        # uvicorn re-raises the signal after its graceful shutdown: -SIGTERM is clean too.
        clean = self.proc.returncode in (0, -signal.SIGTERM)
        return clean and b"Application shutdown complete" in err


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltModel:
    return build_model_version(
        tmp_path_factory.mktemp("serve-process") / "iris", estimator="LogisticRegression"
    )


@pytest.fixture(scope="module")
def server(built: BuiltModel) -> Iterator[Process]:
    serving = {"monitoring": {"predictionLogSampleRate": 1.0}, "maxBatchSize": 32}
    p = Process(
        ["--name", "iris"],
        env={
            "KUBELOOP_MODEL_VERSION": json.dumps(built.document),
            "KUBELOOP_SERVING": json.dumps(serving),
        },
    )
    try:
        p.wait_ready()
        yield p
    finally:
        assert p.stop()


def test_predictions_and_metrics_over_http(server: Process, built: BuiltModel) -> None:
    frame = pd.DataFrame(built.x_test, columns=built.feature_names)
    expected = built.estimator.predict(frame).tolist()
    body = {
        "inputs": [
            {
                "name": "x",
                "shape": list(built.x_test.shape),
                "datatype": "FP64",
                "data": built.x_test.ravel().tolist(),
            }
        ]
    }
    r = httpx.post(f"{server.base}/v2/models/iris/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == expected
    r = httpx.post(
        f"{server.base}/v1/models/iris:predict?probabilities=true",
        json={"instances": built.x_test.tolist()},
    )
    assert r.status_code == 200 and r.json()["predictions"] == expected
    assert len(r.json()["probabilities"][0]) == 3
    bad = httpx.post(f"{server.base}/v1/models/iris:predict", json={"instances": [[1, 2, 3]]})
    assert bad.status_code == 400
    text = httpx.get(f"{server.base}/metrics").text
    samples = _samples(text)
    key = 'kubeloop_serving_requests_total{code="200",model="iris",protocol="v2",version="1"}'
    assert samples[key] == 1.0
    key = 'kubeloop_serving_requests_total{code="400",model="iris",protocol="v1",version="1"}'
    assert samples[key] == 1.0
    info = [k for k in samples if k.startswith("kubeloop_serving_model_info{")]
    assert len(info) == 1 and 'runtime="onnx"' in info[0]


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_sigterm_drains_and_exits_cleanly(built: BuiltModel) -> None:
    p = Process(["--model-version", str(built.manifest)])
    p.wait_ready()
    assert p.stop()


def test_sigterm_drains_not_ready_then_shuts_down(built: BuiltModel) -> None:
    """With --drain-seconds the server answers predictions after SIGTERM while readiness
    says 503 (Services drop the pod meanwhile), then exits 0 once the drain is over."""
    drain = 2.0
    p = Process(["--model-version", str(built.manifest), "--drain-seconds", str(drain)])
    p.wait_ready()
    body = {"instances": built.x_test[:2].tolist()}
    name = built.spec.model
    p.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    time.sleep(0.3)
    ready = httpx.get(f"{p.base}/v2/health/ready", timeout=5)
    assert ready.status_code == 503, ready.text
    answered = 0
    while time.monotonic() - sent < drain - 0.5:
        r = httpx.post(f"{p.base}/v1/models/{name}:predict", json=body, timeout=5)
        assert r.status_code == 200, r.text
        answered += 1
    assert answered > 0
    p.proc.wait(timeout=drain + 20)
    took = time.monotonic() - sent
    _, err = p.proc.communicate()
    assert p.proc.returncode == 0, err.decode()[-2000:]
    assert took >= drain, took
    assert b"Received SIGTERM" in err and b"Application shutdown complete" in err


def _refused(args: list[str]) -> str:
    p = Process(args)
    try:
        p.proc.wait(timeout=READY_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.stop()
        raise AssertionError("the server started although it should have refused") from None
    _, err = p.proc.communicate()
    assert p.proc.returncode == 2
    return err.decode()


def test_tampered_artifact_refuses_to_start(built: BuiltModel, tmp_path: Path) -> None:
    copy = tmp_path / "model.skops"
    data = bytearray(Path(built.spec.artifact.uri.removeprefix("file://")).read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    doc: dict[str, Any] = json.loads(json.dumps(built.document))
    doc["spec"]["artifact"]["uri"] = copy.as_uri()
    manifest = tmp_path / "mv.json"
    manifest.write_text(json.dumps(doc))
    err = _refused(["--model-version", str(manifest)])
    assert "integrity check failed" in err and "sha256" in err
    # The log line is in the schema the operator writes too (kubeloop_runtime.jsonlog).
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    refused = [x for x in lines if str(x.get("message", "")).startswith("Refused to start")]
    assert refused and set(jsonlog.FIELDS) <= set(refused[0]), lines
    assert refused[0]["level"] == "error" and refused[0]["time"].endswith("Z")


def test_library_version_mismatch_refuses_to_start(built: BuiltModel, tmp_path: Path) -> None:
    doc: dict[str, Any] = json.loads(json.dumps(built.document))
    doc["spec"]["framework"]["sklearn"] = "0.20.0"
    manifest = tmp_path / "mv.yaml"
    manifest.write_text(json.dumps(doc))
    err = _refused(["--model-version", str(manifest)])
    assert "version mismatch" in err and "scikit-learn" in err and "0.20.0" in err


def test_missing_model_version_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBELOOP_MODEL_VERSION"}
    r = subprocess.run(_command(), check=False, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "--model-version" in r.stderr


def test_schemathesis_finds_no_server_errors(server: Process) -> None:
    st = shutil.which("st") or shutil.which("schemathesis")
    if st is None:
        pytest.fail("schemathesis is not installed (pip install 'schemathesis<4')")
    r = subprocess.run(
        [
            st,
            "run",
            f"{server.base}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--hypothesis-max-examples",
            "30",
            "--hypothesis-deadline",
            "None",
            "--data-generation-method",
            "all",
            "--hypothesis-suppress-health-check",
            "all",
            "--workers",
            "1",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "passed" in r.stdout
