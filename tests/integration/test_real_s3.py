"""Object storage on the real node: every pod in containerd, the object store in a pod too.

Kubeloop is installed from manifests/overlays/local (the ``installed`` fixture of
test_real_node.py), which includes manifests/components/objectstore: versitygw from the
image hack/images.sh builds (scratch + the static binary), on a volume of the real node,
behind a NodePort on the node's bridge address (this cluster has no DNS), with the
operator's S3 defaults and the Secret ``s3-creds`` in ``default``. The same manifests make
the kind quickstart's object store (``make kind-up OBJECTSTORE=1``).

Why the store runs in the cluster rather than on the host's bridge address (hack/s3.sh,
tests/s3server.py): it is what a kind user installs, so the manifests, the image, the
restricted pod and the operator's wiring are exercised here, not only the client; and
nothing new has to pass hack/node.sh's guard rules (pods reach the node's own address
already, nothing leaves the machine).

- examples/s3/README.md as written in ``default`` (the endpoint the README exports for kind,
  localhost:7070, becomes the node's NodePort): the bucket made through the S3 API, a
  training pod reading its dataset from the store and writing the artifact there, a
  predictor pod with no artifact volume loading it from there, a prediction from it;
- the closed loop on new data: a second object lands under the dataset prefix, the
  operator (in its pod, with the component's keys) sees a new dataset version, a
  retraining pod runs, the gate passes, a canary pod serves the challenger and is
  promoted.
"""

from __future__ import annotations

import json
import shlex
import sys
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client

from kubeloop.kube import Kube
from kubeloop_runtime import api, storage
from tests.integration.harness import Cluster, condition, is_true, wait_for
from tests.integration.test_examples import readme_commands
from tests.integration.test_real_node import (
    NODE,
    assert_real,
    core,
    installed,
    pods,
    run_as_user,
    user_env,
)

__all__ = ["core", "installed"]  # fixtures, shared with test_real_node.py

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "s3"
NS = "default"
ISVC = "iris-s3"
TIMEOUT = 300


def store_endpoint(core: client.CoreV1Api) -> str:
    """The object store's NodePort on the node's bridge address."""
    svc = core.read_namespaced_service("objectstore", "kubeloop-objectstore")
    (port,) = svc.spec.ports
    return f"http://{NODE['NODE_IP']}:{port.node_port}"


