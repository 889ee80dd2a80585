"""XGBoost and LightGBM through the operator: a TrainingJob per library, served, predicting.

The real ``kubeloop-train`` (behind the kwok training pod) fits the booster, keeps its ONNX
graph only after the prediction-equality check, and the operator registers the version; an
InferenceService serves it with the real ``kubeloop-serve`` behind its pod, by ONNX Runtime.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from sklearn.datasets import load_diabetes, load_iris

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import OperatorProcess, condition, is_true, wait_for
from tests.integration.test_trainingjob import create, training_job, wait_finished

TIMEOUT = 120


def served(kube: Kube, ns: str, isvc: str) -> str | None:
    """The IP of a predictor pod of ``isvc`` whose server answers ready."""
    labels = {api.LABEL_INFERENCESERVICE: isvc}
    for p in kube.list("v1", "Pod", ns, labels=labels):
        ip = (p.get("status") or {}).get("podIP")
        if not ip or p["metadata"].get("deletionTimestamp"):
            continue
        try:
            with urllib.request.urlopen(f"http://{ip}:8080/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return str(ip)
        except OSError:
            continue
    return None


def post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_xgboost_and_lightgbm_train_register_and_serve_by_onnx(
    kube: Kube, namespace: str, artifacts_pvc: str, operator: OperatorProcess, kubelet: Any
) -> None:
    ns = namespace
    runs = {
        "xgb": ("iris", {"type": "XGBClassifier", "hyperparameters": {"n_estimators": 30}}),
        "lgbm": ("diabetes", {"type": "LGBMRegressor", "hyperparameters": {"n_estimators": 50}}),
    }
    for model, (dataset, estimator) in runs.items():
        body = training_job(ns, f"{model}-1", model=model, dataset={"builtin": dataset})
        body["spec"]["estimator"] = estimator
        body["spec"]["artifact"] = {"onnx": True}
        create(kube, body)
    for model in runs:
        done = wait_finished(kube, ns, f"{model}-1", operator)
        assert condition(done, "Succeeded")["status"] == "True", done["status"]
        mv = kube.get(api.API_VERSION, "ModelVersion", ns, f"{model}-v1")
        assert mv is not None and mv["spec"]["artifact"].get("onnxUri"), mv
        kube.patch(api.API_VERSION, "ModelVersion", ns, f"{model}-v1",
                   {"spec": {"aliases": ["production"]}})  # fmt: skip
        create(
            kube,
            {
                "apiVersion": api.API_VERSION,
                "kind": "InferenceService",
                "metadata": {"name": model, "namespace": ns},
                "spec": {"model": {"model": model, "alias": "production"}},
            },
        )
    for model in runs:
        wait_for(
            lambda m=model: is_true(kube.get(api.API_VERSION, "InferenceService", ns, m), "Ready"),
            timeout=TIMEOUT,
            what=f"InferenceService {model} Ready",
        )
    iris = load_iris()
    ip = wait_for(lambda: served(kube, ns, "xgb"), timeout=TIMEOUT, what="the xgb server")
    meta = post(f"http://{ip}:8080/v1/models/xgb:predict", {"instances": iris.data[:1].tolist()})
    labels = post(f"http://{ip}:8080/v1/models/xgb:predict", {"instances": iris.data.tolist()})
    accuracy = sum(int(p == t) for p, t in zip(labels["predictions"], iris.target, strict=True))
    assert accuracy / len(iris.target) > 0.9 and meta["predictions"] == [0]
    with urllib.request.urlopen(f"http://{ip}:8080/v2/models/xgb", timeout=5) as r:
        assert json.loads(r.read())["platform"] == "kubeloop-onnx"

    diabetes = load_diabetes()
    ip = wait_for(lambda: served(kube, ns, "lgbm"), timeout=TIMEOUT, what="the lgbm server")
    values = post(f"http://{ip}:8080/v1/models/lgbm:predict",
                  {"instances": diabetes.data[:50].tolist()})["predictions"]  # fmt: skip
    assert len(values) == 50 and all(25.0 < v < 350.0 for v in values), values
    with urllib.request.urlopen(f"http://{ip}:8080/v2/models/lgbm", timeout=5) as r:
        assert json.loads(r.read())["platform"] == "kubeloop-onnx"
