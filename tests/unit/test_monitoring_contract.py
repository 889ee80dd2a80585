"""The /monitoring contract end to end: the real server's answer, read by the operator's parser.

The server is the real kubeloop-serve app (in-process, over ASGI), configured from the
``KUBELOOP_SERVING`` the operator's predictor builder writes; the parser is the one the
closed loop runs (``kubeloop.signals``). No hand-written documents.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from kubeloop import signals
from kubeloop.builders import predictor
from kubeloop_runtime import api
from kubeloop_runtime.serve.settings import parse_settings
from kubeloop_runtime.serve.testing import BuiltModel, build_model_version
from tests.unit.test_serve_app import Server, _v2


def isvc_spec(window: int) -> api.InferenceServiceSpec:
    return api.InferenceServiceSpec.model_validate(
        {
            "model": {"modelVersion": "m-v1"},
            "monitoring": {"drift": {"windowSize": max(window, 50)}},
            "maxBatchSize": 8,
        }
    )


def serve(runner: asyncio.Runner, model: BuiltModel, role: predictor.Role) -> Server:
    """The server as a predictor pod runs it: the environment the builder writes."""
    spec = isvc_spec(len(model.x_test))
    env = {
        api.ENV_SERVING: predictor.serving_env(spec, "shop", role),
        api.ENV_SERVED_NAME: "shop",
    }
    return Server(runner, parse_settings(["--model-version", str(model.manifest)], env))


def monitoring(srv: Server) -> tuple[bytes, api.MonitoringDocument]:
    raw = srv.request("GET", "/v2/models/shop/monitoring").content
    doc = signals.parse_monitoring(raw)
    assert doc is not None, raw
    return raw, doc


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltModel]:
    root: Path = tmp_path_factory.mktemp("contract")
    return {
        "iris": build_model_version(root / "iris", dataset="iris"),
        "diabetes": build_model_version(root / "diabetes", dataset="diabetes", estimator="Ridge"),
        "plain": build_model_version(root / "plain", dataset="iris", reference=False, onnx=False),
    }


def test_classifier_drift_and_accuracy_reach_the_loop(
    runner: asyncio.Runner, built: dict[str, BuiltModel]
) -> None:
    model = built["iris"]
    srv = serve(runner, model, "canary")
    x, y = model.x_test.copy(), model.y_test
    x[:, 2:] += 10.0  # petal length and width far outside the training range: half drifts
    r = srv.request("POST", "/v2/models/shop/infer", body=_v2(x))
    assert r.status_code == 200, r.text
    predicted = r.json()["outputs"][0]["data"]
    fb = srv.request(
        "POST", "/v2/models/shop/feedback", body={"id": r.json()["id"], "labels": y.tolist()}
    )
    assert fb.status_code == 200, fb.text
    correct = sum(int(p == t) for p, t in zip(predicted, y.tolist(), strict=True))

    raw, doc = monitoring(srv)
    body = json.loads(raw)
    # Lossless: the parsed document is exactly what the server wrote.
    assert doc.wire() == body
    # The writer drops nothing: every feedback and drift field it has is in the contract.
    assert set(body["feedback"]) == set(api.FeedbackStats.model_fields)
    assert set(body["drift"]) == set(api.DriftSummary.model_fields)
    assert (doc.role, doc.inference_service, doc.name) == ("canary", "shop", "shop")

    s = signals.aggregate_monitoring([doc])
    assert s.pods == 1 and s.drift is True
    assert s.drifted_features == ("petal length (cm)", "petal width (cm)")
    assert s.drift_share == body["drift"]["share_drifted"]
    assert s.accuracy == correct / len(y) and s.accuracy_count == len(y)
    assert s.live_error is None

    # The canary's numbers: the real /metrics page and the same document.
    page = srv.request("GET", "/metrics").text
    stats = signals.canary_stats([signals.parse_metrics(page)], [doc])
    assert (stats.requests, stats.errors) == (1, 0)
    assert stats.p99_latency is not None and stats.p99_latency > 0
    assert stats.accuracy == s.accuracy and stats.accuracy_count == len(y)


def test_regressor_live_error_is_the_servers_rmse(
    runner: asyncio.Runner, built: dict[str, BuiltModel]
) -> None:
    model = built["diabetes"]
    srv = serve(runner, model, "stable")
    r = srv.request("POST", "/v2/models/shop/infer", body=_v2(model.x_test[:20]))
    assert r.status_code == 200, r.text
    preds = np.array(r.json()["outputs"][0]["data"])
    truth = model.y_test[:20].astype(float)
    fb = srv.request(
        "POST", "/v2/models/shop/feedback", body={"id": r.json()["id"], "labels": truth.tolist()}
    )
    assert fb.status_code == 200, fb.text
    _, doc = monitoring(srv)
    s = signals.aggregate_monitoring([doc])
    assert doc.feedback is not None and doc.feedback.errors.rmse is not None
    assert s.live_error == pytest.approx(float(np.sqrt(np.mean((preds - truth) ** 2))))
    assert s.live_error == pytest.approx(doc.feedback.errors.rmse, rel=1e-12)
    assert s.accuracy is None and s.accuracy_count == 20
    # Not enough rows in the window yet (20 < 30): drift does not decide.
    assert s.drift is None


def test_without_reference_statistics_drift_is_off(
    runner: asyncio.Runner, built: dict[str, BuiltModel]
) -> None:
    srv = serve(runner, built["plain"], "stable")
    raw, doc = monitoring(srv)
    assert json.loads(raw)["drift"] == {"enabled": False}
    assert doc.skew is None
    s = signals.aggregate_monitoring([doc])
    assert (s.pods, s.drift, s.drift_share, s.drifted_features) == (1, None, None, ())
