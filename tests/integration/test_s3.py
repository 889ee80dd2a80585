"""Object storage end to end on the local control plane, with a real S3 server (versitygw).

The kwok tier: the real operator, ``kubeloop-train`` behind training pods and
``kubeloop-serve`` behind predictor pods (the process kubelet, which resolves the pods'
``envFrom`` Secret as a kubelet does). No artifact PersistentVolumeClaim exists in these
namespaces: everything a pod reads or writes goes through the S3 server.

- the iris walkthrough on s3://: train from an s3 CSV into s3, register, serve, predict;
- the closed loop on new data: a file lands under the dataset prefix, the operator sees the
  new version, retrains, gates, canaries and promotes; the lineage names the version;
- a missing bucket, a missing object and wrong credentials each end in a TrainingJob
  condition naming the field and the cause, with no secret value anywhere;
- the predictor's side of it: a model object gone, wrong credentials and a changed object
  each end in the InferenceService's ModelLoaded and Ready conditions (reason and message
  naming the field and the cause) and a Warning event, which clear once the cause is fixed
  and the restarted server loads the model.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from sklearn.datasets import load_iris

from kubeloop.kube import Kube
from kubeloop_runtime import api, storage
from tests import s3server
from tests.integration.harness import Cluster, OperatorProcess, condition, is_true, wait_for
from tests.integration.test_examples import readme_commands
from tests.integration.test_loop import CANARY, ISVC, STABLE, World, finished, rows
from tests.s3server import S3Server

s3_server = s3server.s3_server  # the session's versitygw on loopback
SECRET = "s3-creds"
TIMEOUT = 180


@pytest.fixture
def bucket(s3_server: S3Server, namespace: str) -> str:
    return s3_server.make_bucket(namespace)


def make_secret(kube: Kube, ns: str, name: str, access: str, secret: str) -> None:
    data = {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    client.CoreV1Api(kube.api_client).create_namespaced_secret(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


@pytest.fixture
def s3_operator(
    kube: Kube,
    namespace: str,
    s3_server: S3Server,
    kubelet: Any,
    make_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """The operator with the server as its default endpoint, and its own read identity
    (for the dataChanged trigger)."""
    own = {k: v for k, v in s3_server.env.items() if k.startswith("AWS_ACCESS") or "SECRET" in k}
    yield make_operator(
        namespaces=[namespace],
        env={
            "KUBELOOP_S3_ENDPOINT": s3_server.endpoint,
            "KUBELOOP_S3_REGION": s3server.REGION,
            "KUBELOOP_S3_PATH_STYLE": "true",
            "KUBELOOP_ARTIFACT_ROOT": str(tmp_path / "artifacts"),  # no s3 download here
            **own,
        },
    )


@pytest.fixture
def secret(kube: Kube, namespace: str) -> str:
    """The Secret the namespace's pods get their keys from (``spec.storage.secretName``)."""
    make_secret(kube, namespace, SECRET, s3server.ACCESS_KEY, s3server.SECRET_KEY)
    return SECRET


def upload_csv(frame: Any, uri: str, server: S3Server, tmp_path: Path) -> None:
    """Upload as a user would, with explicit settings (this process's env stays clean)."""
    local = tmp_path / "upload.csv"
    frame.to_csv(local, index=False)
    storage.upload(local, uri, env=server.env)


def trainingjob(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "model": "iris",
            "estimator": {"type": "LogisticRegression", "hyperparameters": {"max_iter": 500}},
            "storage": {"secretName": SECRET},
            **spec,
        },
    }