def predict(ip: str, rows: list[list[float]]) -> list[Any]:
    req = urllib.request.Request(
        f"http://{ip}:8080/v1/models/{ISVC}:predict",
        data=json.dumps({"instances": rows}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return list(json.loads(r.read())["predictions"])


def ready_ips(core: client.CoreV1Api, role: str, version: str) -> list[str]:
    selector = (
        f"{api.LABEL_INFERENCESERVICE}={ISVC},{api.LABEL_ROLE}={role},"
        f"{api.LABEL_MODELVERSION}={version}"
    )
    return [
        p.status.pod_ip
        for p in pods(core, NS, selector)
        if p.status.pod_ip
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or ())
    ]


def run_readme(cluster: Cluster, endpoint: str) -> None:
    """Each command of examples/s3/README.md's sh blocks, by a shell as a user would; the
    exported endpoint is the node's NodePort instead of kind's localhost:7070."""
    env = user_env(cluster)
    ran = 0
    for written in readme_commands(EXAMPLE / "README.md"):
        cmd = written.replace("http://localhost:7070", endpoint)
        ran += 1
        if cmd.startswith("export "):  # holds for the commands that follow
            env.update(w.split("=", 1) for w in shlex.split(cmd)[1:])
            continue
        if cmd.startswith("python3 "):
            cmd = shlex.quote(sys.executable) + cmd.removeprefix("python3")
        run_as_user(cmd, env)
    assert ran == 13, ran  # the export, 3 python3 and 9 kubectl commands


def test_s3_walkthrough_and_new_data_loop_on_real_pods(
    installed: None, cluster: Cluster, core: client.CoreV1Api, kube: Kube
) -> None:
    (store,) = pods(core, "kubeloop-objectstore", "app.kubernetes.io/name=objectstore")
    assert_real(store)
    assert store.spec.security_context.run_as_user == 65532
    endpoint = store_endpoint(core)

    run_readme(cluster, endpoint)

    # The walkthrough ran in real pods, through the store and nothing else.
    tj = kube.get(api.API_VERSION, "TrainingJob", NS, "iris-s3")
    assert tj is not None and is_true(tj, "Succeeded"), tj
    (train,) = pods(core, NS, f"{api.LABEL_TRAININGJOB}=iris-s3")
    assert_real(train)
    assert not [v for v in train.spec.volumes if v.persistent_volume_claim]
    assert [e.secret_ref.name for e in train.spec.containers[0].env_from] == ["s3-creds"]
    term = train.status.container_statuses[0].state.terminated
    assert term is not None and term.exit_code == 0, train.status
    mv1 = kube.get(api.API_VERSION, "ModelVersion", NS, "iris-s3-v1")
    assert mv1 is not None
    uri = mv1["spec"]["artifact"]["uri"]
    assert uri == f"s3://kubeloop-example/models/{NS}/iris-s3/model.skops"
    keys = {"AWS_ENDPOINT_URL": endpoint, **_dev_keys(), "AWS_ALLOW_HTTP": "true"}
    stored = {o.uri: o.size for o in storage.list_prefix("s3://kubeloop-example/models/", keys)}
    assert stored.get(uri, 0) > 0, stored  # the training pod wrote it into the store

    # A stable predictor pod loaded v1 from the store (no artifact volume) and predicts.
    wait_for(
        lambda: ready_ips(core, "stable", "iris-s3-v1") or ready_ips(core, "stable", "iris-s3-v2"),
        timeout=TIMEOUT,
        what="a ready stable predictor",
    )
    served = pods(core, NS, f"{api.LABEL_INFERENCESERVICE}={ISVC},{api.LABEL_ROLE}=stable")
    for p in served:
        assert_real(p)
        assert not [v for v in p.spec.volumes if v.persistent_volume_claim], p.metadata.name
    ip = (ready_ips(core, "stable", "iris-s3-v1") or ready_ips(core, "stable", "iris-s3-v2"))[0]
    assert predict(ip, [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]) == [0, 2]
    isvc = kube.get(api.API_VERSION, "InferenceService", NS, ISVC)
    assert condition(isvc, "ModelLoaded")["status"] == "True", isvc["status"]

    # New data: the README put part-2.csv and waited for the retraining run to succeed in
    # its pod; the run names the dataset version that started it.
    (retrain,) = pods(core, NS, f"{api.LABEL_TRAININGJOB}=iris-s3-retrain-1")
    assert_real(retrain)
    mv2 = kube.get(api.API_VERSION, "ModelVersion", NS, "iris-s3-v2")
    assert mv2 is not None
    trigger = mv2["spec"]["lineage"]["trigger"]
    assert trigger["signal"] == "data" and trigger["inferenceService"] == ISVC, trigger
    assert mv2["spec"]["dataset"]["rows"] == 150
    assert mv2["spec"]["gate"]["passed"] is True

    # The challenger is canaried in a pod of its own (only this test sends it the requests
    # its analysis needs), then promoted.
    wait_for(
        lambda: ready_ips(core, "canary", "iris-s3-v2"),
        timeout=TIMEOUT,
        interval=1,
        what="the loop's canary pod",
    )
    # canaryTrafficPercent 50 beside 2 stable replicas is 2 canary replicas: one or both may
    # be ready by now; each is a real pod without an artifact volume.
    canaries = [
        p
        for p in pods(core, NS, f"{api.LABEL_ROLE}=canary")
        if p.status.pod_ip in ready_ips(core, "canary", "iris-s3-v2")
    ]
    assert 1 <= len(canaries) <= 2, [p.metadata.name for p in canaries]
    for canary in canaries:
        assert_real(canary)
        assert not [v for v in canary.spec.volumes if v.persistent_volume_claim]
    isvc = kube.get(api.API_VERSION, "InferenceService", NS, ISVC)
    assert isvc is not None and isvc["status"]["canaryVersion"] == "iris-s3-v2"

    def promoted() -> bool:
        for ip in ready_ips(core, "canary", "iris-s3-v2"):
            predict(ip, [[5.1, 3.5, 1.4, 0.2]] * 5)
        isvc = kube.get(api.API_VERSION, "InferenceService", NS, ISVC) or {}
        return (isvc.get("status") or {}).get("servingVersion") == "iris-s3-v2"

    wait_for(promoted, timeout=TIMEOUT, interval=2, what="iris-s3-v2 promoted after its canary")
    ip = wait_for(
        lambda: ready_ips(core, "stable", "iris-s3-v2"), timeout=TIMEOUT, what="v2 on the stable"
    )[0]
    assert len(predict(ip, [[6.0, 2.9, 4.5, 1.5]])) == 1


def _dev_keys() -> dict[str, str]:
    text = (REPO / "manifests/components/objectstore/dev-credentials.env").read_text()
    return dict(line.split("=", 1) for line in text.split())
