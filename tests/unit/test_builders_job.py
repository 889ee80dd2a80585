"""The training Job builder: names, security, mounts, run policy, the container contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kubeloop.builders.job import (
    CONTAINER,
    DATA_CONFIGMAP_DIR,
    DATA_PVC_DIR,
    build_job,
    job_name,
)
from kubeloop.settings import Settings
from kubeloop_runtime import api
from kubeloop_runtime.train.data import load_dataset

SETTINGS = Settings(runtime_image="example/runtime:1", image_pull_policy="Never")


def spec(**overrides: Any) -> api.TrainingJobSpec:
    base: dict[str, Any] = {
        "model": "iris",
        "dataset": {"builtin": "iris"},
        "estimator": {"type": "LogisticRegression"},
    }
    base.update(overrides)
    return api.TrainingJobSpec.model_validate(base)


def build(s: api.TrainingJobSpec | None = None, name: str = "iris-run") -> dict[str, Any]:
    return build_job(name, "ml", "uid-1", s or spec(), SETTINGS)


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def mounts(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container(job)["volumeMounts"]}


def volumes(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}


def env(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(job)["env"]}


def test_name_is_deterministic_and_a_dns_label() -> None:
    assert job_name("iris-run") == "iris-run-train"
    long = "a" * 60
    n = job_name(long)
    assert len(n) <= 63
    assert n.endswith("-train")
    assert n == job_name(long)  # deterministic
    assert job_name("a" * 59 + "b") != job_name("a" * 59 + "c")  # the hash keeps them apart
    assert re.match(api.DNS1123_LABEL, n)


def test_metadata_labels_and_owner() -> None:
    job = build()
    meta = job["metadata"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert meta["name"] == "iris-run-train"
    assert meta["namespace"] == "ml"
    for labels in (meta["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels[api.LABEL_TRAININGJOB] == "iris-run"
        assert labels[api.LABEL_MODEL] == "iris"
        assert labels[api.LABEL_MANAGED_BY] == "kubeloop"
        assert labels[api.LABEL_COMPONENT] == "trainer"
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "TrainingJob",
        "name": "iris-run",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_restricted_pod_security() -> None:
    job = build()
    pod = job["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container(job)["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["runAsNonRoot"] is True
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    # A writable /tmp, since the root filesystem is read-only.
    assert volumes(job)["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert "/tmp" in mounts(job)
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    # No host namespaces or hostPath volumes, which restricted forbids.
    assert not any(k.startswith("host") for k in pod)
    assert all("hostPath" not in v for v in pod["volumes"])


def test_container_contract() -> None:
    s = spec()
    job = build(s)
    c = container(job)
    assert c["name"] == CONTAINER
    assert c["command"] == ["kubeloop-train"]
    assert c["args"] == ["--output", "pvc://kubeloop-artifacts/ml/iris-run"]
    assert c["image"] == "example/runtime:1"
    assert c["imagePullPolicy"] == "Never"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    e = env(job)
    assert e["KUBELOOP_ARTIFACT_ROOT"] == api.ARTIFACT_MOUNT_PATH
    assert e["KUBELOOP_DATA_ROOT"] == api.DATA_MOUNT_PATH
    # The trainer reads back exactly the spec the operator reconciles.
    assert api.TrainingJobSpec.model_validate(json.loads(e["KUBELOOP_TRAINING_SPEC"])) == s
    art = mounts(job)[api.ARTIFACT_MOUNT_PATH]
    assert volumes(job)[art["name"]]["persistentVolumeClaim"] == {"claimName": "kubeloop-artifacts"}


def test_image_from_spec_wins() -> None:
    assert container(build(spec(image="me/train:2")))["image"] == "me/train:2"


def test_configmap_dataset_is_mounted_read_only() -> None:
    s = spec(dataset={"configMap": {"name": "data", "key": "iris.csv"}, "target": "species"})
    job = build(s)
    m = mounts(job)[DATA_CONFIGMAP_DIR]
    assert m["readOnly"] is True
    assert volumes(job)[m["name"]]["configMap"] == {
        "name": "data",
        "items": [{"key": "iris.csv", "path": "iris.csv"}],
    }
    assert DATA_PVC_DIR not in mounts(job)


def test_pvc_dataset_is_mounted_read_only() -> None:
    s = spec(dataset={"pvc": {"claimName": "lake", "path": "x/y.csv"}, "target": "y"})
    job = build(s)
    m = mounts(job)[DATA_PVC_DIR]
    assert m["readOnly"] is True
    assert volumes(job)[m["name"]]["persistentVolumeClaim"] == {
        "claimName": "lake",
        "readOnly": True,
    }
    assert DATA_CONFIGMAP_DIR not in mounts(job)


@pytest.mark.parametrize(
    "dataset",
    [
        {"configMap": {"name": "data", "key": "iris.csv"}, "target": "y"},
        {"pvc": {"claimName": "lake", "path": "x/y.csv"}, "target": "y"},
    ],
)
def test_the_trainer_reads_the_file_where_the_job_mounts_it(
    tmp_path: Path, dataset: dict[str, Any]
) -> None:
    """The Job's mounts and KUBELOOP_DATA_ROOT, laid out under tmp_path as the kubelet
    would, are where kubeloop-train's loader looks."""
    s = spec(dataset=dataset)
    job = build(s)
    (mount,) = [m for p, m in mounts(job).items() if p.startswith(api.DATA_MOUNT_PATH)]
    source = volumes(job)[mount["name"]]
    if "configMap" in source:
        files = [item["path"] for item in source["configMap"]["items"]]
    else:
        files = [dataset["pvc"]["path"]]
    for f in files:
        path = tmp_path / mount["mountPath"].lstrip("/") / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("a,y\n1,0\n2,1\n")
    root = tmp_path / env(job)["KUBELOOP_DATA_ROOT"].lstrip("/")
    loaded = load_dataset(s.dataset, root)
    assert loaded.frame["a"].tolist() == [1, 2]


