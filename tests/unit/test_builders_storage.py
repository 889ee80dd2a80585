"""Object storage in the pods the operator builds: env, the Secret by envFrom, no shared volume."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from kubeloop.builders import job as jb
from kubeloop.builders import predictor as pb
from kubeloop.builders.modelversion import model_version_spec
from kubeloop.settings import Settings
from kubeloop_runtime import api
from tests.unit.test_builders_predictor import OWNER, isvc_spec, mv_spec

SETTINGS = Settings(runtime_image="example/runtime:1", image_pull_policy="Never")
STORAGE = {"endpoint": "http://10.213.77.1:7070", "region": "eu-west-1", "pathStyle": True,
           "secretName": "s3-creds"}  # fmt: skip


def tj_spec(**overrides: Any) -> api.TrainingJobSpec:
    base: dict[str, Any] = {
        "model": "iris",
        "dataset": {"uri": "s3://data/iris/", "target": "target"},
        "estimator": {"type": "LogisticRegression"},
        "artifact": {"uri": "s3://models/kubeloop"},
        "storage": STORAGE,
    }
    base.update(overrides)
    return api.TrainingJobSpec.model_validate(base)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_training_job_on_s3_has_no_artifact_volume() -> None:
    job = jb.build_job("iris-run", "ml", "uid", tj_spec(), SETTINGS)
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["--output", "s3://models/kubeloop/ml/iris-run"]
    assert jb.VOLUME_ARTIFACTS not in {v["name"] for v in pod["volumes"]}
    assert jb.VOLUME_ARTIFACTS not in {m["name"] for m in c["volumeMounts"]}
    env = env_of(c)
    assert env["AWS_ENDPOINT_URL"] == "http://10.213.77.1:7070"
    assert env["AWS_ALLOW_HTTP"] == "true"
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] == "false"
    # The credentials arrive from the Secret at run time, never as values in the Job.
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(job)


def test_operator_defaults_fill_what_the_spec_leaves_out() -> None:
    settings = Settings(
        s3_endpoint="https://s3.example.test", s3_region="auto", s3_path_style=False
    )
    job = jb.build_job("r", "ml", "uid", tj_spec(storage=None), settings)
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    assert env["AWS_ENDPOINT_URL"] == "https://s3.example.test"
    assert "AWS_ALLOW_HTTP" not in env
    assert env["AWS_REGION"] == "auto"
    assert env["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] == "true"
    assert "envFrom" not in c  # no Secret: the pod's own identity (web identity, roles)


def test_pvc_jobs_are_unchanged() -> None:
    spec = api.TrainingJobSpec.model_validate(
        {"model": "iris", "dataset": {"builtin": "iris"}, "estimator": {"type": "SVC"}}
    )
    job = jb.build_job("r", "ml", "uid", spec, SETTINGS)
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["--output", "pvc://kubeloop-artifacts/ml/r"]
    assert "envFrom" not in c
    assert not any(e["name"].startswith("AWS_") for e in c["env"])


def test_model_version_records_how_to_reach_its_artifact() -> None:
    spec = tj_spec()
    base = mv_spec()
    result = api.TrainingResult(
        succeeded=True,
        reason="Trained",
        task=api.Task.CLASSIFICATION,
        artifact=base.artifact.model_copy(update={"uri": "s3://models/kubeloop/ml/r/model.skops"}),
        framework=base.framework,
        signature=base.signature,
        dataset=base.dataset,
    )
    mv = model_version_spec(trainingjob="r", spec=spec, result=result, version=1, image="img")
    assert mv.artifact.storage == spec.storage


def test_predictor_of_an_s3_version() -> None:
    mv = mv_spec().model_copy(
        update={
            "artifact": mv_spec().artifact.model_copy(
                update={
                    "uri": "s3://models/kubeloop/ml/r/model.skops",
                    "size_bytes": 300 << 20,
                    "storage": api.ObjectStorage.model_validate(STORAGE),
                }
            )
        }
    )
    served = pb.ServedVersion(name="iris-v1", spec=mv)
    dep = pb.build_deployment(isvc_spec(), OWNER, served, pb.STABLE, SETTINGS, replicas=1)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert pb.ARTIFACT_VOLUME not in volumes
    # Scratch sized for the download (model, ONNX graph) besides the 256 MiB of work space.
    assert volumes[pb.TMP_VOLUME]["emptyDir"]["sizeLimit"] == f"{256 + 900}Mi"
    assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert env_of(c)["AWS_ENDPOINT_URL"] == "http://10.213.77.1:7070"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dataset", {"uri": "http://x/y.csv", "target": "t"}),
        ("dataset", {"uri": "s3://Upper/x.csv", "target": "t"}),
        ("artifact", {"uri": "pvc://claim/x"}),
        ("storage", {"endpoint": "ftp://x"}),
        ("storage", {"secretName": "Not_A_Name"}),
    ],
)
def test_invalid_storage_fields_are_refused(field: str, value: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        tj_spec(**{field: value})


def test_dataset_uri_is_one_source_among_others() -> None:
    with pytest.raises(ValidationError, match="exactly one of builtin, url, uri"):
        tj_spec(dataset={"uri": "s3://data/x.csv", "builtin": "iris"})
