"""Object storage against a real S3 server (versitygw on loopback), the process tier.

kubeloop_runtime.storage's reads and writes, integrity (a changed object refused), and
kubeloop-train / the model loader on s3:// URIs: training from an s3 dataset (one object
and a prefix) into an s3 output, loading it back for serving, and each failure (wrong
credentials, a missing bucket, a missing object) ending in a result that names the spec
field and the cause.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sklearn.datasets
import yaml

from kubeloop_runtime import api, artifacts, storage
from kubeloop_runtime.serve import model as serve_model
from kubeloop_runtime.serve.settings import StartupError
from tests import s3server
from tests.s3server import S3Server

s3_server, s3_env = s3server.s3_server, s3server.s3_env  # the fixtures
pytestmark = pytest.mark.usefixtures("s3_env")


def iris_csv(path: Path, rows: slice = slice(None)) -> Path:
    frame = sklearn.datasets.load_iris(as_frame=True).frame.iloc[rows]
    frame.to_csv(path, index=False)
    return path


def test_roundtrip_streams_and_hashes(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("roundtrip")
    local = tmp_path / "big.bin"
    # Larger than one multipart part and one read chunk: the streaming paths both run.
    local.write_bytes(os.urandom(storage.CHUNK + 12345))
    storage.upload(local, f"{bucket}/dir/big.bin")
    info = storage.head(f"{bucket}/dir/big.bin")
    assert info.size == local.stat().st_size
    listed = storage.list_prefix(f"{bucket}/dir/")
    assert [o.uri for o in listed] == [f"{bucket}/dir/big.bin"]
    sha, size = storage.download(f"{bucket}/dir/big.bin", tmp_path / "back.bin")
    assert (
        sha
        == hashlib.sha256(local.read_bytes()).hexdigest()
        == artifacts.sha256_file(tmp_path / "back.bin")
    )
    assert size == info.size


def test_changed_object_is_refused(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("integrity")
    local = tmp_path / "a.bin"
    local.write_bytes(b"recorded")
    storage.upload(local, f"{bucket}/a.bin")
    recorded = artifacts.sha256_file(local)
    local.write_bytes(b"replaced")
    storage.upload(local, f"{bucket}/a.bin")
    dest = tmp_path / "dest.bin"
    with pytest.raises(artifacts.ArtifactIntegrityError, match="expected " + recorded):
        storage.download(f"{bucket}/a.bin", dest, expected_sha256=recorded)
    assert not dest.exists()
    assert not list(tmp_path.glob(".dest.bin.*"))  # no partial file left behind


@pytest.mark.parametrize(
    ("uri", "cause"),
    [("s3://no-such-bucket/x.csv", "NoSuchBucket"), ("{bucket}/missing.csv", "NoSuchKey")],
)
def test_missing_bucket_and_object(s3_server: S3Server, uri: str, cause: str) -> None:
    uri = uri.format(bucket=s3_server.make_bucket("present"))
    with pytest.raises(storage.StorageError) as e:
        storage.head(uri)
    assert e.value.cause == cause
    with pytest.raises(storage.StorageError) as e:
        storage.download(uri, Path("/nonexistent/never-written"))
    assert e.value.cause == cause


def test_wrong_credentials(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.make_bucket("creds")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    with pytest.raises(storage.StorageError) as e:
        storage.probe(f"{bucket}/prefix")
    assert e.value.cause == "AccessDenied"
    assert "not-the-key" not in str(e.value)  # a value is never in a message


def test_explicit_environment_overrides_the_process(s3_server: S3Server) -> None:
    """What the operator does with a Secret's values: nothing goes through os.environ."""
    bucket = s3_server.make_bucket("explicit")
    env = {**s3_server.env, "AWS_SECRET_ACCESS_KEY": "wrong"}
    with pytest.raises(storage.StorageError, match="denied"):
        storage.list_prefix(f"{bucket}/", env=env)
    assert storage.list_prefix(f"{bucket}/", env=s3_server.env) == []


# ----------------------------------------------------------------------- kubeloop-train


