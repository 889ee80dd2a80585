"""Issue 15's capabilities on the real node: every pod in containerd, nothing simulated.

Kubeloop is installed from manifests/overlays/local (the ``installed`` fixture of
test_real_node.py); each test works in a namespace of its own with a fresh artifact volume.

- data validation before training: a reference version, then runs on a changed dataset
  that fail or warn per their policy, with the anomalies per column in their status;
- XGBoost: the shipped 200-tree sample trained in its pod, served by ONNX Runtime in a
  predictor pod, predicting through the pod's IP on the node's bridge.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubeloop.kube import Kube
from kubeloop_runtime import api
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
    kube.create(
        {
            "apiVersion": api.API_VERSION,
            "kind": "InferenceService",
            "metadata": {"name": "iris-xgb", "namespace": ns},
            "spec": {"model": {"model": "iris-xgb", "alias": "production"}},
        }
    )
    wait_for(
        lambda: is_true(kube.get(api.API_VERSION, "InferenceService", ns, "iris-xgb"), "Ready"),
        timeout=TIMEOUT,
        what="InferenceService iris-xgb Ready",
    )
    (pod,) = pods(core, ns, f"{api.LABEL_INFERENCESERVICE}=iris-xgb")
    assert_real(pod)
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
