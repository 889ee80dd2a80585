"""Issue 15's capabilities on the real node: every pod in containerd, nothing simulated.

Kubeloop is installed from manifests/overlays/local (the ``installed`` fixture of
test_real_node.py); each test works in a namespace of its own with a fresh artifact volume.

- data validation before training: a reference version, then runs on a changed dataset
  that fail or warn per their policy, with the anomalies per column in their status;
- XGBoost: the shipped 200-tree sample trained in its pod, served by ONNX Runtime in a
  predictor pod, predicting through the pod's IP on the node's bridge;
- the Open Inference Protocol over gRPC: the shipped iris forest served by a predictor pod
  that answers ``inference.GRPCInferenceService/ModelInfer`` and the standard
  ``grpc.health.v1`` check through the pod's IP and the Service's ClusterIP (kube-proxy's
  rules) on the port named ``grpc`` (``appProtocol: grpc``), with the predictions its HTTP
  port gives for the same rows.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client

from kubeloop.kube import Kube
from kubeloop_runtime import api
from kubeloop_runtime.serve.oip import grpc_predict_v2_pb2 as pb
from kubeloop_runtime.serve.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.integration.harness import condition, is_true, wait_for
from tests.integration.test_real_node import (
    assert_real,
    core,
    delete_kubeloop_objects,
    installed,
    pods,
    workspace,
)
from tests.integration.test_trainingjob import training_job
from tests.integration.test_validation import _csv, _spec

__all__ = ["core", "installed"]  # fixtures, shared with test_real_node.py

TIMEOUT = 300


@pytest.fixture(scope="module")
def validation_ns(installed: None, core: client.CoreV1Api, kube: Kube) -> Iterator[str]:
    ns = "kubeloop-real-validation"
    workspace(core, kube, ns, claim=True)
    yield ns
    delete_kubeloop_objects(kube, core, ns)


def _finished(kube: Kube, ns: str, name: str) -> dict[str, Any] | None:
    obj = kube.get(api.API_VERSION, "TrainingJob", ns, name)
    c = condition(obj, "Succeeded")
    return obj if c.get("status") in ("True", "False") else None


def test_data_validation_in_real_training_pods(
    core: client.CoreV1Api, kube: Kube, validation_ns: str
) -> None:
    ns = validation_ns
    core.create_namespaced_config_map(
        ns,
        {"metadata": {"name": "data"}, "data": {"v1.csv": _csv(0), "new.csv": _csv(2, True)}},
    )
    kube.create(training_job(ns, "tab-1", model="tab", **_spec("v1.csv")))
    first = wait_for(lambda: _finished(kube, ns, "tab-1"), timeout=TIMEOUT, what="tab-1")
    assert first["status"]["reason"] == "Trained", first["status"]

    check = {"validation": {"reference": "tab-v1"}}
    kube.create(training_job(ns, "tab-fail", model="tab", **_spec("new.csv", **check)))
    warn = {"validation": {"reference": "tab-v1", "policy": "warn"}}
    kube.create(training_job(ns, "tab-warn", model="tab", **_spec("new.csv", **warn)))

    failed = wait_for(lambda: _finished(kube, ns, "tab-fail"), timeout=TIMEOUT, what="tab-fail")
    assert condition(failed, "Succeeded")["reason"] == "DataValidationFailed", failed["status"]
    dv = condition(failed, "DataValidated")
    assert (dv["status"], dv["reason"]) == ("False", "AnomaliesFound"), dv
    assert "color: UnseenCategory" in dv["message"] and "x2: OutOfRange" in dv["message"]
    warned = wait_for(lambda: _finished(kube, ns, "tab-warn"), timeout=TIMEOUT, what="tab-warn")
    assert condition(warned, "Succeeded")["status"] == "True", warned["status"]
    assert warned["status"]["validation"]["total"] == 2
    for name in ("tab-1", "tab-fail", "tab-warn"):
        (pod,) = pods(core, ns, f"{api.LABEL_TRAININGJOB}={name}")
        assert_real(pod)


REPO = Path(__file__).resolve().parents[2]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1]]


def _serve(
    core: client.CoreV1Api, kube: Kube, ns: str, name: str, model: dict[str, str]
) -> client.V1Pod:
    """An InferenceService of ``model``, Ready; its one predictor pod, checked real."""
    kube.create(
        {
            "apiVersion": api.API_VERSION,
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"model": model},
        }
    )
    wait_for(
        lambda: is_true(kube.get(api.API_VERSION, "InferenceService", ns, name), "Ready"),
        timeout=TIMEOUT,
        what=f"InferenceService {name} Ready",
    )
    (pod,) = pods(core, ns, f"{api.LABEL_INFERENCESERVICE}={name}")
    assert_real(pod)
    return pod


def test_xgboost_sample_trains_and_serves_by_onnx_in_real_pods(
    core: client.CoreV1Api, kube: Kube, validation_ns: str
) -> None:
    ns = validation_ns
    sample = yaml.safe_load((REPO / "manifests/samples/trainingjob-iris-xgboost.yaml").read_text())
    sample["metadata"]["namespace"] = ns
    kube.create(sample)
    done = wait_for(lambda: _finished(kube, ns, "iris-xgb"), timeout=TIMEOUT, what="iris-xgb")
    assert condition(done, "Succeeded")["status"] == "True", done["status"]
    mv = kube.get(api.API_VERSION, "ModelVersion", ns, "iris-xgb-v1")
    assert mv is not None and mv["spec"]["artifact"].get("onnxUri"), mv
    kube.patch(api.API_VERSION, "ModelVersion", ns, "iris-xgb-v1",
               {"spec": {"aliases": ["production"]}})  # fmt: skip
    pod = _serve(core, kube, ns, "iris-xgb", {"model": "iris-xgb", "alias": "production"})
    base = f"http://{pod.status.pod_ip}:8080"
    req = urllib.request.Request(
        f"{base}/v1/models/iris-xgb:predict",
        data=json.dumps({"instances": IRIS_ROWS}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read())["predictions"] == [0, 1, 2]
    with urllib.request.urlopen(f"{base}/v2/models/iris-xgb", timeout=10) as r:
        assert json.loads(r.read())["platform"] == "kubeloop-onnx"
    (train_pod,) = pods(core, ns, f"{api.LABEL_TRAININGJOB}=iris-xgb")
    assert_real(train_pod)


GRPC_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.9, 3.1, 5.4, 2.1], [5.9, 3.0, 5.1, 1.8]]


def _infer(target: str, *, raw: bool) -> pb.ModelInferResponse:
    req = pb.ModelInferRequest(model_name="iris-grpc", id="real-grpc")
    t = req.inputs.add(name="x", datatype="FP64", shape=[len(GRPC_ROWS), 4])
    flat = [v for row in GRPC_ROWS for v in row]
    if raw:
        req.raw_input_contents.append(np.asarray(flat, dtype="<f8").tobytes())
    else:
        t.contents.fp64_contents.extend(flat)
    req.parameters["probabilities"].bool_param = True
    with grpc.insecure_channel(target) as channel:
        resp: pb.ModelInferResponse = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            req, timeout=10
        )
        return resp


def _try_infer(target: str) -> pb.ModelInferResponse | None:
    try:
        return _infer(target, raw=False)
    except grpc.RpcError:
        return None


def _labels(resp: pb.ModelInferResponse) -> list[int]:
    if resp.raw_output_contents:
        return np.frombuffer(resp.raw_output_contents[0], dtype="<i8").tolist()
    return list(resp.outputs[0].contents.int64_contents)


def test_model_infer_and_health_over_grpc_in_a_real_predictor_pod(
    core: client.CoreV1Api, kube: Kube, validation_ns: str
) -> None:
    ns = validation_ns
    sample = yaml.safe_load((REPO / "manifests/samples/trainingjob-iris.yaml").read_text())
    sample["metadata"].update(name="iris-grpc", namespace=ns)
    sample["spec"]["model"] = "iris-grpc"
    kube.create(sample)
    done = wait_for(lambda: _finished(kube, ns, "iris-grpc"), timeout=TIMEOUT, what="training")
    assert condition(done, "Succeeded")["status"] == "True", done["status"]
    pod = _serve(core, kube, ns, "iris-grpc", {"modelVersion": "iris-grpc-v1"})
    (container,) = pod.spec.containers
    assert [(p.name, p.container_port) for p in container.ports] == [("http", 8080), ("grpc", 8081)]
    svc = core.read_namespaced_service("iris-grpc-predictor", ns)
    (port,) = [p for p in svc.spec.ports if p.name == "grpc"]
    assert (port.port, port.target_port, port.app_protocol) == (8081, "grpc", "grpc")

    # HTTP's answer for the same rows, through the pod's IP.
    req = urllib.request.Request(
        f"http://{pod.status.pod_ip}:8080/v1/models/iris-grpc:predict?probabilities=true",
        data=json.dumps({"instances": GRPC_ROWS}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        http = json.loads(r.read())
    assert len(http["predictions"]) == len(GRPC_ROWS)

    for target in (f"{pod.status.pod_ip}:8081", f"{svc.spec.cluster_ip}:{port.port}"):
        resp = wait_for(lambda t=target: _try_infer(t), timeout=30, what=f"ModelInfer at {target}")
        assert resp.id == "real-grpc" and resp.model_version == "1"
        assert _labels(resp) == http["predictions"], target
        proba = list(resp.outputs[1].contents.fp64_contents)
        assert proba == [p for row in http["probabilities"] for p in row], target
        assert _labels(_infer(target, raw=True)) == http["predictions"], target
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "inference.GRPCInferenceService"):
                got = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert got.status == health_pb2.HealthCheckResponse.SERVING, (target, service)
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelReady(pb.ModelReadyRequest(name="iris-grpc"), timeout=10).ready
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(pb.ModelInferRequest(model_name="iris"), timeout=10)
            assert e.value.code() is grpc.StatusCode.NOT_FOUND

    # Both protocols counted by the one server.
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/metrics", timeout=10) as r:
        text = r.read().decode()
    grpc_ok = [
        line
        for line in text.splitlines()
        if line.startswith("kubeloop_serving_requests_total{")
        and 'protocol="grpc"' in line
        and 'code="200"' in line
    ]
    assert len(grpc_ok) == 1 and float(grpc_ok[0].rsplit(" ", 1)[1]) >= 4.0, grpc_ok
