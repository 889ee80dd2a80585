"""The model server through its ASGI interface: predictions, validation, metrics.

Models are trained in a temporary directory (iris, diabetes) and served in process; the
app is driven by httpx's ASGI transport on one event loop for the whole module.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from kubeloop_runtime.serve import metrics as m
from kubeloop_runtime.serve.cli import build
from kubeloop_runtime.serve.settings import ServeSettings, parse_settings
from kubeloop_runtime.serve.testing import BuiltModel, build_model_version


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltModel]:
    root = tmp_path_factory.mktemp("serve-models")
    return {
        "iris": build_model_version(root / "iris", dataset="iris", estimator="LogisticRegression"),
        "forest": build_model_version(
            root / "forest",
            dataset="iris",
            estimator="RandomForestClassifier",
            hyperparameters={"n_estimators": 20},
            onnx=False,
            name="iris-forest",
        ),
        "diabetes": build_model_version(root / "diabetes", dataset="diabetes", estimator="Ridge"),
    }


class Server:
    """One app instance, its registry and an ASGI client."""

    def __init__(self, runner: asyncio.Runner, settings: ServeSettings) -> None:
        self.runner = runner
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=False)
        self.app, self.dataplane, _ = build(settings, self.registry)
        self.name = settings.served_name

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                hdrs = {"content-type": "application/json", **(headers or {})}
                data = (
                    content
                    if content is not None
                    else (json.dumps(body).encode() if body is not None else None)
                )
                return await c.request(method, path, content=data, headers=hdrs)

        return self.runner.run(go())

    def sample(self, name: str, labels: dict[str, str]) -> float | None:
        return self.registry.get_sample_value(name, labels)


def _settings(model: BuiltModel, *extra: str, env: dict[str, str] | None = None) -> ServeSettings:
    return parse_settings(["--model-version", str(model.manifest), *extra], env or {})


@pytest.fixture(scope="module")
def iris(runner: asyncio.Runner, models: dict[str, BuiltModel]) -> Server:
    return Server(runner, _settings(models["iris"], "--name", "iris"))


@pytest.fixture(scope="module")
def forest(runner: asyncio.Runner, models: dict[str, BuiltModel]) -> Server:
    return Server(runner, _settings(models["forest"]))


@pytest.fixture(scope="module")
def diabetes(runner: asyncio.Runner, models: dict[str, BuiltModel]) -> Server:
    return Server(runner, _settings(models["diabetes"]))


def _v2(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}
        ],
        **extra,
    }


# ------------------------------------------------------------------------- predictions


def test_runtimes_follow_the_model_version(iris: Server, forest: Server, diabetes: Server) -> None:
    assert iris.dataplane.model.runtime == "onnx"
    assert forest.dataplane.model.runtime == "sklearn"
    assert diabetes.dataplane.model.runtime == "onnx"


@pytest.mark.parametrize("server", ["iris", "forest"])
def test_v2_predictions_equal_the_estimator(
    server: str, request: pytest.FixtureRequest, models: dict[str, BuiltModel]
) -> None:
    srv: Server = request.getfixturevalue(server)
    built = models[server]
    r = srv.request("POST", f"/v2/models/{srv.name}/infer", body=_v2(built.x_test))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == srv.name
    assert doc["model_version"] == "1"
    (out,) = doc["outputs"]
    assert out["name"] == "predict" and out["datatype"] == "INT64"
    assert out["shape"] == [len(built.x_test)]
    expected = built.estimator.predict(_frame(built))
    assert out["data"] == expected.tolist()


def _frame(built: BuiltModel) -> Any:
    import pandas as pd

    return pd.DataFrame(built.x_test, columns=built.feature_names)


def test_v2_regression_equals_the_estimator(
    diabetes: Server, models: dict[str, BuiltModel]
) -> None:
    built = models["diabetes"]
    r = diabetes.request("POST", f"/v2/models/{diabetes.name}/infer", body=_v2(built.x_test))
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["datatype"] == "FP64"
    np.testing.assert_allclose(out["data"], built.estimator.predict(_frame(built)), rtol=1e-9)


def test_v2_probabilities_nested_data_and_version_path(
    iris: Server, models: dict[str, BuiltModel]
) -> None:
    built = models["iris"]
    x = built.x_test[:7]
    body = {
        "inputs": [{"name": "x", "shape": [7, 4], "datatype": "FP32", "data": x.tolist()}],
        "outputs": [{"name": "predict_proba"}, {"name": "predict"}],
    }
    r = iris.request("POST", "/v2/models/iris/versions/1/infer", body=body)
    assert r.status_code == 200, r.text
    proba, labels = r.json()["outputs"]
    assert proba["name"] == "predict_proba" and proba["shape"] == [7, 3]
    expected = built.estimator.predict_proba(_frame(built)[:7])
    np.testing.assert_allclose(np.array(proba["data"]).reshape(7, 3), expected, atol=1e-6)
    assert labels["data"] == built.estimator.predict(_frame(built)[:7]).tolist()
    # The parameters flag asks for both outputs.
    r = iris.request(
        "POST", "/v2/models/iris/infer", body=_v2(x, parameters={"probabilities": True})
    )
    assert [o["name"] for o in r.json()["outputs"]] == ["predict", "predict_proba"]


def test_v2_named_column_inputs(forest: Server, models: dict[str, BuiltModel]) -> None:
    built = models["forest"]
    x = built.x_test[:5]
    inputs = [
        {"name": f, "shape": [5] if k % 2 else [5, 1], "datatype": "FP64",
         "data": x[:, k].tolist() if k % 2 else [[v] for v in x[:, k]]}
        for k, f in reversed(list(enumerate(built.feature_names)))
    ]  # fmt: skip
    r = forest.request("POST", f"/v2/models/{forest.name}/infer", body={"inputs": inputs})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == built.estimator.predict(_frame(built)[:5]).tolist()


def test_v1_rows_objects_and_probabilities(forest: Server, models: dict[str, BuiltModel]) -> None:
    built = models["forest"]
    frame = _frame(built)
    rows = built.x_test.tolist()
    r = forest.request("POST", f"/v1/models/{forest.name}:predict", body={"instances": rows})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == built.estimator.predict(frame).tolist()
    assert "probabilities" not in r.json()
    objects = [dict(zip(built.feature_names, row, strict=True)) for row in rows[:4]]
    r = forest.request(
        "POST", f"/v1/models/{forest.name}:predict?probabilities=true", body={"instances": objects}
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["probabilities"], built.estimator.predict_proba(frame[:4]))
    r = forest.request(
        "POST",
        f"/v1/models/{forest.name}:predict",
        body={"instances": rows[:2], "probabilities": True},
    )
    assert len(r.json()["probabilities"]) == 2


def test_request_ids(iris: Server, models: dict[str, BuiltModel]) -> None:
    rows = models["iris"].x_test[:1].tolist()
    r = iris.request("POST", "/v1/models/iris:predict", body={"instances": rows})
    generated = r.headers["x-request-id"]
    assert len(generated) >= 8 and r.json()["id"] == generated
    r2 = iris.request("POST", "/v1/models/iris:predict", body={"instances": rows})
    assert r2.headers["x-request-id"] != generated
    r = iris.request(
        "POST",
        "/v1/models/iris:predict",
        body={"instances": rows},
        headers={"x-request-id": "abc-1"},
    )
    assert r.headers["x-request-id"] == "abc-1" and r.json()["id"] == "abc-1"
    r = iris.request("POST", "/v2/models/iris/infer", body=_v2(np.array(rows), id="req-7"))
    assert r.json()["id"] == "req-7" and r.headers["x-request-id"] == "req-7"


def test_metadata_health_and_openapi(iris: Server) -> None:
    assert iris.request("GET", "/v2/health/live").json() == {"live": True}
    assert iris.request("GET", "/v2/health/ready").json() == {"ready": True}
    assert iris.request("GET", "/v2/models/iris/ready").status_code == 200
    meta = iris.request("GET", "/v2/models/iris").json()
    assert meta["name"] == "iris" and meta["versions"] == ["1"]
    assert meta["platform"] == "kubeloop-onnx"
    assert meta["inputs"][0]["name"] == "sepal length (cm)"
    assert meta["outputs"][1]["parameters"]["classes"] == [0, 1, 2]
    assert iris.request("GET", "/v2/models/iris/versions/1").status_code == 200
    assert iris.request("GET", "/v1/models/iris").json() == {"name": "iris", "ready": True}
    doc = iris.request("GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.0")
    for path in ("/v2/models/{name}/infer", "/v1/models/{name}:predict", "/metrics"):
        assert path in doc["paths"]


# ------------------------------------------------------------------------- bad input

ROW = [5.1, 3.5, 1.4, 0.2]


def _t(data: Any, shape: Any = None, datatype: Any = "FP64", **extra: Any) -> dict[str, Any]:
    t = {"name": "x", "shape": shape if shape is not None else [1, 4], "datatype": datatype,
         "data": data, **extra}  # fmt: skip
    return {"inputs": [t]}


BAD: list[tuple[str, str, str, Any, int, str]] = [
    # (id, method, path, body (bytes = raw), status, error fragment)
    ("v1-bool", "POST", "/v1/models/iris:predict", {"instances": [[5.1, 3.5, True, 0.2]]}, 400,
     "expected a number, got true"),
    ("v1-string", "POST", "/v1/models/iris:predict", {"instances": [[5.1, "3.5", 1.4, 0.2]]}, 400,
     "feature 'sepal width (cm)'"),
    ("v1-null", "POST", "/v1/models/iris:predict", {"instances": [[5.1, None, 1.4, 0.2]]}, 400,
     "got null"),
    ("v1-too-few", "POST", "/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4]]}, 400,
     "expected 4 features"),
    ("v1-empty", "POST", "/v1/models/iris:predict", {"instances": []}, 400, "empty batch"),
    ("v1-missing-key", "POST", "/v1/models/iris:predict", {"predictions": [ROW]}, 400,
     "'instances' is required"),
    ("v1-unknown-name", "POST", "/v1/models/iris:predict",
     {"instances": [{"sepal length (cm)": 1, "a": 2, "b": 3, "c": 4}]}, 400, "unknown feature"),
    ("v1-nan", "POST", "/v1/models/iris:predict", b'{"instances": [[NaN, 1, 2, 3]]}', 400,
     "malformed JSON"),
    ("v1-inf", "POST", "/v1/models/iris:predict", b'{"instances": [[Infinity, 1, 2, 3]]}', 400,
     "malformed JSON"),
    ("v1-overflow", "POST", "/v1/models/iris:predict", b'{"instances": [[1e999, 1, 2, 3]]}', 400,
     "malformed JSON"),
    ("malformed", "POST", "/v2/models/iris/infer", b'{"inputs": [', 400, "malformed JSON"),
    ("empty-body", "POST", "/v2/models/iris/infer", b"", 400, "empty"),
    ("v2-shape", "POST", "/v2/models/iris/infer", _t(ROW, shape=[2, 4]), 400,
     "do not match shape"),
    ("v2-width", "POST", "/v2/models/iris/infer", _t(ROW[:3], shape=[1, 3]), 400,
     "expected [N, 4]"),
    ("v2-datatype", "POST", "/v2/models/iris/infer", _t(ROW, datatype="FP128"), 400,
     "datatype"),
    ("v2-int-float", "POST", "/v2/models/iris/infer", _t(ROW, datatype="INT64"), 400,
     "holds integers"),
    ("v2-bool", "POST", "/v2/models/iris/infer", _t([5.1, 3.5, False, 0.2]), 400, "got false"),
    ("v2-bytes-for-numbers", "POST", "/v2/models/iris/infer",
     _t(["5.1", "3.5", "1.4", "0.2"], datatype="BYTES"), 400, "BYTES cannot carry feature"),
    ("v2-empty", "POST", "/v2/models/iris/infer", _t([], shape=[0, 4]), 400, "empty batch"),
    ("v2-no-inputs", "POST", "/v2/models/iris/infer", {"inputs": []}, 400, "inputs"),
    ("v2-bad-output", "POST", "/v2/models/iris/infer", {**_t(ROW), "outputs": [{"name": "x"}]},
     400, "unknown output"),
    ("v2-columns-missing", "POST", "/v2/models/iris/infer",
     {"inputs": [{"name": "sepal length (cm)", "shape": [1], "datatype": "FP64", "data": [1]},
                 {"name": "petal length (cm)", "shape": [1], "datatype": "FP64", "data": [1]}]},
     400, "missing feature(s) 'sepal width (cm)', 'petal width (cm)'"),
    ("v2-too-many-rows", "POST", "/v2/models/iris/infer", _t(ROW * 11, shape=[11, 4]), 400,
     "exceed the limit of 10"),
    ("unknown-model", "POST", "/v2/models/nope/infer", _t(ROW), 404, "'nope' not found"),
    ("unknown-version", "POST", "/v2/models/iris/versions/9/infer", _t(ROW), 404, "version"),
    ("v1-unknown-model", "POST", "/v1/models/nope:predict", {"instances": [ROW]}, 404, "not found"),
    ("unknown-route", "GET", "/v3/what", None, 404, "no route"),
    ("wrong-method", "GET", "/v2/models/iris/infer", None, 405, "use POST"),
    ("wrong-method-v1", "PUT", "/v1/models/iris:predict", {"instances": [ROW]}, 405, "POST"),
    ("wrong-method-health", "POST", "/v2/health/ready", None, 405, "GET"),
]  # fmt: skip


@pytest.fixture(scope="module")
def strict_iris(runner: asyncio.Runner, models: dict[str, BuiltModel]) -> Server:
    return Server(
        runner,
        _settings(models["iris"], "--name", "iris", "--max-request-rows", "10",
                  "--max-body-bytes", "4096"),
    )  # fmt: skip


@pytest.mark.parametrize(("case", "method", "path", "body", "status", "fragment"), BAD,
                         ids=[b[0] for b in BAD])  # fmt: skip
def test_bad_requests_are_4xx_naming_the_problem(
    strict_iris: Server, case: str, method: str, path: str, body: Any, status: int, fragment: str
) -> None:
    if isinstance(body, bytes):
        r = strict_iris.request(method, path, content=body)
    else:
        r = strict_iris.request(method, path, body=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert fragment in r.json()["error"]
    if status == 405:
        assert r.headers["allow"]


def test_wrong_content_type_is_415(strict_iris: Server) -> None:
    r = strict_iris.request(
        "POST", "/v1/models/iris:predict", content=b"instances=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert r.status_code == 415 and "application/json" in r.json()["error"]


def test_oversized_body_is_413(strict_iris: Server) -> None:
    body = json.dumps({"instances": [ROW] * 500}).encode()
    assert len(body) > 4096
    r = strict_iris.request("POST", "/v1/models/iris:predict", content=body)
    assert r.status_code == 413 and "4096" in r.json()["error"]


def test_probabilities_of_a_regressor_are_refused(diabetes: Server, models: dict[str, Any]) -> None:
    x = models["diabetes"].x_test[:1]
    r = diabetes.request(
        "POST",
        f"/v2/models/{diabetes.name}/infer",
        body=_v2(x, outputs=[{"name": "predict_proba"}]),
    )
    assert r.status_code == 400 and "regressor" in r.json()["error"]


# ------------------------------------------------------------------------- metrics


def test_metrics_are_counted_in_the_registry(
    runner: asyncio.Runner, models: dict[str, BuiltModel]
) -> None:
    srv = Server(runner, _settings(models["iris"], "--name", "iris"))
    base = {"model": "iris", "version": "1"}
    x = models["iris"].x_test[:6]
    for _ in range(3):
        assert srv.request("POST", "/v2/models/iris/infer", body=_v2(x)).status_code == 200
    srv.request("POST", "/v1/models/iris:predict", body={"instances": [[1, 2, True, 4]]})
    assert srv.sample(m.REQUESTS_TOTAL, {**base, "protocol": "v2", "code": "200"}) == 3
    assert srv.sample(m.REQUESTS_TOTAL, {**base, "protocol": "v1", "code": "400"}) == 1
    assert srv.sample(m.REQUEST_DURATION_SECONDS + "_count", {**base, "protocol": "v2"}) == 3
    assert srv.sample(m.BATCH_SIZE + "_sum", base) == 18
    predicted = srv.dataplane.model.predict(x).labels
    for c in (0, 1, 2):
        n = srv.sample(m.PREDICTIONS_TOTAL, {**base, "class": str(c)})
        assert n == 3 * int(np.sum(predicted == c))
    sha = models["iris"].spec.artifact.sha256[:12]
    info = {**base, "sha256": sha, "role": "stable", "runtime": "onnx"}
    assert srv.sample(m.MODEL_INFO, info) == 1
    assert srv.sample(m.KSERVE_PREDICT_SECONDS + "_count", {"model_name": "iris"}) == 3
    text = srv.request("GET", "/metrics").text
    assert 'kubeloop_serving_requests_total{code="200"' in text


def test_regression_values_are_observed(
    runner: asyncio.Runner, models: dict[str, BuiltModel]
) -> None:
    srv = Server(runner, _settings(models["diabetes"]))
    x = models["diabetes"].x_test[:5]
    srv.request("POST", f"/v2/models/{srv.name}/infer", body=_v2(x))
    labels = {"model": srv.name, "version": "1"}
    assert srv.sample(m.PREDICTION_VALUE + "_count", labels) == 5


# ------------------------------------------------------------------------- monitoring


def test_drift_report_and_gauges_on_scrape(
    runner: asyncio.Runner, models: dict[str, BuiltModel]
) -> None:
    env = {"KUBELOOP_SERVING": json.dumps({"monitoring": {"drift": {"windowSize": 50}}})}
    srv = Server(runner, _settings(models["iris"], "--name", "iris", env=env))
    shifted = models["iris"].x_test.copy()
    shifted[:, 2] += 10.0  # petal length far outside the training range
    for _ in range(2):
        srv.request("POST", "/v2/models/iris/infer", body=_v2(shifted))
    report = srv.request("GET", "/v2/models/iris/drift").json()
    assert report["enabled"] is True and report["window_count"] == 50
    by_name = {f["name"]: f for f in report["features"]}
    assert by_name["petal length (cm)"]["drifted"] is True
    assert by_name["sepal length (cm)"]["drifted"] is False
    base = {"model": "iris", "version": "1"}
    feat = {**base, "feature": "petal length (cm)"}
    assert srv.sample(m.FEATURE_DRIFTED, feat) == 1.0
    assert srv.sample(m.DRIFT_SCORE, {**feat, "method": "psi"}) > 0.1
    assert srv.sample(m.DRIFT_WINDOW_ROWS, base) == 50
    assert srv.sample(m.DRIFT_SHARE, base) == report["share_drifted"]
    mon = srv.request("GET", "/v2/models/iris/monitoring").json()
    assert mon["drift"]["window_count"] == 50 and mon["version"] == "1"
    assert mon["drift"]["drifted_features"] == report["drifted_features"]
    # Training-serving skew: the same window through data validation's checks.
    skew = {(a["column"], a["kind"]) for a in mon["skew"]["anomalies"]}
    assert {("petal length (cm)", "OutOfRange"), ("petal length (cm)", "Drift")} <= skew
    assert not any(c == "sepal length (cm)" for c, _ in skew), skew
    assert mon["skew"]["enough_data"] is True and mon["skew"]["total"] == len(skew)


def test_feedback_round_trip(runner: asyncio.Runner, models: dict[str, BuiltModel]) -> None:
    srv = Server(runner, _settings(models["iris"], "--name", "iris"))
    built = models["iris"]
    x, y = built.x_test[:10], built.y_test[:10]
    r = srv.request("POST", "/v2/models/iris/infer", body=_v2(x))
    rid = r.json()["id"]
    predicted = r.json()["outputs"][0]["data"]
    r = srv.request("POST", "/v2/models/iris/feedback", body={"id": rid, "labels": y.tolist()})
    assert r.status_code == 200, r.text
    correct = sum(int(p == t) for p, t in zip(predicted, y.tolist(), strict=True))
    assert r.json()["correct"] == correct
    base = {"model": "iris", "version": "1"}
    assert srv.sample(m.LIVE_ACCURACY, base) == pytest.approx(correct / 10)
    assert srv.sample(m.FEEDBACK_TOTAL, {**base, "result": "correct"}) == correct
    assert srv.sample(m.FEEDBACK_TOTAL, {**base, "result": "incorrect"}) == 10 - correct
    # The same id twice is a conflict; an unknown id is 404; wrong count is 422.
    again = srv.request("POST", "/v2/models/iris/feedback", body={"id": rid, "labels": y.tolist()})
    assert again.status_code == 409
    r = srv.request("POST", "/v2/models/iris/feedback", body={"id": "nope", "labels": [1]})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r2 = srv.request("POST", "/v2/models/iris/infer", body=_v2(x[:2]))
    r = srv.request("POST", "/v2/models/iris/feedback", body={"id": r2.json()["id"], "labels": [1]})
    assert r.status_code == 422 and "expected 2" in r.json()["error"]
    r = srv.request("POST", "/v2/models/iris/feedback", body={"id": rid, "labels": ["setosa"]})
    assert r.status_code == 400 and "int64" in r.json()["error"]
    mon = srv.request("GET", "/v2/models/iris/monitoring").json()
    assert mon["feedback"]["accuracy"] == pytest.approx(correct / 10)
    assert srv.sample(m.FEEDBACK_TOTAL, {**base, "result": "duplicate"}) == 1


def test_regression_feedback_reports_errors(
    runner: asyncio.Runner, models: dict[str, BuiltModel]
) -> None:
    srv = Server(runner, _settings(models["diabetes"]))
    built = models["diabetes"]
    r = srv.request("POST", f"/v2/models/{srv.name}/infer", body=_v2(built.x_test[:5]))
    preds = np.array(r.json()["outputs"][0]["data"])
    truth = built.y_test[:5].astype(float)
    r = srv.request(
        "POST",
        f"/v2/models/{srv.name}/feedback",
        body={"id": r.json()["id"], "labels": truth.tolist()},
    )
    assert r.status_code == 200, r.text
    base = {"model": srv.name, "version": "1"}
    mae = float(np.mean(np.abs(truth - preds)))
    assert srv.sample(m.LIVE_ERROR, {**base, "metric": "mae"}) == pytest.approx(mae)
    assert srv.sample(m.LIVE_ERROR, {**base, "metric": "rmse"}) == pytest.approx(
        float(np.sqrt(np.mean((truth - preds) ** 2)))
    )


DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def _doc_requests() -> list[tuple[str, dict[str, Any]]]:
    """(path, body) of every `curl ... localhost:8080<path> ... -d '<json>'` in the docs."""
    text = DOC.read_text().replace("\\\n", " ")
    found = []
    for hit in re.finditer(r"curl -s '?localhost:8080(\S+?)'? [^\n]*?-d '(.*?)'", text, re.S):
        found.append((hit.group(1), json.loads(hit.group(2))))
    return found


def test_documented_requests_work(runner: asyncio.Runner, models: dict[str, BuiltModel]) -> None:
    from kubeloop_runtime.feedback import RequestIdGenerator

    srv = Server(runner, _settings(models["iris"], "--name", "iris"))
    srv.dataplane._new_id = RequestIdGenerator(prefix="3f9c0a1e52d4")  # the ids in the docs
    requests = _doc_requests()
    assert len(requests) >= 5
    paths = set()
    for path, body in requests:
        r = srv.request("POST", path, body=body)
        assert r.status_code == 200, (path, r.text)
        paths.add(path.split("?")[0])
    assert paths >= {
        "/v2/models/iris/infer",
        "/v1/models/iris:predict",
        "/v2/models/iris/feedback",
    }


def test_int64_feature_out_of_range_is_a_400_not_a_wrapped_value() -> None:
    """An int64 feature beyond the int64 range would wrap silently when cast: refuse it."""
    from kubeloop_runtime import api
    from kubeloop_runtime.serve.errors import InvalidInputError
    from kubeloop_runtime.serve.protocol import Codec

    sig = api.Signature(
        inputs=[
            api.FeatureSpec(name="n", dtype="int64"),
            api.FeatureSpec(name="x", dtype="float64"),
        ],
        output=api.OutputSpec(dtype="float64"),
    )
    codec = Codec(sig, api.Task.REGRESSION, max_rows=10, n_classes=0)
    ok = codec.decode_v1({"instances": [[2**63 - 1, 1.0], [-(2**63), 2.0], [3.0, 0]]}, False)
    assert ok.x.shape == (3, 2)
    for bad in (2**63, -(2**63) - 1, 1e30):
        with pytest.raises(InvalidInputError, match=r"instances\[0\]\[0\].*int64 range"):
            codec.decode_v1({"instances": [[bad, 1.0]]}, False)
        with pytest.raises(InvalidInputError, match=r"instances\[0\]\.n.*int64 range"):
            codec.decode_v1({"instances": [{"n": bad, "x": 1.0}]}, False)


def test_drift_flags_stay_off_in_distribution_and_turn_on_for_a_two_std_shift(
    runner: asyncio.Runner, models: dict[str, BuiltModel]
) -> None:
    """Through the server: rows from the training distribution raise no flag; moving one
    feature's mean by two standard deviations flags that feature, and only it, in one window."""
    from sklearn.datasets import load_iris

    window = 150
    env = {"KUBELOOP_SERVING": json.dumps({"monitoring": {"drift": {"windowSize": window}}})}
    x_all = load_iris().data
    rng = np.random.default_rng(7)

    def drifted(rows: np.ndarray) -> dict[str, bool]:
        srv = Server(runner, _settings(models["iris"], "--name", "iris", env=env))
        for chunk in np.array_split(rows, 5):
            r = srv.request("POST", "/v2/models/iris/infer", body=_v2(chunk))
            assert r.status_code == 200, r.text
        report = srv.request("GET", "/v2/models/iris/drift").json()
        assert report["window_count"] == window
        return {f["name"]: f["drifted"] for f in report["features"]}

    same = x_all[rng.integers(0, len(x_all), window)]
    assert not any(drifted(same).values()), "no feature drifts on training-like data"

    shifted = x_all[rng.integers(0, len(x_all), window)].copy()
    shifted[:, 0] += 2 * x_all[:, 0].std()
    flags = drifted(shifted)
    assert flags["sepal length (cm)"] is True
    assert not any(v for k, v in flags.items() if k != "sepal length (cm)"), flags
