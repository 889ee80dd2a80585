"""Children of an InferenceService: predictor Deployments, Service, HPA, PDB. Pure.

Every function here takes typed specs (plus the owner object and the operator settings) and
returns a manifest dict ready for server-side apply. Nothing reads the clock or the
environment, and every JSON value is serialised with sorted keys, so building the same
inputs twice gives byte-identical pod templates: restarting the operator never rolls pods.

Names are deterministic: ``<isvc>-predictor`` (stable Deployment, Service, HPA, PDB) and
``<isvc>-predictor-canary`` (canary Deployment). The Service selects every predictor pod of
the InferenceService (stable and canary), so traffic splits by ready-replica ratio.

Size (~450 lines): every child of an InferenceService, built from the same names, labels
and pod template; the canary's replica arithmetic lives with the Deployments it sizes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubeloop.builders.storage import is_object_uri, storage_env
from kubeloop.settings import Settings
from kubeloop_runtime import api

Manifest = dict[str, Any]
Role = Literal["stable", "canary"]
STABLE: Role = "stable"
CANARY: Role = "canary"

COMPONENT = "predictor"
HTTP_PORT = api.HTTP_PORT
SERVICE_PORT = 80
RUN_AS_USER = 65532
DEFAULT_REQUESTS: dict[str, str] = {"cpu": "100m", "memory": "256Mi"}
READINESS_PATH = "/v2/health/ready"
LIVENESS_PATH = "/v2/health/live"
SCRAPE_ANNOTATIONS: dict[str, str] = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(HTTP_PORT),
    "prometheus.io/path": "/metrics",
}

ARTIFACT_VOLUME = "artifacts"
TMP_VOLUME = "tmp"


def predictor_name(isvc: str) -> str:
    """The stable Deployment, the Service, the HPA and the PDB share this name."""
    return f"{isvc}-predictor"


def canary_name(isvc: str) -> str:
    return f"{isvc}-predictor-canary"


def deployment_name(isvc: str, role: Role) -> str:
    return predictor_name(isvc) if role == STABLE else canary_name(isvc)


def service_url(isvc: str, namespace: str) -> str:
    """In-cluster base URL; V2 inference is at ``<url>/v2/models/<isvc>/infer``."""
    return f"http://{predictor_name(isvc)}.{namespace}.svc.cluster.local"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and fixed separators: the same input, the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class Owner:
    """What children need to know about their InferenceService."""

    name: str
    namespace: str
    uid: str
    api_version: str = api.API_VERSION
    kind: str = "InferenceService"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])

    def reference(self, *, controller: bool = True) -> dict[str, Any]:
        """The owner reference; ``controller=False`` for children another controller
        reconciles (the closed loop's TrainingJobs), which do not block the deletion."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": controller,
            "blockOwnerDeletion": controller,
        }


@dataclass(frozen=True)
class ServedVersion:
    """A ModelVersion to serve: its object name and its parsed spec."""

    name: str
    spec: api.ModelVersionSpec


def base_labels(isvc: str) -> dict[str, str]:
    """Labels on every child of the InferenceService."""
    return {
        api.LABEL_NAME: isvc,
        api.LABEL_COMPONENT: COMPONENT,
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
        api.LABEL_PART_OF: "kubeloop",
        api.LABEL_INFERENCESERVICE: isvc,
    }


def service_selector(isvc: str) -> dict[str, str]:
    """Every predictor pod of the InferenceService, stable and canary."""
    return {api.LABEL_INFERENCESERVICE: isvc, api.LABEL_COMPONENT: COMPONENT}


def deployment_selector(isvc: str, role: Role) -> dict[str, str]:
    """Immutable once created: it must not name the model version."""
    return {**service_selector(isvc), api.LABEL_ROLE: role}


def version_labels(isvc: str, served: ServedVersion, role: Role) -> dict[str, str]:
    return {
        **base_labels(isvc),
        api.LABEL_MODEL: served.spec.model,
        api.LABEL_MODELVERSION: served.name,
        api.LABEL_ROLE: role,
    }