def test_builtin_dataset_mounts_no_data() -> None:
    assert set(mounts(build())) == {api.ARTIFACT_MOUNT_PATH, "/tmp"}


def test_run_policy_maps_onto_the_job() -> None:
    default = build()["spec"]
    assert default["backoffLimit"] == 0
    assert default["suspend"] is False
    assert "activeDeadlineSeconds" not in default
    assert "ttlSecondsAfterFinished" not in default
    s = spec(
        runPolicy={
            "backoffLimit": 3,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 3600,
            "suspend": True,
        }
    )
    js = build(s)["spec"]
    assert js["backoffLimit"] == 3
    assert js["activeDeadlineSeconds"] == 600
    assert js["ttlSecondsAfterFinished"] == 3600
    assert js["suspend"] is True


def test_pod_failure_policy_fails_fast_on_invalid_and_gate() -> None:
    rules = build()["spec"]["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert len(fail) == 1
    on = fail[0]["onExitCodes"]
    assert on["containerName"] == CONTAINER
    assert on["operator"] == "In"
    assert sorted(on["values"]) == [api.EXIT_INVALID, api.EXIT_GATE_FAILED] == [2, 3]
    # Exit code 1 (unexpected) is retried up to backoffLimit: no rule matches it.
    assert not any(1 in (r.get("onExitCodes") or {}).get("values", []) for r in rules)


def test_scheduling_and_resources() -> None:
    s = spec(
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        nodeSelector={"pool": "train"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        serviceAccountName="trainer",
    )
    job = build(s)
    pod = job["spec"]["template"]["spec"]
    assert container(job)["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }
    assert pod["nodeSelector"] == {"pool": "train"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "trainer"
    plain = build()["spec"]["template"]["spec"]
    assert "nodeSelector" not in plain and "tolerations" not in plain
    assert "resources" not in container(build())


@pytest.mark.parametrize("name", ["a", "iris-run", "x" * 52])
def test_build_is_pure(name: str) -> None:
    assert build(name=name) == build(name=name)
