"""The training Job of a TrainingJob: a pure function of the spec and the operator settings.

One ``batch/v1`` Job per TrainingJob, named ``<trainingjob>-train``. Its single container
runs ``kubeloop-train`` from the runtime image with the TrainingJob spec as JSON in
``KUBELOOP_TRAINING_SPEC``, writes artifacts to the artifact PVC (mounted at
:data:`api.ARTIFACT_MOUNT_PATH`) and its result document to ``/dev/termination-log``,
where the operator reads it back from the pod status.

The pod passes the ``restricted`` Pod Security Standard. Exit codes 2 (invalid spec or
data) and 3 (quality gate failed) fail the Job at once through a ``podFailurePolicy``:
retrying a run that cannot succeed only burns compute. Evictions and other disruptions do
not count against ``backoffLimit``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubeloop.builders.storage import is_object_uri, storage_env
from kubeloop.settings import Settings
from kubeloop_runtime import api

CONTAINER = "train"
COMPONENT = "trainer"
JOB_SUFFIX = "-train"
MAX_NAME = 63
# The user and group every Kubeloop container runs as (distroless "nonroot").
NONROOT_UID = 65532

VOLUME_ARTIFACTS = "artifacts"
VOLUME_TMP = "tmp"
VOLUME_DATA_CONFIGMAP = "data-configmap"
VOLUME_DATA_PVC = "data-pvc"
DATA_CONFIGMAP_DIR = f"{api.DATA_MOUNT_PATH}/configmap"
DATA_PVC_DIR = f"{api.DATA_MOUNT_PATH}/pvc"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def job_name(trainingjob: str) -> str:
    """``<trainingjob>-train``; names too long for a DNS label keep a hash of the full name."""
    name = f"{trainingjob}{JOB_SUFFIX}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(trainingjob.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(JOB_SUFFIX) - len(digest) - 1
    return f"{trainingjob[:keep].rstrip('-')}-{digest}{JOB_SUFFIX}"


def output_uri(
    settings: Settings, namespace: str, trainingjob: str, artifact_uri: str | None = None
) -> str:
    """Where the run writes its artifacts: a per-run directory on the artifact PVC, or
    under ``spec.artifact.uri`` in an object store."""
    if artifact_uri:
        return f"{artifact_uri.rstrip('/')}/{namespace}/{trainingjob}"
    return f"pvc://{settings.artifact_pvc}/{namespace}/{trainingjob}"


def uses_object_storage(spec: api.TrainingJobSpec) -> bool:
    return (
        spec.storage is not None
        or is_object_uri(spec.artifact.uri)
        or is_object_uri(spec.dataset.uri)
    )


def labels(trainingjob: str, model: str) -> dict[str, str]:
    """Labels of the Job and its pods; ``kubeloop.io/trainingjob`` finds them again."""
    return {
        api.LABEL_TRAININGJOB: trainingjob,
        api.LABEL_MODEL: model,
        api.LABEL_NAME: "kubeloop",
        "app.kubernetes.io/instance": trainingjob,
        api.LABEL_COMPONENT: COMPONENT,
        api.LABEL_PART_OF: "kubeloop",
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
    }


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """A controller owner reference to a Kubeloop object (garbage collection deletes us)."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "fsGroup": NONROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _data_volumes(dataset: api.DatasetSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts that bring a configMap or pvc dataset into the pod (read-only)."""
    if dataset.config_map is not None:
        key = dataset.config_map.key
        volume = {
            "name": VOLUME_DATA_CONFIGMAP,
            "configMap": {
                "name": dataset.config_map.name,
                "items": [{"key": key, "path": key}],
            },
        }
        mount = {"name": VOLUME_DATA_CONFIGMAP, "mountPath": DATA_CONFIGMAP_DIR, "readOnly": True}
        return [volume], [mount]
    if dataset.pvc is not None:
        volume = {
            "name": VOLUME_DATA_PVC,
            "persistentVolumeClaim": {"claimName": dataset.pvc.claim_name, "readOnly": True},
        }
        mount = {"name": VOLUME_DATA_PVC, "mountPath": DATA_PVC_DIR, "readOnly": True}
        return [volume], [mount]
    return [], []