def train(tmp_path: Path, spec: dict[str, Any], output: str) -> tuple[int, dict[str, Any]]:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    proc = subprocess.run(
        [
            sys.executable, "-m", "kubeloop_runtime.train.cli", "--spec", str(spec_file),
            "--output", output, "--termination-log", str(tmp_path / "term"),
        ],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "KUBELOOP_OBJECT_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(lines[0])


def iris_spec(uri: str) -> dict[str, Any]:
    return {
        "model": "iris",
        "dataset": {"uri": uri, "target": "target"},
        "estimator": {"type": "LogisticRegression", "hyperparameters": {"max_iter": 500}},
        "artifact": {"onnx": False},
    }


def test_train_from_s3_into_s3_and_serve(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("walk")
    storage.upload(iris_csv(tmp_path / "iris.csv"), f"{bucket}/data/iris.csv")
    rc, result = train(tmp_path, iris_spec(f"{bucket}/data/iris.csv"), f"{bucket}/runs/r1")
    assert rc == 0, result
    ref = api.ArtifactRef.model_validate(result["artifact"])
    assert ref.uri == f"{bucket}/runs/r1/model.skops"
    assert ref.reference_stats_uri == f"{bucket}/runs/r1/reference.json"
    keys = {o.uri.rsplit("/", 1)[1] for o in storage.list_prefix(f"{bucket}/runs/r1/")}
    assert {"model.skops", "reference.json", "holdout.csv", "result.json"} <= keys
    assert result["dataset"]["source"] == f"{bucket}/data/iris.csv"
    assert result["dataset"]["sha256"] == artifacts.sha256_file(tmp_path / "iris.csv")

    spec = api.ModelVersionSpec.model_validate(
        {
            "model": "iris", "version": 1, "task": result["task"], "artifact": result["artifact"],
            "framework": result["framework"], "signature": result["signature"],
            "dataset": result["dataset"],
        }
    )  # fmt: skip
    served = serve_model.load(spec, use_onnx=False)
    assert served.spec.artifact.uri.startswith("s3://")

    # Replace the object: the recorded sha256 refuses it before anything is deserialised.
    (tmp_path / "other").write_bytes(b"PK not the model")
    storage.upload(tmp_path / "other", ref.uri)
    with pytest.raises(StartupError, match="integrity check failed"):
        serve_model.load(spec, use_onnx=False)


def test_train_from_a_prefix(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("prefix")
    storage.upload(iris_csv(tmp_path / "a.csv", slice(0, 150, 2)), f"{bucket}/in/a.csv")
    storage.upload(iris_csv(tmp_path / "b.csv", slice(1, 150, 2)), f"{bucket}/in/b.csv")
    (tmp_path / "notes.txt").write_text("not data")
    storage.upload(tmp_path / "notes.txt", f"{bucket}/in/notes.txt")
    rc, result = train(tmp_path, iris_spec(f"{bucket}/in/"), str(tmp_path / "out"))
    assert rc == 0, result
    assert result["dataset"]["rows"] == 150
    assert result["dataset"]["source"] == f"{bucket}/in/"


@pytest.mark.parametrize(
    ("where", "reason", "words"),
    [
        ("dataset-bucket", "BucketNotFound", ["spec.dataset.uri", "bucket 'absent'"]),
        ("dataset-object", "ObjectNotFound", ["spec.dataset.uri", "nothere.csv", "does not exist"]),
        ("output-bucket", "BucketNotFound", ["spec.artifact.uri", "bucket 'absent'"]),
        ("credentials", "StorageAccessDenied", ["spec.artifact.uri", "denied", "credentials"]),
    ],
)
def test_failures_name_the_field_and_the_cause(
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    reason: str,
    words: list[str],
) -> None:
    bucket = s3_server.make_bucket("failures")
    storage.upload(iris_csv(tmp_path / "iris.csv"), f"{bucket}/iris.csv")
    data, output = f"{bucket}/iris.csv", f"{bucket}/runs/x"
    if where == "dataset-bucket":
        data = "s3://absent/iris.csv"
    elif where == "dataset-object":
        data = f"{bucket}/nothere.csv"
    elif where == "output-bucket":
        output = "s3://absent/runs/x"
    else:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    rc, result = train(tmp_path, iris_spec(data), output)
    assert rc == api.EXIT_INVALID, result
    assert not result["succeeded"]
    assert result["reason"] == reason, result
    for word in words:
        assert word in result["message"], result["message"]
    assert "wrong-secret" not in json.dumps(result)


def test_dataset_parquet_object(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("parquet")
    frame = sklearn.datasets.load_iris(as_frame=True).frame
    frame.to_parquet(tmp_path / "iris.parquet")
    storage.upload(tmp_path / "iris.parquet", f"{bucket}/iris.parquet")
    rc, result = train(tmp_path, iris_spec(f"{bucket}/iris.parquet"), str(tmp_path / "out"))
    assert rc == 0, result
    assert result["dataset"]["rows"] == len(pd.read_parquet(tmp_path / "iris.parquet"))


# ----------------------------------------------------------------------- kubeloop-serve


def test_serving_refusals_name_the_field_and_the_cause(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model server's refusals on s3: each StartupError carries the reason the
    InferenceService shows, and kubeloop-serve writes it to its termination message."""
    bucket = s3_server.make_bucket("refusals")
    storage.upload(iris_csv(tmp_path / "iris.csv"), f"{bucket}/iris.csv")
    rc, result = train(tmp_path, iris_spec(f"{bucket}/iris.csv"), f"{bucket}/runs/r1")
    assert rc == 0, result
    good = {
        "model": "iris", "version": 1, "task": result["task"], "artifact": result["artifact"],
        "framework": result["framework"], "signature": result["signature"],
        "dataset": result["dataset"],
    }  # fmt: skip

    def refusal(artifact: dict[str, Any], **env: str) -> StartupError:
        spec = api.ModelVersionSpec.model_validate({**good, "artifact": artifact})
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            m.setenv("KUBELOOP_OBJECT_CACHE", str(tmp_path / "serve-cache"))
            with pytest.raises(StartupError) as e:
                serve_model.load(spec, use_onnx=False)
        return e.value

    art = result["artifact"]
    missing = refusal({**art, "uri": f"{bucket}/runs/r1/gone.skops"})
    assert missing.reason == "ObjectNotFound"
    assert "spec.artifact.uri: object" in str(missing) and "gone.skops does not exist" in str(
        missing
    )
    denied = refusal(art, AWS_SECRET_ACCESS_KEY="not-the-key")
    assert denied.reason == "StorageAccessDenied"
    for word in ("spec.artifact.uri", "denied", "spec.artifact.storage.secretName"):
        assert word in str(denied), str(denied)
    assert "not-the-key" not in str(denied)
    bucketless = refusal({**art, "uri": "s3://absent-bucket/m.skops"})
    assert bucketless.reason == "BucketNotFound"
    changed = refusal({**art, "sha256": "0" * 64})
    assert changed.reason == "ArtifactIntegrityFailed"
    assert "spec.artifact.sha256" in str(changed)

    # kubeloop-serve itself: exit 2, the refusal as JSON in its termination message.
    mv_file = tmp_path / "mv.yaml"
    mv_file.write_text(
        yaml.safe_dump(
            {
                "apiVersion": api.API_VERSION,
                "kind": "ModelVersion",
                "metadata": {"name": "iris-v1"},
                "spec": {**good, "artifact": {**art, "uri": f"{bucket}/runs/r1/gone.skops"}},
            }
        )
    )
    term = tmp_path / "serve-term"
    proc = subprocess.run(
        [
            sys.executable, "-m", "kubeloop_runtime.serve.cli", "--model-version", str(mv_file),
            "--no-onnx", "--port", "0", "--termination-log", str(term),
        ],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "KUBELOOP_OBJECT_CACHE": str(tmp_path / "cli-cache")},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    failure = api.StartupFailure.model_validate_json(term.read_text())
    assert failure.reason == "ObjectNotFound"
    assert "spec.artifact.uri" in failure.message and "gone.skops" in failure.message


def test_make_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    """`python -m kubeloop_runtime.storage mb` (SigV4 of our own): made once, then there."""
    assert storage.make_bucket("s3://made-here") is True
    assert storage.make_bucket("s3://made-here") is False
    local = tmp_path / "x.txt"
    local.write_text("x")
    storage.upload(local, "s3://made-here/x.txt")
    assert [o.uri for o in storage.list_prefix("s3://made-here/")] == ["s3://made-here/x.txt"]
    with pytest.raises(storage.StorageError) as e:
        storage.make_bucket(
            "s3://denied-here", env={**s3_server.env, "AWS_SECRET_ACCESS_KEY": "no"}
        )
    assert e.value.cause == "AccessDenied"