def _metadata(name: str, owner: Owner, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(sorted(labels.items())),
        "ownerReferences": [owner.reference()],
    }


# ----------------------------------------------------------------------------- replicas


def canary_replicas(stable: int, traffic_percent: int) -> int:
    """Canary replicas so that canary/(stable+canary) comes closest to ``traffic_percent``.

    ``max(1, round(N * p / (100 - p)))`` for 0 < p < 100 (half rounds up); 0 for p = 0 or
    N = 0; N for p = 100 (the stable Deployment then scales to 0 once the canary is ready,
    see :func:`stable_replicas_with_canary`). The split is by replica count, so the
    achievable shares are k/(N+k): with 3 stable replicas, 25 % gives 1 canary (25 %),
    10 % still gives 1 canary (25 %); with 1 stable replica any 0 < p <= 50 gives 50 %.
    """
    if stable <= 0 or traffic_percent <= 0:
        return 0
    if traffic_percent >= 100:
        return stable
    exact = stable * traffic_percent / (100 - traffic_percent)
    return max(1, math.floor(exact + 0.5))


def traffic_percent(replicas: int, total: int) -> int:
    """The share of requests ``replicas`` of ``total`` equal pods receive, in percent."""
    if total <= 0:
        return 0
    return math.floor(100 * replicas / total + 0.5)


def stable_base_replicas(spec: api.InferenceServiceSpec) -> int:
    """The stable replica count the canary ratio is computed against."""
    if spec.autoscaling is not None:
        return spec.autoscaling.min_replicas
    return spec.replicas


def wants_pdb(spec: api.InferenceServiceSpec) -> bool:
    """A PDB (minAvailable 1) only when the stable predictor runs more than one replica."""
    return stable_base_replicas(spec) > 1


# ----------------------------------------------------------------------------- env


def model_version_env(served: ServedVersion) -> str:
    """``KUBELOOP_MODEL_VERSION``: the ModelVersion object the server loads.

    ``aliases`` is left out: it is the one mutable field, and moving an alias must not
    restart pods that keep serving the same artifact.
    """
    spec = served.spec.wire()
    spec.pop("aliases", None)
    return canonical_json({"metadata": {"name": served.name}, "spec": spec})


def serving_env(spec: api.InferenceServiceSpec, isvc: str, role: Role) -> str:
    """``KUBELOOP_SERVING``: the :class:`~kubeloop_runtime.api.ServingConfig` kubeloop-serve
    reads."""
    config = api.ServingConfig(
        monitoring=spec.monitoring,
        max_batch_size=spec.max_batch_size,
        max_batch_delay_ms=spec.max_batch_delay_ms,
        role=role,
        inference_service=isvc,
    )
    return canonical_json(config.wire())


# ----------------------------------------------------------------------------- pods


def _int_or_percent(value: str) -> int | str:
    """The API wants an integer for counts and a string for percentages."""
    return value if value.endswith("%") else int(value)


