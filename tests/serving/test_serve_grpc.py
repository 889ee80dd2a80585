"""The real ``kubeloop-serve`` process over real gRPC on loopback (no cluster needed).

The Open Inference Protocol's ``inference.GRPCInferenceService`` answers the same
predictions as the HTTP path for the same rows (typed and raw contents, labels and
probabilities), refuses bad input with gRPC status codes naming the field, counts in the
same metrics and the same drift window as HTTP (one data plane), reports readiness through
``grpc.health.v1``, and drains in-flight calls on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kubeloop_runtime.serve.oip import grpc_predict_v2_pb2 as pb
from kubeloop_runtime.serve.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from kubeloop_runtime.serve.testing import BuiltModel, build_model_version
from tests.serving.test_serve_process import Process, _command, _samples, built

__all__ = ["built"]  # the fixture: the same iris model as the HTTP process tests

Tensor = pb.ModelInferRequest.InferInputTensor


@pytest.fixture(scope="module")
def server(built: BuiltModel) -> Iterator[Process]:
    p = Process(
        ["--name", "iris"],
        env={
            "KUBELOOP_MODEL_VERSION": json.dumps(built.document),
            "KUBELOOP_SERVING": json.dumps({"maxBatchSize": 32}),
        },
    )
    try:
        p.wait_ready()
        yield p
    finally:
        assert p.stop()


@pytest.fixture(scope="module")
def stub(server: Process) -> Iterator[Any]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _matrix(x: np.ndarray, *, raw: bool, proba: bool = True) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="iris")
    t = req.inputs.add(name="x", datatype="FP64", shape=list(x.shape))
    if raw:
        req.raw_input_contents.append(np.ascontiguousarray(x, dtype="<f8").tobytes())
    else:
        t.contents.fp64_contents.extend(x.ravel().tolist())
    if proba:
        req.parameters["probabilities"].bool_param = True
    return req


def _outputs(resp: pb.ModelInferResponse) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for k, t in enumerate(resp.outputs):
        if resp.raw_output_contents:
            dtype = {"INT64": "<i8", "FP64": "<f8"}[t.datatype]
            out[t.name] = np.frombuffer(resp.raw_output_contents[k], dtype=dtype).tolist()
        else:
            field = {"INT64": "int64_contents", "FP64": "fp64_contents"}[t.datatype]
            out[t.name] = list(getattr(t.contents, field))
    return out


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw"])
def test_grpc_predictions_equal_the_http_path(
    server: Process, stub: Any, built: BuiltModel, raw: bool
) -> None:
    x = built.x_test
    resp = stub.ModelInfer(_matrix(x, raw=raw), timeout=30)
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}
    body = {"inputs": [tensor], "parameters": {"probabilities": True}}
    r = httpx.post(f"{server.base}/v2/models/iris/infer", json=body)
    assert r.status_code == 200, r.text
    http = {o["name"]: o["data"] for o in r.json()["outputs"]}
    got = _outputs(resp)
    assert got["predict"] == http["predict"]
    expected = built.estimator.predict(pd.DataFrame(x, columns=built.feature_names))
    assert got["predict"] == expected.tolist()
    assert got["predict_proba"] == http["predict_proba"]  # bit for bit: one data plane
    assert (resp.model_name, resp.model_version) == ("iris", "1") and resp.id
    assert len(resp.raw_output_contents) == (2 if raw else 0)
    assert [list(o.shape) for o in resp.outputs] == [[len(x)], [len(x), 3]]


def test_one_tensor_per_feature_and_request_ids(stub: Any, built: BuiltModel) -> None:
    x = built.x_test[:5]
    req = pb.ModelInferRequest(model_name="iris", model_version="1", id="grpc-req-1")
    for j, name in enumerate(built.feature_names):
        req.inputs.add(name=name, datatype="FP32", shape=[5]).contents.fp32_contents.extend(
            x[:, j].tolist()
        )
    req.outputs.add(name="predict")
    resp = stub.ModelInfer(req, timeout=30)
    assert resp.id == "grpc-req-1" and [o.name for o in resp.outputs] == ["predict"]
    expected = stub.ModelInfer(_matrix(x.astype(np.float32).astype(np.float64), raw=False))
    assert _outputs(resp)["predict"] == _outputs(expected)["predict"]
    # The x-request-id metadata stands for the id, as the HTTP header does.
    req.id = ""
    resp = stub.ModelInfer(req, metadata=(("x-request-id", "from-metadata"),), timeout=30)
    assert resp.id == "from-metadata"


def _status(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call(*args, timeout=30, **kwargs)
    return e.value


def test_errors_are_grpc_status_codes_naming_the_field(stub: Any, built: BuiltModel) -> None:
    x = built.x_test[:2].copy()
    x[1, 3] = float("inf")
    e = _status(stub.ModelInfer, _matrix(x, raw=False))
    assert e.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert e.details().startswith(
        "inputs[0].contents.fp64_contents[7] (feature 'petal width (cm)'): inf is outside"
    )
    x[1, 3] = float("nan")
    e = _status(stub.ModelInfer, _matrix(x, raw=True))
    assert e.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert e.details().startswith("raw_input_contents[0][7] (feature 'petal width (cm)'): got null")
    req = _matrix(built.x_test[:1], raw=False)
    req.model_name = "wine"
    e = _status(stub.ModelInfer, req)
    assert e.code() is grpc.StatusCode.NOT_FOUND and "'wine' not found" in e.details()
    req = pb.ModelInferRequest(model_name="iris")
    req.inputs.add(name="x", datatype="FP64", shape=[1, 3]).contents.fp64_contents.extend(
        [1.0, 2.0, 3.0]
    )
    e = _status(stub.ModelInfer, req)
    assert e.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert e.details().startswith("inputs[0].shape: expected [N, 4]")
    e = _status(stub.ModelMetadata, pb.ModelMetadataRequest(name="iris", version="9"))
    assert e.code() is grpc.StatusCode.NOT_FOUND
    e = _status(stub.ModelInfer, req, metadata=(("x-request-id", "x" * 200),))
    assert e.code() is grpc.StatusCode.INVALID_ARGUMENT and "x-request-id" in e.details()


def test_health_readiness_and_metadata(server: Process, stub: Any, built: BuiltModel) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris"), timeout=10).ready
    assert _status(stub.ModelReady, pb.ModelReadyRequest(name="x")).code() is (
        grpc.StatusCode.NOT_FOUND
    )
    meta = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
    assert meta.name == "kubeloop-serve" and meta.version
    model = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"), timeout=10)
    http = httpx.get(f"{server.base}/v2/models/iris").json()
    assert model.name == http["name"] and list(model.versions) == http["versions"]
    assert model.platform == http["platform"] == "kubeloop-onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in http["inputs"]
    ]
    assert [t.name for t in model.outputs] == ["predict", "predict_proba"]
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            got = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert got.status == health_pb2.HealthCheckResponse.SERVING
        e = _status(health.Check, health_pb2.HealthCheckRequest(service="nope"))
        assert e.code() is grpc.StatusCode.NOT_FOUND


def test_grpc_shares_the_metrics_and_the_drift_window(
    server: Process, stub: Any, built: BuiltModel
) -> None:
    before = _samples(httpx.get(f"{server.base}/metrics").text)
    window = httpx.get(f"{server.base}/v2/models/iris/monitoring").json()["drift"]
    rows = built.x_test[:7]
    stub.ModelInfer(_matrix(rows, raw=False, proba=False), timeout=30)
    bad = pb.ModelInferRequest(model_name="iris")
    bad.inputs.add(name="x", datatype="FP64", shape=[1, 4])
    _status(stub.ModelInfer, bad)
    after = _samples(httpx.get(f"{server.base}/metrics").text)
    label = 'model="iris",protocol="grpc",version="1"'

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta(f'kubeloop_serving_requests_total{{code="200",{label}}}') == 1.0
    assert delta(f'kubeloop_serving_requests_total{{code="400",{label}}}') == 1.0
    assert delta(f"kubeloop_serving_request_duration_seconds_count{{{label}}}") == 2.0
    classes = sum(delta(k) for k in after if k.startswith("kubeloop_serving_predictions_total{"))
    assert classes == 7.0
    time.sleep(1.1)  # the drift report is cached for a second
    later = httpx.get(f"{server.base}/v2/models/iris/monitoring").json()["drift"]
    assert later["window_count"] == min(window["window_count"] + 7, later["window_size"])


def test_grpc_port_in_use_exits_2_with_one_line(built: BuiltModel) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            http_port = free.getsockname()[1]
        proc = subprocess.run(
            [*_command(), "--model-version", str(built.manifest), "--host", "127.0.0.1",
             "--port", str(http_port), "--grpc-port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"kubeloop-serve: refused to start: cannot listen on 127.0.0.1:{port} (gRPC)" in (
        proc.stderr
    )


def test_sigterm_drains_in_flight_grpc_calls(tmp_path: Any) -> None:
    """Calls in flight when SIGTERM arrives are answered; health turns NOT_SERVING; new
    calls are refused; the process exits cleanly."""
    slow = build_model_version(
        tmp_path / "forest",
        estimator="RandomForestClassifier",
        hyperparameters={"n_estimators": 300},
        onnx=False,
        reference=False,
    )
    p = Process(["--model-version", str(slow.manifest), "--max-request-rows", "20000"])
    p.wait_ready()
    rows = np.tile(slow.x_test, (20000 // len(slow.x_test), 1))
    req = _matrix(rows, raw=True, proba=False)
    req.model_name = slow.spec.model
    results: list[tuple[float, Any]] = []
    channel = grpc.insecure_channel(p.grpc_target)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    t0 = time.monotonic()
    stub.ModelInfer(req, timeout=60)  # warm, and how long one call takes
    one = time.monotonic() - t0

    def call() -> None:
        try:
            resp = stub.ModelInfer(req, timeout=120)
            results.append((time.monotonic(), len(_outputs(resp)["predict"])))
        except grpc.RpcError as e:
            results.append((time.monotonic(), e.code()))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(min(one / 2, 0.5))  # the first call is being predicted, three wait their turn
    signalled = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    health = health_pb2_grpc.HealthStub(channel)
    saw_not_serving = False
    for _ in range(100):
        try:
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
        except grpc.RpcError:
            break  # the server stopped taking new calls
        if status == health_pb2.HealthCheckResponse.NOT_SERVING:
            saw_not_serving = True
            break
        time.sleep(0.02)
    for t in threads:
        t.join(timeout=120)
    late = pb.ModelInferRequest()
    late.CopyFrom(req)
    late_error: grpc.RpcError | None = None
    try:
        stub.ModelInfer(late, timeout=10)
    except grpc.RpcError as e:
        late_error = e
    channel.close()
    assert p.stop()
    assert [r for _, r in results] == [len(rows)] * 4, results
    assert any(at > signalled for at, _ in results), "no call was in flight at SIGTERM"
    assert saw_not_serving or late_error is not None
    assert late_error is not None and late_error.code() is grpc.StatusCode.UNAVAILABLE


def test_the_drain_before_a_shutdown_covers_grpc(built: BuiltModel) -> None:
    """With --drain-seconds, after SIGTERM the gRPC side says not ready (ServerReady false,
    health NOT_SERVING) and still answers ModelInfer until the drain is over, as HTTP does."""
    drain = 2.0
    p = Process(["--model-version", str(built.manifest), "--drain-seconds", str(drain)])
    p.wait_ready()
    req = _matrix(built.x_test[:2], raw=False)
    req.model_name = built.spec.model
    with grpc.insecure_channel(p.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        p.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        time.sleep(0.3)
        assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        answered = 0
        while time.monotonic() - sent < drain - 0.5:
            resp = stub.ModelInfer(req, timeout=5)
            assert len(_outputs(resp)["predict"]) == 2
            answered += 1
        assert answered > 0
    p.proc.wait(timeout=drain + 20)
    _, err = p.proc.communicate()
    assert p.proc.returncode == 0, err.decode()[-2000:]
    assert time.monotonic() - sent >= drain
