"""Models made by the real trainer from the shipped specs, served through the ASGI app.

What a new user meets (issue #12): feature names skl2onnx renames, hostile numbers beside
valid clients, missing values, BYTES tensors, feedback, malformed bodies. Each model is
trained once per module with ``kubeloop_runtime.train.runner.train`` in a temporary
directory, exactly as ``kubeloop-train`` does, and served in process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client import CollectorRegistry

from kubeloop_runtime import api
from kubeloop_runtime.serve.cli import build
from kubeloop_runtime.serve.errors import StartupError
from kubeloop_runtime.serve.settings import ServeSettings, parse_settings
from kubeloop_runtime.train.runner import Output, train
from tests.manifest_tools import ROOT

IRIS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def _spec_from(path: Path, **changes: Any) -> api.TrainingJobSpec:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "TrainingJob"]
    body = docs[0]["spec"]
    for key, value in changes.items():
        body[key] = value
    return api.TrainingJobSpec.model_validate(body)


def _configmap_data(path: Path, data_root: Path) -> None:
    for d in yaml.safe_load_all(path.read_text()):
        if d and d["kind"] == "ConfigMap":
            for key, text in d["data"].items():
                (data_root / "configmap").mkdir(parents=True, exist_ok=True)
                (data_root / "configmap" / key).write_text(text)


def _train(out: Path, spec: api.TrainingJobSpec, data_root: Path) -> Path:
    """Train, then write the ModelVersion manifest the operator would register."""
    result = train(spec, Output.open(str(out)), data_root)
    assert result.succeeded, result.message
    assert result.artifact and result.signature and result.framework and result.dataset
    mv = api.ModelVersionSpec(
        model=spec.model,
        version=1,
        task=spec.estimator.task,
        artifact=result.artifact,
        framework=result.framework,
        signature=result.signature,
        dataset=result.dataset,
    )
    manifest = out / "mv.json"
    manifest.write_text(json.dumps({"metadata": {"name": f"{spec.model}-v1"}, "spec": mv.wire()}))
    return manifest


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trained")
    data_root = root / "data"
    _configmap_data(ROOT / "manifests/samples/trainingjob-churn-csv.yaml", data_root)
    wine = api.TrainingJobSpec.model_validate(
        {
            "model": "wine",
            "dataset": {"builtin": "wine"},
            "estimator": {
                "type": "RandomForestClassifier",
                "hyperparameters": {"n_estimators": 20},
            },
        }
    )
    no_impute = _spec_from(
        ROOT / "examples/iris/trainingjob.yaml",
        preprocessing={"scaling": "standard", "impute": {"numeric": "none"}},
        model="iris-strict",
    )
    diabetes = api.TrainingJobSpec.model_validate(
        {
            "model": "diabetes",
            "dataset": {"builtin": "diabetes"},
            "estimator": {"type": "LinearRegression"},
        }
    )
    return {
        "forest": _train(
            root / "forest", _spec_from(ROOT / "manifests/samples/trainingjob-iris.yaml"), data_root
        ),
        "logreg": _train(
            root / "logreg", _spec_from(ROOT / "examples/iris/trainingjob.yaml"), data_root
        ),
        "wine": _train(root / "wine", wine, data_root),
        "churn": _train(
            root / "churn",
            _spec_from(ROOT / "manifests/samples/trainingjob-churn-csv.yaml"),
            data_root,
        ),
        "strict": _train(root / "strict", no_impute, data_root),
        "diabetes": _train(root / "diabetes", diabetes, data_root),
    }


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


class Server:
    def __init__(self, runner: asyncio.Runner, settings: ServeSettings) -> None:
        self.runner = runner
        self.registry = CollectorRegistry(auto_describe=False)
        self.app, self.dataplane, _ = build(settings, self.registry)
        self.name = settings.served_name

    async def arequest(
        self, method: str, path: str, body: Any = None, *, content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            data = content if content is not None else json.dumps(body).encode()
            hdrs = {"content-type": "application/json", **(headers or {})}
            return await c.request(method, path, content=data, headers=hdrs)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.runner.run(self.arequest("POST", path, body, **kw))

    def get(self, path: str) -> httpx.Response:
        return self.runner.run(self.arequest("GET", path, content=b""))

    def v1(self, instances: list[Any], **kw: Any) -> httpx.Response:
        return self.post(f"/v1/models/{self.name}:predict", {"instances": instances}, **kw)

    def v2(self, body: dict[str, Any], **kw: Any) -> httpx.Response:
        return self.post(f"/v2/models/{self.name}/infer", body, **kw)


def _serve(runner: asyncio.Runner, manifest: Path, *extra: str) -> Server:
    return Server(runner, parse_settings(["--model-version", str(manifest), *extra], environ={}))


@pytest.fixture(scope="module")
def servers(runner: asyncio.Runner, trained: dict[str, Path]) -> dict[str, Server]:
    return {k: _serve(runner, p) for k, p in trained.items()}


def _holdout(manifest: Path) -> pd.DataFrame:
    return pd.read_csv(manifest.parent / "holdout.csv")


def _v2_rows(rows: list[list[float]]) -> dict[str, Any]:
    flat = [v for r in rows for v in r]
    return {"inputs": [{"name": "x", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                        "data": flat}]}  # fmt: skip


# ------------------------------------------------------------------ 1. ONNX for real names


@pytest.mark.parametrize("key", ["forest", "logreg", "wine"])
def test_trained_model_with_renamed_onnx_inputs_is_served_by_onnx(
    servers: dict[str, Server], trained: dict[str, Path], key: str
) -> None:
    server = servers[key]
    assert server.dataplane.model.runtime == "onnx"
    assert server.get(f"/v2/models/{server.name}").json()["platform"] == "kubeloop-onnx"
    holdout = _holdout(trained[key])
    features = [f for f in holdout.columns if f != "target"]
    rows = holdout[features].to_numpy(dtype=np.float64)
    r = server.v2(_v2_rows(rows.tolist()))
    assert r.status_code == 200, r.text
    expected = server.dataplane.model.estimator.predict(holdout[features]).tolist()
    assert r.json()["outputs"][0]["data"] == expected


def test_a_recorded_onnx_graph_the_server_cannot_use_refuses_to_start(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    doc = json.loads(trained["forest"].read_text())
    for i, f in enumerate(doc["spec"]["signature"]["inputs"]):
        f["name"] = f"renamed {i}"  # the graph no longer matches the signature
    bad = tmp_path / "mv.json"
    bad.write_text(json.dumps(doc))
    settings = parse_settings(["--model-version", str(bad)], environ={})
    with pytest.raises(StartupError, match=r"ONNX graph .* cannot be used"):
        build(settings, CollectorRegistry(auto_describe=False))


# ------------------------------------------------------------------ 2. hostile numbers


@pytest.mark.parametrize("key", ["forest", "logreg"])
@pytest.mark.parametrize("value", [1e300, -1e39])
def test_numbers_beyond_float32_are_400_naming_row_and_column(
    servers: dict[str, Server], key: str, value: float
) -> None:
    server = servers[key]
    r = server.v1([[5.1, 3.5, 1.4, 0.2], [5.1, 3.5, value, 0.2]])
    assert r.status_code == 400, r.text
    assert "instances[1][2]" in r.json()["error"] and "petal length (cm)" in r.json()["error"]
    r = server.v2(_v2_rows([[5.1, 3.5, 1.4, 0.2], [5.1, value, 1.4, 0.2]]))
    assert r.status_code == 400, r.text
    assert "inputs[0].data[5]" in r.json()["error"] and "sepal width (cm)" in r.json()["error"]
    r = server.v1([{**dict.fromkeys(IRIS, 1.0), "petal width (cm)": value}])
    assert r.status_code == 400 and "petal width (cm)" in r.json()["error"]


@pytest.mark.parametrize("key", ["forest", "logreg"])
def test_one_client_sending_hostile_rows_never_fails_the_others(
    runner: asyncio.Runner, trained: dict[str, Path], key: str
) -> None:
    """12 valid clients beside one sending 1e300 rows, batched together: all valid get 200."""
    good = _v2_rows([[6.1, 2.8, 4.7, 1.2]])
    bad = _v2_rows([[6.1, 1e300, 4.7, 1.2]])
    bodies = [(i % 13 == 0, bad if i % 13 == 0 else good) for i in range(78)]

    async def burst(s: Server) -> list[tuple[bool, int, Any]]:
        p = f"/v2/models/{s.name}/infer"
        rs = await asyncio.gather(*(s.arequest("POST", p, b) for _, b in bodies))
        return [(h, r.status_code, r.json()) for (h, _), r in zip(bodies, rs, strict=True)]

    for extra in ([], ["--no-onnx"]):
        server = _serve(runner, trained[key], *extra, "--max-batch-delay-ms", "5")
        results = runner.run(burst(server))
        valid = [(c, j) for h, c, j in results if not h]
        assert all(c == 200 for c, _ in valid), [c for c, _ in valid]
        labels = {j["outputs"][0]["data"][0] for _, j in valid}
        assert len(labels) == 1  # every valid client got the same answer for the same row
        assert all(c == 400 for h, c, _ in results if h)


def test_a_failing_batch_fails_only_the_request_the_model_refuses() -> None:
    from kubeloop_runtime.serve.batching import MicroBatcher
    from kubeloop_runtime.serve.errors import ModelInputError
    from kubeloop_runtime.serve.model import Prediction

    calls: list[int] = []

    def predict(x: np.ndarray, proba: bool) -> Prediction:
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("Input X contains a value the model cannot take")
        return Prediction(labels=x[:, 0] * 2)

    async def go() -> list[Any]:
        b = MicroBatcher(predict, max_batch_size=64, max_delay_s=0.0, in_thread=False)
        rows = [np.array([[float(i)]]) for i in range(5)] + [np.array([[-1.0]])]
        out = await asyncio.gather(*(b.submit(r, False) for r in rows), return_exceptions=True)
        await b.close()
        return out

    with asyncio.Runner() as r:
        out = r.run(go())
    assert [p.labels.tolist() for p in out[:5]] == [[0.0], [2.0], [4.0], [6.0], [8.0]]
    assert isinstance(out[5], ModelInputError) and out[5].status == 422
    assert calls[0] == 6  # one batch first, then each request alone


def test_a_non_finite_output_is_never_answered_200(servers: dict[str, Server]) -> None:
    """A float32 overflow inside the graph (inputs within range) gives inf: never 200/null."""
    server = servers["diabetes"]
    assert server.dataplane.model.runtime == "onnx"
    n = len(server.dataplane.model.feature_names)
    r = server.v1([[3.0e38] * n, [0.01] * n])
    if r.status_code == 200:
        assert all(isinstance(v, float) and np.isfinite(v) for v in r.json()["predictions"])
    else:
        assert r.status_code == 422 and "row 0" in r.json()["error"], r.text
    ok = server.v1([[0.01] * n])
    assert ok.status_code == 200 and np.isfinite(ok.json()["predictions"][0])


# ------------------------------------------------------------------ 3. missing values


def test_null_is_accepted_where_the_pipeline_imputes(servers: dict[str, Server]) -> None:
    churn = servers["churn"]
    row = {"tenure_months": 12, "monthly_charges": None, "contract": "month-to-month",
           "payment_method": None, "support_calls": 3}  # fmt: skip
    r = churn.v1([row])
    assert r.status_code == 200, r.text
    frame = pd.DataFrame([row]).astype({"monthly_charges": float, "payment_method": object})
    frame["payment_method"] = np.nan
    expected = churn.dataplane.model.estimator.predict(frame).tolist()
    assert r.json()["predictions"] == expected
    v2 = {
        "inputs": [
            {"name": "tenure_months", "shape": [1], "datatype": "INT64", "data": [12]},
            {"name": "monthly_charges", "shape": [1], "datatype": "FP64", "data": [None]},
            {"name": "contract", "shape": [1], "datatype": "BYTES", "data": ["month-to-month"]},
            {"name": "payment_method", "shape": [1], "datatype": "BYTES", "data": [None]},
            {"name": "support_calls", "shape": [1], "datatype": "INT64", "data": [3]},
        ]
    }
    r = churn.v2(v2)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == expected
    meta = churn.get(f"/v2/models/{churn.name}").json()
    assert all(i.get("parameters", {}).get("nullable") for i in meta["inputs"])


def test_null_on_the_onnx_path_is_imputed_like_scikit_learn(servers: dict[str, Server]) -> None:
    forest = servers["forest"]
    assert forest.dataplane.model.runtime == "onnx"
    r = forest.v1([[5.9, None, 4.2, 1.3]])
    assert r.status_code == 200, r.text
    frame = pd.DataFrame([[5.9, np.nan, 4.2, 1.3]], columns=IRIS)
    assert r.json()["predictions"] == forest.dataplane.model.estimator.predict(frame).tolist()
    r = forest.v2(_v2_rows([[5.9, None, 4.2, 1.3]]))  # type: ignore[list-item]
    assert r.status_code == 200, r.text


def test_null_is_refused_where_the_pipeline_does_not_impute(servers: dict[str, Server]) -> None:
    strict = servers["strict"]
    r = strict.v1([[5.9, 3.0, None, 1.3]])
    assert r.status_code == 400
    assert "instances[0][2]" in r.json()["error"] and "null" in r.json()["error"]
    r = strict.v2(_v2_rows([[5.9, 3.0, 4.2, None]]))  # type: ignore[list-item]
    assert r.status_code == 400 and "inputs[0].data[3]" in r.json()["error"]


# ------------------------------------------------------------------ 4. BYTES


def test_bytes_tensors_carry_strings_and_features_their_own_datatypes(
    servers: dict[str, Server],
) -> None:
    iris = servers["logreg"]
    numbers_as_bytes = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES",
                                    "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip
    r = iris.v2(numbers_as_bytes)
    assert r.status_code == 400 and "BYTES" in r.json()["error"], r.text
    churn = servers["churn"]
    mixed_bytes = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "BYTES",
                               "data": [12, 70.5, "month-to-month", "card", 3]}]}  # fmt: skip
    r = churn.v2(mixed_bytes)
    assert r.status_code == 400 and "one tensor per feature" in r.json()["error"], r.text
    per_feature = {
        "inputs": [
            {"name": "contract", "shape": [2, 1], "datatype": "BYTES",
             "data": [["two-year"], ["month-to-month"]]},
            {"name": "tenure_months", "shape": [2], "datatype": "INT32", "data": [60, 1]},
            {"name": "monthly_charges", "shape": [2], "datatype": "FP32", "data": [20.5, 99.0]},
            {"name": "payment_method", "shape": [2], "datatype": "BYTES", "data": ["card", "card"]},
            {"name": "support_calls", "shape": [2], "datatype": "INT64", "data": [0, 6]},
        ]
    }  # fmt: skip
    r = churn.v2(per_feature)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["no", "yes"]
    string_in_numeric = json.loads(json.dumps(per_feature))
    string_in_numeric["inputs"][2]["datatype"] = "BYTES"
    string_in_numeric["inputs"][2]["data"] = ["20.5", "99.0"]
    r = churn.v2(string_in_numeric)
    assert r.status_code == 400 and "monthly_charges" in r.json()["error"]


# ------------------------------------------------------------------ 5. feedback


def _feedback_counts(server: Server) -> dict[str, float]:
    out = {}
    for fam in server.registry.collect():
        if fam.name == "kubeloop_feedback":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[s.labels["result"]] = s.value
    return out


def test_feedback_labels_must_be_classes_and_every_refusal_is_counted(
    runner: asyncio.Runner, trained: dict[str, Path]
) -> None:
    server = _serve(runner, trained["logreg"])
    r = server.v1([[5.1, 3.5, 1.4, 0.2]], headers={"x-request-id": "fb-1"})
    assert r.status_code == 200
    fb = f"/v2/models/{server.name}/feedback"
    r = server.post(fb, {"id": "fb-1", "labels": [7]})
    assert r.status_code == 400 and "classes" in r.json()["error"], r.text
    assert server.post(fb, {"id": "fb-1", "labels": "x"}).status_code == 400
    assert server.post(fb, content=b'{"id": "fb-1", ').status_code == 400
    assert _feedback_counts(server).get("invalid") == 3
    r = server.post(fb, {"id": "fb-1", "labels": [0]})
    assert r.status_code == 200 and r.json()["labelled"] == 1 and r.json()["correct"] == 1
    counts = _feedback_counts(server)
    assert counts["correct"] == 1 and counts["incorrect"] == 0


def test_feedback_metric_help_names_only_emitted_results(
    runner: asyncio.Runner, trained: dict[str, Path]
) -> None:
    server = _serve(runner, trained["logreg"])
    fam = next(f for f in server.registry.collect() if f.name == "kubeloop_feedback")
    emitted = {s.labels["result"] for s in fam.samples}
    named = {w.strip("(),.:;") for w in fam.documentation.split()}
    for result in ("unmatched", "received"):
        assert result not in named
    assert emitted <= named, (emitted, fam.documentation)


def test_reusing_a_request_id_for_other_rows_is_409_and_keeps_the_first(
    runner: asyncio.Runner, trained: dict[str, Path]
) -> None:
    server = _serve(runner, trained["logreg"])
    setosa, virginica = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]
    first = server.v1([setosa], headers={"x-request-id": "same"})
    assert first.status_code == 200 and first.json()["predictions"] == [0]
    retry = server.v1([setosa], headers={"x-request-id": "same"})
    assert retry.status_code == 200  # a retry of the same request is answered
    other = server.v1([virginica], headers={"x-request-id": "same"})
    assert other.status_code == 409 and "same" in other.json()["error"]
    r = server.post(f"/v2/models/{server.name}/feedback", {"id": "same", "labels": [0]})
    assert r.status_code == 200 and r.json()["correct"] == 1  # scored against the first


# ------------------------------------------------------------------ 6. malformed JSON


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"instances": [[5.1, 3.5', "truncated"),
        (b'{"instances": [[NaN, 1, 2, 3]]}', "NaN"),
        (b'{"instances": [[1e999, 1, 2, 3]]}', "overflows"),
        (b'{"instances": [[1, 2, 3, 4]],,}', "column"),
    ],
)
def test_malformed_json_errors_say_what_is_wrong(
    servers: dict[str, Server], body: bytes, says: str
) -> None:
    r = servers["logreg"].post("/v1/models/iris:predict", content=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert says in error, error
    if says != "NaN":
        assert "NaN" not in error, error
