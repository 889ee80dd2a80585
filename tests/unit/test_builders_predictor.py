"""Predictor builders: pure functions, checked without a cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubeloop.builders import predictor as b
from kubeloop.settings import Settings
from kubeloop_runtime import api
from kubeloop_runtime.serve.settings import parse_settings

SETTINGS = Settings(runtime_image="kubeloop/runtime:1.2.3", artifact_pvc="artifacts-pvc")
OWNER = b.Owner(name="iris", namespace="ml", uid="uid-1")


def mv_spec(version: int = 1, aliases: list[str] | None = None) -> api.ModelVersionSpec:
    return api.ModelVersionSpec.model_validate(
        {
            "model": "iris",
            "version": version,
            "task": "classification",
            "artifact": {
                "uri": f"pvc://kubeloop-artifacts/ml/iris-{version}/model.skops",
                "sha256": "a" * 64,
                "format": "skops",
                "sizeBytes": 1234,
            },
            "framework": {"python": "3.11", "sklearn": "1.5.2", "numpy": "2.0", "pandas": "2.2"},
            "signature": {
                "inputs": [{"name": "sepal length (cm)", "dtype": "float64"}],
                "output": {"dtype": "int64", "classes": [0, 1, 2]},
            },
            "metrics": {"accuracy": 0.97, "f1": 0.96},
            "dataset": {"sha256": "b" * 64, "rows": 150, "columns": 5, "source": "builtin:iris"},
            "aliases": aliases or [],
        }
    )


def served(version: int = 1, aliases: list[str] | None = None) -> b.ServedVersion:
    return b.ServedVersion(name=f"iris-v{version}", spec=mv_spec(version, aliases))


def isvc_spec(**kw: Any) -> api.InferenceServiceSpec:
    return api.InferenceServiceSpec.model_validate({"model": {"modelVersion": "iris-v1"}, **kw})


def deployment(spec: api.InferenceServiceSpec | None = None, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"replicas": 2, "role": b.STABLE, "served": served()}
    args.update(kw)
    return b.build_deployment(
        spec or isvc_spec(),
        OWNER,
        args["served"],
        args["role"],
        SETTINGS,
        replicas=args["replicas"],
    )


def container(dep: dict[str, Any]) -> dict[str, Any]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dict(c)


def env(dep: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(dep)["env"]}


def test_names_and_url() -> None:
    assert b.predictor_name("iris") == "iris-predictor"
    assert b.canary_name("iris") == "iris-predictor-canary"
    assert b.service_url("iris", "ml") == "http://iris-predictor.ml.svc.cluster.local"


def test_deployment_passes_restricted_pod_security() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container(deployment())["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["runAsNonRoot"] is True
    tmp = next(v for v in pod["volumes"] if v["name"] == b.TMP_VOLUME)
    assert "emptyDir" in tmp
    mounts = {m["mountPath"]: m for m in container(deployment())["volumeMounts"]}
    assert mounts["/tmp"]["name"] == b.TMP_VOLUME


def test_container_contract() -> None:
    dep = deployment(isvc_spec(maxBatchSize=16, maxBatchDelayMs=2.5))
    c = container(dep)
    assert c["command"] == ["kubeloop-serve"]
    assert c["args"] == ["--port", "8080", "--grpc-port", "8081", "--drain-seconds", "5"]
    assert c["image"] == "kubeloop/runtime:1.2.3"
    assert c["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    e = env(dep)
    assert e["KUBELOOP_ARTIFACT_ROOT"] == api.ARTIFACT_MOUNT_PATH
    assert e["KUBELOOP_SERVED_NAME"] == "iris"
    mv = json.loads(e["KUBELOOP_MODEL_VERSION"])
    assert mv["metadata"] == {"name": "iris-v1"}
    assert api.ModelVersionSpec.model_validate(mv["spec"]) == mv_spec(1)
    serving = json.loads(e["KUBELOOP_SERVING"])
    assert serving["maxBatchSize"] == 16
    assert serving["maxBatchDelayMs"] == 2.5
    assert serving["role"] == "stable"
    assert serving["inferenceService"] == "iris"
    assert api.MonitoringSpec.model_validate(serving["monitoring"]) == api.MonitoringSpec()


def test_grpc_port_reaches_the_container_and_kubeloop_serve() -> None:
    c = container(deployment(isvc_spec(grpcPort=9001)))
    assert c["args"][:4] == ["--port", "8080", "--grpc-port", "9001"]
    assert {"name": "grpc", "containerPort": 9001, "protocol": "TCP"} in c["ports"]
    s = parse_settings(c["args"], env(deployment()))
    assert (s.port, s.grpc_port) == (8080, 9001)
    with pytest.raises(ValueError, match=r"spec\.grpcPort: 8080 is the predictor.s HTTP port"):
        isvc_spec(grpcPort=8080)


def test_the_pod_waits_for_the_drain_and_the_graceful_shutdown() -> None:
    """SIGTERM: kubeloop-serve answers for the drain (readiness 503), then finishes what is
    in flight; the kubelet must not SIGKILL it before both are over."""
    dep = deployment()
    pod = dep["spec"]["template"]["spec"]
    s = parse_settings(container(dep)["args"], env(dep))
    assert s.drain_seconds == api.SERVE_DRAIN_SECONDS > 0
    assert pod["terminationGracePeriodSeconds"] > s.drain_seconds + api.SERVE_GRACEFUL_SECONDS


def test_serving_env_is_what_kubeloop_serve_parses() -> None:
    e = env(deployment(role=b.CANARY))
    s = parse_settings(["--port", "8080"], e)
    assert s.model_version_name == "iris-v1"
    assert s.served_name == "iris"
    assert s.role == "canary"
    assert str(s.artifact_root) == api.ARTIFACT_MOUNT_PATH


def test_artifact_pvc_mounted_read_only() -> None:
    dep = deployment()
    vol = next(
        v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == b.ARTIFACT_VOLUME
    )
    assert vol["persistentVolumeClaim"] == {"claimName": "artifacts-pvc", "readOnly": True}
    mount = next(m for m in container(dep)["volumeMounts"] if m["name"] == b.ARTIFACT_VOLUME)
    assert mount == {
        "name": b.ARTIFACT_VOLUME,
        "mountPath": api.ARTIFACT_MOUNT_PATH,
        "readOnly": True,
    }


def test_labels_selector_and_scrape_annotations() -> None:
    dep = deployment(role=b.CANARY, served=served(3))
    assert dep["metadata"]["name"] == "iris-predictor-canary"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "iris",
        "app.kubernetes.io/component": "predictor",
        "app.kubernetes.io/managed-by": "kubeloop",
        "app.kubernetes.io/part-of": "kubeloop",
        "kubeloop.io/inferenceservice": "iris",
        "kubeloop.io/model": "iris",
        "kubeloop.io/modelversion": "iris-v3",
        "kubeloop.io/role": "canary",
    }
    # The selector is immutable: it must not mention the version.
    sel = dep["spec"]["selector"]["matchLabels"]
    assert sel == {
        "kubeloop.io/inferenceservice": "iris",
        "app.kubernetes.io/component": "predictor",
        "kubeloop.io/role": "canary",
    }
    assert all(labels[k] == v for k, v in sel.items())
    assert dep["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    owner = dep["metadata"]["ownerReferences"][0]
    assert owner["controller"] is True
    assert owner["blockOwnerDeletion"] is True
    assert owner["uid"] == "uid-1"


def test_service_selects_stable_and_canary_pods() -> None:
    svc = b.build_service(OWNER)
    assert svc["metadata"]["name"] == "iris-predictor"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "grpc",
            "port": 8081,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        },
    ]
    assert b.build_service(OWNER, 9000)["spec"]["ports"][1]["port"] == 9000
    for role in (b.STABLE, b.CANARY):
        pod_labels = deployment(role=role)["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels[k] == v for k, v in svc["spec"]["selector"].items())


def test_rollout_strategy_and_replicas() -> None:
    spec = isvc_spec(
        rollout={"maxSurge": "1", "maxUnavailable": "25%", "progressDeadlineSeconds": 90}
    )
    dep = deployment(spec, replicas=4)
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"},
    }
    assert dep["spec"]["progressDeadlineSeconds"] == 90
    assert dep["spec"]["replicas"] == 4
    default = deployment(isvc_spec())["spec"]["strategy"]["rollingUpdate"]
    assert default == {"maxSurge": "25%", "maxUnavailable": 0}
    # Autoscaled: the HPA owns the replica count, so the Deployment leaves it out.
    assert "replicas" not in deployment(replicas=None)["spec"]


def test_resources_default_and_override() -> None:
    assert container(deployment())["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}}
    spec = isvc_spec(resources={"requests": {"memory": "1Gi"}, "limits": {"cpu": "2"}})
    assert container(deployment(spec))["resources"] == {
        "requests": {"cpu": "100m", "memory": "1Gi"},
        "limits": {"cpu": "2"},
    }


def test_pod_template_is_deterministic_and_ignores_aliases() -> None:
    a = deployment(served=served(1, aliases=[]))
    c = deployment(served=served(1, aliases=["production"]))
    assert json.dumps(a, sort_keys=True) == json.dumps(c, sort_keys=True)
    # JSON env values are canonical: sorted keys, no whitespace.
    raw = env(a)["KUBELOOP_MODEL_VERSION"]
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    raw = env(a)["KUBELOOP_SERVING"]
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    # A different version changes the template.
    assert deployment(served=served(2))["spec"]["template"] != a["spec"]["template"]


@pytest.mark.parametrize(
    ("stable", "percent", "expected"),
    [
        (3, 25, 1),  # 1/(3+1) = 25 %
        (3, 50, 3),
        (4, 20, 1),
        (9, 10, 1),
        (1, 10, 1),  # at least one canary replica: 50 % is the best a 1-replica split can do
        (6, 25, 2),
        (5, 0, 0),
        (0, 25, 0),
        (3, 100, 3),
    ],
)
def test_canary_replicas(stable: int, percent: int, expected: int) -> None:
    assert b.canary_replicas(stable, percent) == expected


def test_canary_replicas_round_the_ideal_ratio() -> None:
    for n in range(1, 21):
        for p in range(1, 100):
            k = b.canary_replicas(n, p)
            ideal = n * p / (100 - p)  # k/(n+k) == p/100 exactly
            assert k >= 1
            if ideal >= 0.5:
                assert abs(k - ideal) <= 0.5, (n, p, k)
            else:
                assert k == 1, (n, p, k)


def test_hpa() -> None:
    hpa = b.build_hpa(
        api.Autoscaling(min_replicas=2, max_replicas=5, target_cpu_utilization_percentage=60), OWNER
    )
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "iris-predictor",
    }
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] == 5
    target = hpa["spec"]["metrics"][0]["resource"]
    assert target == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}


def test_pdb_rules() -> None:
    pdb = b.build_pdb(OWNER)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == b.service_selector("iris")
    assert not b.wants_pdb(isvc_spec(replicas=1))
    assert b.wants_pdb(isvc_spec(replicas=2))
    assert not b.wants_pdb(isvc_spec(replicas=5, autoscaling={"minReplicas": 1, "maxReplicas": 4}))
    assert b.wants_pdb(isvc_spec(replicas=1, autoscaling={"minReplicas": 2, "maxReplicas": 4}))