def _resources(spec: api.InferenceServiceSpec) -> dict[str, Any]:
    requests = dict(DEFAULT_REQUESTS)
    limits: dict[str, str] = {}
    if spec.resources is not None:
        requests.update(spec.resources.requests or {})
        limits.update(spec.resources.limits or {})
    out: dict[str, Any] = {"requests": dict(sorted(requests.items()))}
    if limits:
        out["limits"] = dict(sorted(limits.items()))
    return out


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def predictor_container(
    spec: api.InferenceServiceSpec,
    isvc: str,
    served: ServedVersion,
    role: Role,
    settings: Settings,
) -> dict[str, Any]:
    env = [
        {"name": api.ENV_ARTIFACT_ROOT, "value": api.ARTIFACT_MOUNT_PATH},
        {"name": api.ENV_MODEL_VERSION, "value": model_version_env(served)},
        {"name": api.ENV_SERVED_NAME, "value": isvc},
        {"name": api.ENV_SERVING, "value": serving_env(spec, isvc, role)},
    ]
    env_from: list[dict[str, Any]] = []
    if on_object_store(served):
        s3_env, env_from = storage_env(served.spec.artifact.storage, settings)
        env.extend(s3_env)
    container: dict[str, Any] = {
        "name": "predictor",
        "image": spec.image or settings.runtime_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["kubeloop-serve"],
        "args": [
            "--port",
            str(HTTP_PORT),
            "--grpc-port",
            str(spec.grpc_port),
            "--drain-seconds",
            str(api.SERVE_DRAIN_SECONDS),
        ],
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": spec.grpc_port, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": READINESS_PATH, "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVENESS_PATH, "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 6,
        },
        "resources": _resources(spec),
        "securityContext": container_security_context(),
        "volumeMounts": [
            *(
                []
                if on_object_store(served)
                else [
                    {
                        "name": ARTIFACT_VOLUME,
                        "mountPath": api.ARTIFACT_MOUNT_PATH,
                        "readOnly": True,
                    }
                ]
            ),
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from:
        container["envFrom"] = env_from
    return container


def on_object_store(served: ServedVersion) -> bool:
    """Whether the version's artifact is in an object store (no artifact volume then)."""
    return is_object_uri(served.spec.artifact.uri)


def _tmp_size(served: ServedVersion) -> str:
    """256 MiB of scratch, plus room for the downloaded artifacts of an object store."""
    if not on_object_store(served):
        return "256Mi"
    mib = 256 + 3 * served.spec.artifact.size_bytes // (1 << 20)  # model, ONNX, slack
    return f"{mib}Mi"


def build_deployment(
    spec: api.InferenceServiceSpec,
    owner: Owner,
    served: ServedVersion,
    role: Role,
    settings: Settings,
    *,
    replicas: int | None,
) -> Manifest:
    """A predictor Deployment; ``replicas=None`` leaves the count to the HPA."""
    name = deployment_name(owner.name, role)
    labels = version_labels(owner.name, served, role)
    deploy_spec: dict[str, Any] = {
        "selector": {"matchLabels": deployment_selector(owner.name, role)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxSurge": _int_or_percent(spec.rollout.max_surge),
                "maxUnavailable": _int_or_percent(spec.rollout.max_unavailable),
            },
        },
        "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {
                "labels": dict(sorted(labels.items())),
                "annotations": dict(sorted(SCRAPE_ANNOTATIONS.items())),
            },
            "spec": {
                # kubeloop-serve drains before it stops (kubeloop_runtime.serve.server).
                "terminationGracePeriodSeconds": api.SERVE_TERMINATION_GRACE_SECONDS,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security_context(),
                "containers": [predictor_container(spec, owner.name, served, role, settings)],
                "volumes": [
                    *(
                        []
                        if on_object_store(served)
                        else [
                            {
                                "name": ARTIFACT_VOLUME,
                                "persistentVolumeClaim": {
                                    "claimName": settings.artifact_pvc,
                                    "readOnly": True,
                                },
                            }
                        ]
                    ),
                    # Downloads of object-store artifacts land here too.
                    {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": _tmp_size(served)}},
                ],
            },
        },
    }
    if replicas is not None:
        deploy_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, owner, labels),
        "spec": deploy_spec,
    }


# ----------------------------------------------------------------------------- others


def build_service(owner: Owner, grpc_port: int = api.GRPC_PORT) -> Manifest:
    """HTTP on port 80 and the Open Inference Protocol's gRPC on ``grpc_port`` (the same
    number as the container's), named and marked (appProtocol) so meshes and gateways speak
    HTTP/2 to it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(predictor_name(owner.name), owner, base_labels(owner.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": service_selector(owner.name),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": grpc_port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
            ],
        },
    }


def build_hpa(autoscaling: api.Autoscaling, owner: Owner) -> Manifest:
    """An autoscaling/v2 HPA on CPU utilisation for the stable Deployment."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(predictor_name(owner.name), owner, base_labels(owner.name)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": predictor_name(owner.name),
            },
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def build_pdb(owner: Owner) -> Manifest:
    """Keep at least one predictor pod (stable or canary) through voluntary disruptions."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(predictor_name(owner.name), owner, base_labels(owner.name)),
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": service_selector(owner.name)},
        },
    }