def _run_policy(policy: api.RunPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {"backoffLimit": policy.backoff_limit, "suspend": policy.suspend}
    if policy.active_deadline_seconds is not None:
        out["activeDeadlineSeconds"] = policy.active_deadline_seconds
    if policy.ttl_seconds_after_finished is not None:
        out["ttlSecondsAfterFinished"] = policy.ttl_seconds_after_finished
    return out


def pod_failure_policy() -> dict[str, Any]:
    """Fail the Job at once on exit codes that retrying cannot fix; ignore disruptions."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [api.EXIT_INVALID, api.EXIT_GATE_FAILED],
                },
            },
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
        ]
    }


def _version_env(env: str, name: str | None, mv: dict[str, Any] | None) -> list[dict[str, str]]:
    if name is None or mv is None:
        return []
    doc = {"metadata": {"name": name}, "spec": mv.get("spec") or {}}
    return [{"name": env, "value": json.dumps(doc, sort_keys=True, separators=(",", ":"))}]


def _champion_env(
    spec: api.TrainingJobSpec, champion: dict[str, Any] | None, reference: dict[str, Any] | None
) -> list[dict[str, str]]:
    env = _version_env(api.ENV_CHAMPION, spec.champion, champion)
    if spec.validation_reference != spec.champion:
        env += _version_env(api.ENV_VALIDATION_REFERENCE, spec.validation_reference, reference)
    return env


def build_job(
    tj_name: str,
    namespace: str,
    uid: str,
    spec: api.TrainingJobSpec,
    settings: Settings,
    *,
    champion: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs one training of ``spec`` for TrainingJob ``tj_name``.

    ``champion`` (the ModelVersion ``spec.champion`` names, as read from the API server) is
    passed as ``KUBELOOP_CHAMPION`` = ``{"metadata": {"name"}, "spec"}`` for the champion gate;
    ``reference`` (the one ``spec.validation.reference`` names, when it is not the champion)
    as ``KUBELOOP_VALIDATION_REFERENCE``, for data validation.
    """
    job_labels = labels(tj_name, spec.model)
    data_volumes, data_mounts = _data_volumes(spec.dataset)
    # With an object store for artifacts, no volume is shared between nodes.
    on_pvc = spec.artifact.uri is None
    s3_env, s3_env_from = (
        storage_env(spec.storage, settings) if uses_object_storage(spec) else ([], [])
    )
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or settings.runtime_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["kubeloop-train"],
        "args": ["--output", output_uri(settings, namespace, tj_name, spec.artifact.uri)],
        "env": [
            {
                "name": api.ENV_TRAINING_SPEC,
                "value": json.dumps(spec.wire(), sort_keys=True, separators=(",", ":")),
            },
            {"name": api.ENV_ARTIFACT_ROOT, "value": api.ARTIFACT_MOUNT_PATH},
            {"name": api.ENV_DATA_ROOT, "value": api.DATA_MOUNT_PATH},
            *_champion_env(spec, champion, reference),
            *s3_env,
            # Writable scratch: the root filesystem is read-only.
            {"name": "HOME", "value": "/tmp"},
            {"name": "TMPDIR", "value": "/tmp"},
        ],
        "volumeMounts": [
            *([{"name": VOLUME_ARTIFACTS, "mountPath": api.ARTIFACT_MOUNT_PATH}] if on_pvc else []),
            {"name": VOLUME_TMP, "mountPath": "/tmp"},
            *data_mounts,
        ],
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
    }
    if s3_env_from:
        container["envFrom"] = s3_env_from
    if spec.resources is not None:
        container["resources"] = spec.resources.wire()
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Training reads data and writes files; it never talks to the API server.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            *(
                [
                    {
                        "name": VOLUME_ARTIFACTS,
                        "persistentVolumeClaim": {"claimName": settings.artifact_pvc},
                    }
                ]
                if on_pvc
                else []
            ),
            {"name": VOLUME_TMP, "emptyDir": {}},
            *data_volumes,
        ],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.wire() for t in spec.tolerations]
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(tj_name),
            "namespace": namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference("TrainingJob", tj_name, uid)],
        },
        "spec": {
            **_run_policy(spec.run_policy),
            "completions": 1,
            "parallelism": 1,
            "podFailurePolicy": pod_failure_policy(),
            "template": {
                "metadata": {"labels": dict(job_labels)},
                "spec": pod_spec,
            },
        },
    }