def test_iris_walkthrough_on_s3(
    secret: str,
    kube: Kube,
    s3_server: S3Server,
    namespace: str,
    bucket: str,
    kubelet: Any,
    s3_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    w = World(kube, namespace, kubelet, s3_operator)
    upload_csv(load_iris(as_frame=True).frame, f"{bucket}/data/iris.csv", s3_server, tmp_path)
    kube.create(
        trainingjob(
            namespace,
            "iris",
            dataset={"uri": f"{bucket}/data/iris.csv", "target": "target"},
            artifact={"uri": f"{bucket}/models"},
        )
    )
    tj = w.wait(lambda: finished(w, "iris"), "the s3 TrainingJob to finish", TIMEOUT)
    assert is_true(tj, "Succeeded"), tj["status"]
    job = kube.get("batch/v1", "Job", namespace, "iris-train")
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": SECRET}}]

    mv = w.wait(lambda: w._ready_mv("iris-v1"), "iris-v1 to be registered and Ready")
    art = mv["spec"]["artifact"]
    run = f"{bucket}/models/{namespace}/iris"
    assert art["uri"] == f"{run}/model.skops"
    assert art["storage"] == {"secretName": SECRET}
    assert mv["spec"]["dataset"]["source"] == f"{bucket}/data/iris.csv"
    assert condition(mv, "ArtifactVerified")["status"] == "Unknown"  # the server checks it
    stored = {o.uri.rsplit("/", 1)[1] for o in storage.list_prefix(f"{run}/", s3_server.env)}
    assert {"model.skops", "reference.json", "holdout.csv", "result.json"} <= stored

    kube.patch(api.API_VERSION, "ModelVersion", namespace, "iris-v1",
               {"spec": {"aliases": ["production"]}})  # fmt: skip
    kube.create(
        {
            "apiVersion": api.API_VERSION,
            "kind": "InferenceService",
            "metadata": {"name": ISVC, "namespace": namespace},
            "spec": {"model": {"model": "iris", "alias": "production"}, "replicas": 1},
        }
    )
    ip = w.wait(lambda: w.pod_ips("stable", "iris-v1"), "the predictor to load from s3")[0]
    assert w.predict(ip, [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]) == [0, 2]
    dep = kube.get("apps/v1", "Deployment", namespace, STABLE)
    assert dep is not None
    volumes = dep["spec"]["template"]["spec"]["volumes"]
    assert all("persistentVolumeClaim" not in v for v in volumes)
    assert s3server.SECRET_KEY not in json.dumps([tj, mv, dep, w.isvc()])


def test_new_data_retrains_gates_canaries_and_promotes(
    secret: str,
    kube: Kube,
    s3_server: S3Server,
    namespace: str,
    bucket: str,
    kubelet: Any,
    s3_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    w = World(kube, namespace, kubelet, s3_operator)
    frame = load_iris(as_frame=True).frame
    prefix = f"{bucket}/data/"
    upload_csv(frame.iloc[::2], f"{prefix}part-1.csv", s3_server, tmp_path)
    dataset = {"uri": prefix, "target": "target"}
    kube.create(trainingjob(namespace, "iris-train", dataset=dataset,
                            artifact={"uri": f"{bucket}/models", "onnx": False}))  # fmt: skip
    w.wait(lambda: w._ready_mv("iris-v1"), "iris-v1 to be registered and Ready", TIMEOUT)
    kube.patch(api.API_VERSION, "ModelVersion", namespace, "iris-v1",
               {"spec": {"aliases": ["production"]}})  # fmt: skip
    w.wait(lambda: w.alias_holder() == "iris-v1", "alias production on iris-v1")
    w.serve(
        {
            "triggers": {"drift": False, "dataChanged": True, "dataPollSeconds": 10},
            "template": {
                "dataset": dataset,
                "estimator": {"type": "LogisticRegression", "hyperparameters": {"max_iter": 500}},
                "artifact": {"uri": f"{bucket}/models", "onnx": False},
                "storage": {"secretName": SECRET},
            },
            "cooldownSeconds": 0,
            "championGate": {"enabled": True, "metric": "accuracy", "maxRegression": 0.2},
            "canaryTrafficPercent": 25,
            "analysis": {"windowSeconds": 10, "minRequests": 5, "maxErrorRate": 0.0},
        }
    )
    baseline = w.wait(lambda: w.status().get("datasetVersion"), "the dataset's first version")
    w.stays(lambda: not w.retrains(), 3, "no retraining while the data is unchanged")

    # A new file lands under the prefix: one retraining run, started for the new version.
    upload_csv(frame.iloc[1::2], f"{prefix}part-2.csv", s3_server, tmp_path)
    tj = w.wait(lambda: (w.retrains() or [None])[0], "new data to start a retraining run", 60)
    trigger = tj["spec"]["trigger"]
    assert trigger["signal"] == "data"
    assert trigger["value"] != baseline
    assert w.status()["datasetVersion"] == trigger["value"]
    name = tj["metadata"]["name"]
    done = w.wait(lambda: finished(w, name), f"{name} to finish", TIMEOUT)
    assert is_true(done, "Succeeded"), done["status"]
    mv2 = w.get("ModelVersion", "iris-v2")
    assert mv2 is not None
    assert mv2["spec"]["lineage"]["trigger"] == {**trigger}  # the dataset version, in lineage
    assert mv2["spec"]["dataset"]["rows"] == len(frame)
    assert mv2["spec"]["dataset"]["source"] == prefix

    w.wait(lambda: w.status().get("canaryVersion") == "iris-v2", "the loop's canary")
    w.wait(lambda: w.kube.get("apps/v1", "Deployment", w.ns, CANARY), "canary Deployment")

    def promoted() -> bool:
        w.send("canary", 0.0, batches=2, size=20)
        return w.alias_holder() == "iris-v2"

    w.wait(promoted, "the canary to be promoted (alias production -> iris-v2)")
    w.wait(lambda: w.deployments() == [STABLE], "the canary Deployment to go")
    ip = w.wait(lambda: w.pod_ips("stable", "iris-v2"), "v2 serving on the stable pods")[0]
    assert len(w.predict(ip, rows()[:4])) == 4
    w.stays(lambda: len(w.retrains()) == 1, 3, "no second run for the same data")


def test_failures_name_the_field_and_the_cause(
    secret: str,
    kube: Kube,
    s3_server: S3Server,
    namespace: str,
    bucket: str,
    kubelet: Any,
    s3_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    w = World(kube, namespace, kubelet, s3_operator)
    upload_csv(load_iris(as_frame=True).frame, f"{bucket}/iris.csv", s3_server, tmp_path)
    make_secret(kube, namespace, "bad-creds", s3server.ACCESS_KEY, "not-the-secret-key")
    out = {"uri": f"{bucket}/models", "onnx": False}
    cases = {
        "no-bucket": (
            {
                "dataset": {"uri": "s3://absent-bucket/iris.csv", "target": "target"},
                "artifact": out,
            },
            "BucketNotFound",
            ["spec.dataset.uri", "bucket 'absent-bucket' does not exist"],
        ),
        "no-object": (
            {"dataset": {"uri": f"{bucket}/nothere.csv", "target": "target"}, "artifact": out},
            "ObjectNotFound",
            ["spec.dataset.uri", f"{bucket}/nothere.csv does not exist"],
        ),
        "bad-creds": (
            {
                "dataset": {"uri": f"{bucket}/iris.csv", "target": "target"},
                "artifact": out,
                "storage": {"secretName": "bad-creds"},
            },
            "StorageAccessDenied",
            ["spec.artifact.uri", "denied", "SignatureDoesNotMatch", "credentials"],
        ),
    }
    for name, (spec, _, _) in cases.items():
        kube.create(trainingjob(namespace, name, **spec))
    for name, (_, reason, words) in cases.items():
        tj = w.wait(lambda n=name: finished(w, n), f"{name} to fail", TIMEOUT)
        c = condition(tj, "Succeeded")
        assert (c["status"], c["reason"]) == ("False", reason), c
        for word in words:
            assert word in c["message"], c["message"]
        assert tj["status"]["reason"] == reason
        assert "not-the-secret-key" not in json.dumps(tj)
        # Exit code 2: the Job fails at once, no retries of what retrying cannot fix.
        assert kube.get(api.API_VERSION, "ModelVersion", namespace, f"{name}-v1") is None


# ----------------------------------------------------------------------- the predictor


def object_file(server: S3Server, uri: str) -> Path:
    """Where versitygw's posix backend keeps ``uri`` (a bucket is a directory)."""
    loc = storage.parse(uri)
    return server.root / "data" / loc.bucket / loc.key


def warnings_about(kube: Kube, ns: str, name: str) -> list[tuple[str, str]]:
    events = client.CoreV1Api(kube.api_client).list_namespaced_event(
        ns, field_selector=f"involvedObject.name={name},type=Warning"
    )
    return [(e.reason, e.message) for e in events.items]


def test_predictor_refusals_show_on_the_inferenceservice_and_clear(
    secret: str,
    kube: Kube,
    s3_server: S3Server,
    namespace: str,
    bucket: str,
    kubelet: Any,
    s3_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    w = World(kube, namespace, kubelet, s3_operator)
    upload_csv(load_iris(as_frame=True).frame, f"{bucket}/data/iris.csv", s3_server, tmp_path)
    dataset = {"uri": f"{bucket}/data/iris.csv", "target": "target"}
    kube.create(
        trainingjob(
            namespace, "iris", dataset=dataset, artifact={"uri": f"{bucket}/models", "onnx": False}
        )
    )
    mv = w.wait(lambda: w._ready_mv("iris-v1"), "iris-v1 to be registered and Ready", TIMEOUT)
    model_uri = mv["spec"]["artifact"]["uri"]
    stored = object_file(s3_server, model_uri)
    saved = tmp_path / "model.skops"
    saved.write_bytes(stored.read_bytes())
    core = client.CoreV1Api(kube.api_client)

    def refused(reason: str) -> dict[str, Any] | None:
        c = w.condition("ModelLoaded")
        return c if (c.get("status"), c.get("reason")) == ("False", reason) else None

    def loaded() -> bool:
        return bool(
            w.condition("ModelLoaded").get("status") == "True"
            and is_true(w.isvc(), "Ready")
            and w.pod_ips("stable", "iris-v1")
        )

    def restart_predictor() -> None:
        for p in core.list_namespaced_pod(
            namespace, label_selector=f"{api.LABEL_ROLE}=stable"
        ).items:
            core.delete_namespaced_pod(p.metadata.name, namespace, grace_period_seconds=0)

    # 1. The model object is gone before the first pod starts.
    stored.unlink()
    kube.create(
        {
            "apiVersion": api.API_VERSION,
            "kind": "InferenceService",
            "metadata": {"name": ISVC, "namespace": namespace},
            "spec": {"model": {"modelVersion": "iris-v1"}, "replicas": 1},
        }
    )
    c = w.wait(lambda: refused("ObjectNotFound"), "ModelLoaded=False ObjectNotFound")
    for word in ("spec.artifact.uri", f"object {model_uri} does not exist", s3_server.endpoint):
        assert word in c["message"], c["message"]
    ready = w.condition("Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "ObjectNotFound", c["message"]
    )  # fmt: skip
    w.wait(
        lambda: any(r == "ObjectNotFound" for r, _ in warnings_about(kube, namespace, ISVC)),
        "a Warning event ObjectNotFound",
    )
    stored.write_bytes(saved.read_bytes())  # it is back: the restarted server loads it
    w.wait(loaded, "ModelLoaded and Ready to clear once the object is back")
    assert w.condition("ModelLoaded")["reason"] == "Loaded"

    # 2. Wrong credentials in the Secret the ModelVersion names.
    good = core.read_namespaced_secret(SECRET, namespace).data
    wrong = base64.b64encode(b"not-the-secret-key").decode()
    core.patch_namespaced_secret(SECRET, namespace, {"data": {"AWS_SECRET_ACCESS_KEY": wrong}})
    restart_predictor()
    c = w.wait(lambda: refused("StorageAccessDenied"), "ModelLoaded=False StorageAccessDenied")
    for word in (
        "spec.artifact.uri",
        "denied",
        "SignatureDoesNotMatch",
        "spec.artifact.storage.secretName",
    ):
        assert word in c["message"], c["message"]
    w.wait(
        lambda: any(r == "StorageAccessDenied" for r, _ in warnings_about(kube, namespace, ISVC)),
        "a Warning event StorageAccessDenied",
    )
    core.patch_namespaced_secret(SECRET, namespace, {"data": good})
    w.wait(loaded, "ModelLoaded and Ready to clear once the credentials are right")

    # 3. The object changed after training: the recorded sha256 refuses it.
    stored.write_bytes(b"PK not the model that was trained")
    restart_predictor()
    c = w.wait(
        lambda: refused("ArtifactIntegrityFailed"), "ModelLoaded=False ArtifactIntegrityFailed"
    )
    assert (
        "spec.artifact.sha256" in c["message"] and mv["spec"]["artifact"]["sha256"] in c["message"]
    )
    w.wait(
        lambda: any(
            r == "ArtifactIntegrityFailed" for r, _ in warnings_about(kube, namespace, ISVC)
        ),
        "a Warning event ArtifactIntegrityFailed",
    )
    stored.write_bytes(saved.read_bytes())
    w.wait(loaded, "ModelLoaded and Ready to clear once the object is the recorded one")
    # No secret value anywhere the operator writes.
    everything = json.dumps([w.isvc(), warnings_about(kube, namespace, ISVC)])
    assert "not-the-secret-key" not in everything and s3server.SECRET_KEY not in everything


# ----------------------------------------------------------------------- examples/s3


REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "s3"


def _expand(command: str, env: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: env[m.group(1)], command)


def _predict_on_role(kube: Kube, ns: str, isvc: str, role: str) -> int:
    """Send one iris row to every ready pod of ``role``; how many answered."""
    answered = 0
    pods = kube.list(
        "v1", "Pod", ns, labels={api.LABEL_INFERENCESERVICE: isvc, api.LABEL_ROLE: role}
    )
    for p in pods:
        ip = (p.get("status") or {}).get("podIP")
        if not ip or p["metadata"].get("deletionTimestamp"):
            continue
        req = urllib.request.Request(
            f"http://{ip}:8080/v1/models/{isvc}:predict",
            data=json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                answered += r.status == 200
        except OSError:
            continue
    return answered


def test_s3_example_readme(
    cluster: Cluster,
    kube: Kube,
    s3_server: S3Server,
    namespace: str,
    kubelet: Any,
    s3_operator: OperatorProcess,
) -> None:
    """examples/s3/README.md as written, against the test's server (its address and keys
    replace the exported ones, which are the object store component's); the component's
    operator settings are the s3_operator's, its Secret s3-creds is made here."""
    s3_server.make_bucket("unrelated")  # `mb` makes kubeloop-example through the S3 API
    make_secret(kube, namespace, "s3-creds", s3server.ACCESS_KEY, s3server.SECRET_KEY)
    dev = dict(
        line.split("=", 1)
        for line in (REPO / "manifests/components/objectstore/dev-credentials.env")
        .read_text()
        .split()
    )
    commands = readme_commands(EXAMPLE / "README.md")
    env = dict(os.environ)
    ran = {"kubectl": 0, "python3": 0}
    for command in commands:
        if command.startswith("export "):
            pairs = dict(w.split("=", 1) for w in shlex.split(command)[1:])
            assert set(pairs) == {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
            assert {k: pairs[k] for k in dev} == dev, "the README exports the component's keys"
            assert pairs["AWS_ENDPOINT_URL"] == "http://localhost:7070"  # kind-config.yaml
            env.update({n: s3_server.env[n] for n in pairs}, AWS_ALLOW_HTTP="true")
            continue
        argv = shlex.split(_expand(command, env))
        argv = [a.replace("examples/s3/", f"{EXAMPLE}/") for a in argv]
        if argv[0] == "kubectl":
            cluster.kubectl("-n", namespace, *argv[1:], timeout=330)
            ran["kubectl"] += 1
        elif argv[0] == "python3":
            subprocess.run([sys.executable, *argv[1:]], env=env, check=True, timeout=60)
            ran["python3"] += 1
        else:
            raise AssertionError(f"examples/s3/README.md: unexpected command {command!r}")
    assert ran == {"kubectl": 9, "python3": 3}, ran

    mv2 = kube.get(api.API_VERSION, "ModelVersion", namespace, "iris-s3-v2")
    assert mv2 is not None
    assert mv2["spec"]["lineage"]["trigger"]["signal"] == "data"
    assert mv2["spec"]["dataset"]["rows"] == 150
    assert mv2["spec"]["artifact"]["uri"].startswith(f"s3://kubeloop-example/models/{namespace}/")

    def promoted() -> bool:
        _predict_on_role(kube, namespace, "iris-s3", "canary")
        isvc = kube.get(api.API_VERSION, "InferenceService", namespace, "iris-s3") or {}
        return (isvc.get("status") or {}).get("servingVersion") == "iris-s3-v2"

    wait_for(promoted, timeout=TIMEOUT, interval=1, what="iris-s3-v2 promoted after the canary")
