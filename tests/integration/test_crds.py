"""The CRDs against the real kube-apiserver: they install, the samples apply, admission rejects
invalid specs with messages naming the field, fuzzed specs never cause a 5xx, and `kubectl get`
shows useful columns.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kubernetes import client
from pydantic import BaseModel

from kubeloop_runtime.api import (
    GROUP,
    VERSION,
    InferenceServiceSpec,
    ModelVersionSpec,
    TrainingJobSpec,
)
from tests.integration.harness import Cluster

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"
PLURALS = {
    "TrainingJob": "trainingjobs",
    "ModelVersion": "modelversions",
    "InferenceService": "inferenceservices",
}
MODELS: dict[str, type[BaseModel]] = {
    "TrainingJob": TrainingJobSpec,
    "ModelVersion": ModelVersionSpec,
    "InferenceService": InferenceServiceSpec,
}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"

Obj = dict[str, Any]


# ---------------------------------------------------------------------------- helpers


def request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: dict[str, str] | None = None,
    accept: str = "application/json",
    content_type: str = "application/json",
) -> tuple[int, Obj]:
    """One raw API call; returns (HTTP status, decoded body) and never raises on a status."""
    params = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=list((query or {}).items()),
        header_params={"Accept": accept, "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*params)
    data = response.read()
    return response.status, (json.loads(data) if data else {})


def collection(namespace: str, kind: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS[kind]}"


def sample_objects() -> list[Obj]:
    objs = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objs


def sample(name: str) -> Obj:
    (obj,) = [o for o in sample_objects() if o["metadata"]["name"] == name]
    return copy.deepcopy(obj)


def create(api: client.ApiClient, namespace: str, obj: Obj, *, dry_run: bool) -> tuple[int, Obj]:
    return request(
        api,
        "POST",
        collection(namespace, obj["kind"]),
        body=obj,
        query={"dryRun": "All"} if dry_run else None,
    )


def message_of(body: Obj) -> str:
    causes = " ".join(
        f"{c.get('field', '')}: {c.get('message', '')}"
        for c in body.get("details", {}).get("causes", [])
    )
    return f"{body.get('message', '')} {causes}"


# ------------------------------------------------------------------------ installed


def test_crds_are_established(api: client.ApiClient) -> None:
    for plural in PLURALS.values():
        status, crd = request(
            api, "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.{GROUP}"
        )
        assert status == 200, crd
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", conditions
        assert conditions["NamesAccepted"] == "True", conditions
        assert conditions.get("NonStructuralSchema") is None, conditions


def test_samples_apply_and_are_listed_by_category(
    cluster: Cluster, namespace: str, api: client.ApiClient
) -> None:
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-k", str(SAMPLES))
    names = cluster.kubectl("get", "kubeloop", "-n", namespace, "-o", "name").stdout.split()
    expected = {
        f"{o['kind'].lower()}.{GROUP}/{o['metadata']['name']}"
        for o in sample_objects()
        if o["kind"] in PLURALS
    }
    assert set(names) == expected
    # What the API server stored (pruned, defaulted) still parses, and the defaults landed.
    for obj in sample_objects():
        if obj["kind"] not in PLURALS:
            continue
        status, stored = request(
            api, "GET", f"{collection(namespace, obj['kind'])}/{obj['metadata']['name']}"
        )
        assert status == 200, stored
        MODELS[obj["kind"]].model_validate(stored["spec"])
    _, loop = request(api, "GET", f"{collection(namespace, 'InferenceService')}/iris-loop")
    assert loop["spec"]["rollout"] == {
        "maxSurge": "25%",
        "maxUnavailable": "0",
        "progressDeadlineSeconds": 600,
    }
    assert loop["spec"]["retraining"]["template"]["evaluation"]["testSize"] == 0.2


def test_short_names(cluster: Cluster, namespace: str) -> None:
    for short in ("tj", "mv", "klis"):
        out = cluster.kubectl("get", short, "-n", namespace)
        assert out.returncode == 0


# ----------------------------------------------------------------- invalid specs


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    """A mutation setting obj[path] (dotted, with [i] list indexes) to value."""

    def mutate(obj: Obj) -> None:
        *parents, leaf = _split(path)
        node: Any = obj
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(p, str) else node[p]
        node[leaf] = value

    return mutate


def _drop(path: str) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        *parents, leaf = _split(path)
        node: Any = obj
        for p in parents:
            node = node[p]
        del node[leaf]

    return mutate


def _split(path: str) -> list[str | int]:
    out: list[str | int] = []
    for part in path.split("."):
        name, *indexes = part.split("[")
        out.append(name)
        out += [int(i.rstrip("]")) for i in indexes]
    return out


def _all(*mutations: Callable[[Obj], None]) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        for m in mutations:
            m(obj)

    return mutate


LONG = "x" * 600
THRESHOLD = {"metric": "accuracy", "min": 0.5}

# (id, base sample, mutation, field path the message must name)
INVALID: list[tuple[str, str, Callable[[Obj], None], str]] = [
    # TrainingJob
    ("tj-model-wrong-type", "iris-rf", _set("spec.model", 123), "spec.model"),
    ("tj-model-not-dns", "iris-rf", _set("spec.model", "Iris_Model"), "spec.model"),
    ("tj-model-too-long", "iris-rf", _set("spec.model", "m" * 41), "spec.model"),
    ("tj-no-dataset", "iris-rf", _drop("spec.dataset"), "spec.dataset"),
    ("tj-no-estimator", "iris-rf", _drop("spec.estimator"), "spec.estimator"),
    ("tj-no-spec", "iris-rf", _drop("spec"), "spec"),
    (
        "tj-unknown-estimator",
        "iris-rf",
        _set("spec.estimator.type", "CatBoostClassifier"),
        "spec.estimator.type",
    ),
    (
        "tj-two-sources",
        "iris-rf",
        _set(
            "spec.dataset", {"builtin": "iris", "url": "https://example.com/a.csv", "target": "y"}
        ),
        "spec.dataset",
    ),
    ("tj-no-source", "iris-rf", _set("spec.dataset", {"target": "y"}), "spec.dataset"),
    (
        "tj-url-without-target",
        "iris-rf",
        _set("spec.dataset", {"url": "https://example.com/a.csv"}),
        "spec.dataset.target",
    ),
    (
        "tj-url-bad-scheme",
        "iris-rf",
        _set("spec.dataset", {"url": "ftp://example.com/a.csv", "target": "y"}),
        "spec.dataset.url",
    ),
    (
        "tj-configmap-bad-name",
        "churn-logreg",
        _set("spec.dataset.configMap.name", "Churn_Data"),
        "spec.dataset.configMap.name",
    ),
    (
        "tj-pvc-parent-path",
        "churn-logreg",
        _set(
            "spec.dataset",
            {"pvc": {"claimName": "data", "path": "a/../../etc/passwd"}, "target": "y"},
        ),
        "spec.dataset.pvc.path",
    ),
    (
        "tj-pvc-absolute-path",
        "churn-logreg",
        _set("spec.dataset", {"pvc": {"claimName": "data", "path": "/etc/passwd"}, "target": "y"}),
        "spec.dataset.pvc.path",
    ),
    (
        "tj-too-many-features",
        "churn-logreg",
        _set("spec.dataset.features", [f"c{i}" for i in range(257)]),
        "spec.dataset.features",
    ),
    (
        "tj-feature-too-long",
        "churn-logreg",
        _set("spec.dataset.features[0]", LONG),
        "spec.dataset.features[0]",
    ),
    (
        "tj-test-size-one",
        "iris-rf",
        _set("spec.evaluation.testSize", 1.0),
        "spec.evaluation.testSize",
    ),
    (
        "tj-test-size-zero",
        "iris-rf",
        _set("spec.evaluation.testSize", 0),
        "spec.evaluation.testSize",
    ),
    ("tj-cv-folds-21", "iris-rf", _set("spec.evaluation.cvFolds", 21), "spec.evaluation.cvFolds"),
    ("tj-seed-string", "iris-rf", _set("spec.evaluation.seed", "42"), "spec.evaluation.seed"),
    (
        "tj-threshold-no-bound",
        "iris-rf",
        _set("spec.qualityGate.thresholds", [{"metric": "accuracy"}]),
        "spec.qualityGate.thresholds[0]",
    ),
    (
        "tj-threshold-wrong-task",
        "iris-rf",
        _set("spec.qualityGate.thresholds", [{"metric": "r2", "min": 0.5}]),
        "spec.qualityGate.thresholds",
    ),
    (
        "tj-too-many-thresholds",
        "iris-rf",
        _set("spec.qualityGate.thresholds", [THRESHOLD] * 17),
        "spec.qualityGate.thresholds",
    ),
    (
        "tj-hyperparameter-object",
        "iris-rf",
        _set("spec.estimator.hyperparameters.class_weight", {"a": 1}),
        "spec.estimator.hyperparameters",
    ),
    (
        "tj-hyperparameter-too-long",
        "iris-rf",
        _set("spec.estimator.hyperparameters.criterion", LONG),
        "spec.estimator.hyperparameters",
    ),
    (
        "tj-too-many-hyperparameters",
        "iris-rf",
        _set("spec.estimator.hyperparameters", {f"p{i}": i for i in range(33)}),
        "spec.estimator.hyperparameters",
    ),
    (
        "tj-scaling-enum",
        "iris-rf",
        _set("spec.preprocessing.scaling", "zscore"),
        "spec.preprocessing.scaling",
    ),
    (
        "tj-artifact-pickle",
        "iris-rf",
        _set("spec.artifact.format", "pickle"),
        "spec.artifact.format",
    ),
    (
        "tj-backoff-11",
        "iris-rf",
        _set("spec.runPolicy.backoffLimit", 11),
        "spec.runPolicy.backoffLimit",
    ),
    (
        "tj-bad-quantity",
        "iris-rf",
        _set("spec.resources.requests.cpu", "lots"),
        "spec.resources.requests",
    ),
    ("tj-image-too-long", "iris-rf", _set("spec.image", LONG), "spec.image"),
    (
        "tj-toleration-operator",
        "iris-rf",
        _set("spec.tolerations", [{"key": "k", "operator": "Maybe"}]),
        "spec.tolerations[0].operator",
    ),
    (
        "tj-trigger-signal",
        "iris-rf",
        _set("spec.trigger", {"inferenceService": "iris", "signal": "boredom"}),
        "spec.trigger.signal",
    ),
    ("tj-name-too-long", "iris-rf", _set("metadata.name", "n" * 53), "metadata.name"),
    ("tj-name-with-dot", "iris-rf", _set("metadata.name", "iris.rf"), "metadata.name"),
    # ModelVersion
    ("mv-sha-not-hex", "iris-v1", _set("spec.artifact.sha256", "z" * 64), "spec.artifact.sha256"),
    ("mv-version-zero", "iris-v1", _set("spec.version", 0), "spec.version"),
    ("mv-no-inputs", "iris-v1", _set("spec.signature.inputs", []), "spec.signature.inputs"),
    (
        "mv-duplicate-aliases",
        "iris-v1",
        _set("spec.aliases", ["production", "production"]),
        "spec.aliases",
    ),
    ("mv-alias-uppercase", "iris-v1", _set("spec.aliases", ["Production"]), "spec.aliases[0]"),
    (
        "mv-class-not-scalar",
        "iris-v1",
        _set("spec.signature.output.classes", [[0], 1]),
        "spec.signature.output.classes",
    ),
    (
        "mv-too-many-categories",
        "iris-v1",
        _set(
            "spec.signature.inputs",
            [
                {"name": f"c{i}", "dtype": "string", "categories": [f"v{j}" for j in range(200)]}
                for i in range(3)
            ],
        ),
        "spec.signature.inputs",
    ),
    ("mv-task-enum", "iris-v1", _set("spec.task", "clustering"), "spec.task"),
    ("mv-metric-string", "iris-v1", _set("spec.metrics.accuracy", "high"), "spec.metrics.accuracy"),
    ("mv-framework-name", "iris-v1", _set("spec.framework.name", "xgboost"), "spec.framework.name"),
    # InferenceService
    (
        "isvc-version-and-alias",
        "iris",
        _set("spec.model", {"modelVersion": "iris-v1", "model": "iris", "alias": "production"}),
        "spec.model",
    ),
    ("isvc-alias-without-model", "iris", _set("spec.model", {"alias": "production"}), "spec.model"),
    ("isvc-empty-model", "iris", _set("spec.model", {}), "spec.model"),
    (
        "isvc-traffic-150",
        "iris-canary",
        _set("spec.canary.trafficPercent", 150),
        "spec.canary.trafficPercent",
    ),
    (
        "isvc-min-over-max",
        "iris-canary",
        _set("spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "spec.autoscaling.minReplicas",
    ),
    ("isvc-negative-replicas", "iris", _set("spec.replicas", -1), "spec.replicas"),
    (
        "isvc-max-surge",
        "iris-canary",
        _set("spec.rollout.maxSurge", "lots"),
        "spec.rollout.maxSurge",
    ),
    (
        "isvc-p-value-one",
        "iris",
        _set("spec.monitoring.drift.pValue", 1.0),
        "spec.monitoring.drift.pValue",
    ),
    (
        "isvc-retraining-no-template",
        "iris-loop",
        _drop("spec.retraining.template"),
        "spec.retraining.template",
    ),
    (
        "isvc-template-two-sources",
        "iris-loop",
        _set("spec.retraining.template.dataset.path", "/data/a.csv"),
        "spec.retraining.template.dataset",
    ),
    (
        "isvc-bad-schedule",
        "iris-loop",
        _set("spec.retraining.triggers.schedule", "every day"),
        "spec.retraining.triggers.schedule",
    ),
    (
        "isvc-retrain-canary-zero",
        "iris-loop",
        _set("spec.retraining.canaryTrafficPercent", 0),
        "spec.retraining.canaryTrafficPercent",
    ),
    (
        "search-grid-range",
        "iris-search",
        _set("spec.search.parameters.C", {"min": 0.1, "max": 1.0}),
        "spec.search.parameters",
    ),
    (
        "search-range-order",
        "iris-search",
        _all(
            _set("spec.search.algorithm", "random"),
            _set("spec.search.parameters.C", {"min": 2.0, "max": 1.0}),
        ),
        "spec.search.parameters",
    ),
    (
        "search-bad-name",
        "iris-search",
        _set("spec.search.parameters.bad-name", {"values": [1]}),
        "spec.search.parameters",
    ),
    (
        "search-list-value",
        "iris-search",
        _set("spec.search.parameters.C", {"values": [[1.0]]}),
        "spec.search.parameters",
    ),
    (
        "search-parallelism",
        "iris-search",
        _set("spec.search.parallelism", 17),
        "spec.search.parallelism",
    ),
    (
        "search-max-trials",
        "iris-search",
        _set("spec.search.maxTrials", 65),
        "spec.search.maxTrials",
    ),
    (
        "search-metric-task",
        "iris-search",
        _set("spec.search.metric", "rmse"),
        "spec.search.metric",
    ),
    ("isvc-name-digit-first", "iris", _set("metadata.name", "1iris"), "metadata.name"),
    ("isvc-batch-delay", "iris", _set("spec.maxBatchDelayMs", 101), "spec.maxBatchDelayMs"),
    ("isvc-grpc-port-is-http", "iris", _set("spec.grpcPort", 8080), "spec.grpcPort"),
    ("isvc-grpc-port-privileged", "iris", _set("spec.grpcPort", 443), "spec.grpcPort"),
    (
        "isvc-canary-no-version",
        "iris-canary",
        _all(_drop("spec.canary.modelVersion"), _set("spec.canary.trafficPercent", 5)),
        "spec.canary.modelVersion",
    ),
]


@pytest.mark.parametrize(("case", "base", "mutate", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_is_rejected_naming_the_field(
    api: client.ApiClient,
    namespace: str,
    case: str,
    base: str,
    mutate: Callable[[Obj], None],
    field: str,
) -> None:
    obj = sample(base)
    status, body = create(api, namespace, obj, dry_run=True)
    assert status == 201, f"the unmutated {base} must be valid: {body}"
    mutate(obj)
    status, body = create(api, namespace, obj, dry_run=True)
    assert status == 422, f"{case}: expected 422, got {status}: {body}"
    assert field in message_of(body), f"{case}: {field!r} not named in {message_of(body)!r}"


def test_at_least_thirty_invalid_cases() -> None:
    assert len(INVALID) >= 30
    assert len({c[0] for c in INVALID}) == len(INVALID)


# -------------------------------------------------------------------- immutability


def _replace(api: client.ApiClient, namespace: str, obj: Obj) -> tuple[int, Obj]:
    return request(
        api, "PUT", f"{collection(namespace, obj['kind'])}/{obj['metadata']['name']}", body=obj
    )


def _created(api: client.ApiClient, namespace: str, name: str) -> Obj:
    status, stored = create(api, namespace, sample(name), dry_run=False)
    assert status == 201, stored
    return stored


def test_trainingjob_spec_is_immutable(api: client.ApiClient, namespace: str) -> None:
    stored = _created(api, namespace, "iris-rf")
    changed = copy.deepcopy(stored)
    changed["spec"]["estimator"]["hyperparameters"]["n_estimators"] = 500
    status, body = _replace(api, namespace, changed)
    assert status == 422, body
    assert "spec" in message_of(body) and "immutable" in message_of(body)
    # Metadata is not spec: labels may change.
    relabelled = copy.deepcopy(stored)
    relabelled["metadata"].setdefault("labels", {})["team"] = "ml"
    status, body = _replace(api, namespace, relabelled)
    assert status == 200, body


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("spec.metrics.accuracy", 0.5, "spec.metrics"),
        ("spec.artifact.sha256", "0" * 64, "spec.artifact"),
        ("spec.version", 2, "spec.version"),
        ("spec.lineage.trainingJob", "other", "spec.lineage"),
    ],
)
def test_modelversion_is_immutable_but_its_aliases(
    api: client.ApiClient, namespace: str, path: str, value: Any, field: str
) -> None:
    stored = _created(api, namespace, "iris-v1")
    changed = copy.deepcopy(stored)
    _set(path, value)(changed)
    status, body = _replace(api, namespace, changed)
    assert status == 422, body
    assert field in message_of(body) and "immutable" in message_of(body), message_of(body)

    moved = copy.deepcopy(stored)
    moved["spec"]["aliases"] = ["staging", "champion"]
    status, body = _replace(api, namespace, moved)
    assert status == 200, body
    assert body["spec"]["aliases"] == ["staging", "champion"]


# ------------------------------------------------------------------------ status


def _patch_status(
    api: client.ApiClient, namespace: str, kind: str, name: str, status: Obj
) -> tuple[int, Obj]:
    return request(
        api,
        "PATCH",
        f"{collection(namespace, kind)}/{name}/status",
        body={"status": status},
        content_type="application/merge-patch+json",
    )


NOW = "2025-01-02T03:04:05Z"


def _condition(type_: str, status: str, reason: str) -> Obj:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": f"{type_} is {status}",
        "lastTransitionTime": NOW,
        "observedGeneration": 1,
    }


STATUSES: dict[str, tuple[str, Obj]] = {
    "TrainingJob": (
        "iris-rf",
        {
            "observedGeneration": 1,
            "conditions": [_condition("Succeeded", "True", "Trained")],
            "phase": "Succeeded",
            "reason": "Trained",
            "message": "accuracy 0.9737 >= 0.9",
            "jobName": "iris-rf-train",
            "startTime": NOW,
            "completionTime": NOW,
            "metrics": {"accuracy": 0.9737, "f1": 0.9736},
            "modelVersion": "iris-v1",
            "version": 1,
            "gate": {"passed": True, "message": "accuracy 0.9737 >= 0.9"},
            "search": {
                "trials": 2,
                "succeeded": 1,
                "failed": 1,
                "running": 0,
                "metric": "accuracy",
                "direction": "maximize",
                "bestTrial": 1,
                "bestValue": 0.9737,
                "failedReasons": {"InvalidSpec": 1},
            },
            "trials": [
                {
                    "index": 0,
                    "phase": "Failed",
                    "parameters": {"C": "-1.0"},
                    "reason": "InvalidSpec",
                    "message": "C must be > 0",
                    "pod": "iris-rf-train-0-x",
                },
                {
                    "index": 1,
                    "phase": "Succeeded",
                    "parameters": {"C": "1.0"},
                    "metrics": {"accuracy": 0.9737},
                    "reason": "Trained",
                    "pod": "iris-rf-train-1-y",
                },
            ],
        },
    ),
    "ModelVersion": (
        "iris-v1",
        {
            "observedGeneration": 1,
            "conditions": [
                _condition("Ready", "True", "Verified"),
                _condition("ArtifactVerified", "True", "ChecksumMatched"),
            ],
            "phase": "Ready",
            "aliases": ["production"],
            "servedBy": ["iris"],
        },
    ),
    "InferenceService": (
        "iris-canary",
        {
            "observedGeneration": 1,
            "conditions": [_condition("Ready", "True", "PredictorsReady")],
            "phase": "Ready",
            "url": "http://iris-canary.ns.svc.cluster.local",
            "modelName": "iris",
            "servingVersion": "iris-v1",
            "canaryVersion": "iris-v2",
            "traffic": [
                {
                    "modelVersion": "iris-v1",
                    "role": "stable",
                    "percent": 80,
                    "replicas": 2,
                    "readyReplicas": 2,
                },
                {
                    "modelVersion": "iris-v2",
                    "role": "canary",
                    "percent": 20,
                    "replicas": 1,
                    "readyReplicas": 1,
                },
            ],
            "replicas": 3,
            "readyReplicas": 3,
            "lastRetrain": {
                "time": NOW,
                "trainingJob": "iris-retrain-1",
                "signal": "drift",
                "value": "0.62",
            },
            "activeRetrains": ["iris-retrain-2"],
            "canaryStartTime": NOW,
            "analysis": {
                "decision": "Pending",
                "message": "12 of 50 requests",
                "time": NOW,
                "metrics": {"requests": 12, "errorRate": 0.0, "p99LatencySeconds": 0.012},
            },
        },
    ),
}

# Columns in the CRD's order (kubectl hides priority 1 unless -o wide), and the cells
# the objects above must show.
COLUMNS: dict[str, dict[str, Any]] = {
    "TrainingJob": {
        "Name": "iris-rf",
        "Model": "iris",
        "Estimator": "RandomForestClassifier",
        "Status": "Succeeded",
        "Version": 1,
        "Accuracy": 0.9737,
        "R2": None,
        "ModelVersion": "iris-v1",
        "Reason": "Trained",
        "Age": ...,
    },
    "ModelVersion": {
        "Name": "iris-v1",
        "Model": "iris",
        "Version": 1,
        "Ready": "True",
        "Accuracy": ...,  # the sample's own spec.metrics.accuracy, set below
        "R2": None,
        "Aliases": '["production"]',
        "TrainingJob": "iris-rf",
        "Task": "classification",
        "ServedBy": '["iris"]',
        "Age": ...,
    },
    "InferenceService": {
        "Name": "iris-canary",
        "URL": "http://iris-canary.ns.svc.cluster.local",
        "Model": "iris",
        "Serving": "iris-v1",
        "Canary": "iris-v2",
        "Traffic": 20,
        "Ready": "True",
        "Replicas": 3,
        "LastRetrain": ...,
        "Age": ...,
    },
}


# A ModelVersion's accuracy is its spec's (what its TrainingJob measured), so the column shows
# the sample's figure, whatever the sample's training run gave.
COLUMNS["ModelVersion"]["Accuracy"] = float(sample("iris-v1")["spec"]["metrics"]["accuracy"])


@pytest.mark.parametrize("kind", sorted(PLURALS))
def test_status_accepts_what_the_operator_writes(
    api: client.ApiClient, namespace: str, kind: str
) -> None:
    name, status = STATUSES[kind]
    _created(api, namespace, name)
    code, body = _patch_status(api, namespace, kind, name, status)
    assert code == 200, body
    assert body["status"] == status
    # Typed: an unknown condition status is refused.
    bad = {"conditions": [{**status["conditions"][0], "status": "Maybe"}]}
    code, body = _patch_status(api, namespace, kind, name, bad)
    assert code == 422 and "status.conditions[0].status" in message_of(body), body


@pytest.mark.parametrize("kind", sorted(PLURALS))
def test_kubectl_get_shows_the_printer_columns(
    api: client.ApiClient, namespace: str, kind: str
) -> None:
    name, status = STATUSES[kind]
    _created(api, namespace, name)
    code, body = _patch_status(api, namespace, kind, name, status)
    assert code == 200, body
    code, table = request(api, "GET", collection(namespace, kind), accept=TABLE)
    assert code == 200, table
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == list(COLUMNS[kind]), names
    (row,) = table["rows"]
    cells = dict(zip(names, row["cells"], strict=True))
    for column, expected in COLUMNS[kind].items():
        if expected is ...:
            assert cells[column], f"{kind} {column} is empty"
        elif isinstance(expected, float):
            assert cells[column] == pytest.approx(expected), column
        else:
            assert cells[column] == expected, f"{kind} {column}: {cells[column]!r}"


# ---------------------------------------------------------------------- fuzzing

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=20,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_specs(draw: st.DrawFn) -> Obj:
    bases = [o for o in sample_objects() if o["kind"] in PLURALS]
    obj = copy.deepcopy(draw(st.sampled_from(bases)))
    obj["metadata"] = {"name": "fuzz"}
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(obj["spec"]) if p]
        path = draw(st.sampled_from(paths))
        parent: Any = obj["spec"]
        for p in path[:-1]:
            parent = parent[p]
        action = draw(st.sampled_from(["replace", "add", "delete"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON_VALUES)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=30))] = draw(JSON_VALUES)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.pop(path[-1])
    return obj


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(obj=mutated_specs())
def test_fuzzed_specs_never_cause_a_server_error(
    api: client.ApiClient, namespace: str, obj: Obj
) -> None:
    status, body = create(api, namespace, obj, dry_run=True)
    event(f"HTTP {status}")
    assert status < 500, f"{status}: {body}"
    assert status in (201, 400, 422), f"{status}: {body}"
    if status == 201:
        # Whatever admission accepts, the operator can parse.
        MODELS[obj["kind"]].model_validate(body["spec"])
