"""The real-container tier: Kubeloop installed and used on the local cluster's real node.

hack/run-tests.sh starts the real node (hack/node.sh: kubelet, containerd, runc, a CNI
bridge, kube-proxy) and imports the images built here from our Dockerfiles. This module
installs Kubeloop with ``kubectl apply -k manifests/overlays/local`` (the kind overlay with
other image names and storage), so the operator runs in its container as its ServiceAccount,
under restricted Pod Security, on a read-only root file system. Then, with nothing simulated:

- the iris walkthrough of examples/iris/README.md, command by command as written (the
  training pod writes to a real volume, the predictor pod mounts it, predictions go through
  ``kubectl port-forward svc/...``);
- a prediction through the predictor Service's ClusterIP (kube-proxy's rules);
- the shipped Prometheus, in its pod, finding the pods by Kubernetes service discovery and
  labelling them with the shipped relabel rules;
- the closed loop once (drift, a retraining pod, a canary pod, the promotion) with the
  operator's container SIGKILLed mid-run and restarted by the kubelet.

The install's Deployments are deleted at the end, so no operator runs in the cluster while
the kwok tier's tests run their own.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import KWOK_TIER_ANNOTATIONS, Cluster, condition, wait_for
from tests.integration.test_examples import readme_commands
from tests.integration.test_loop import (
    CANARY,
    FEATURE,
    ISVC,
    STABLE,
    World,
    finished,
    retraining_policy,
    rows,
)
from tests.integration.ui_harness import UIProcess, chromium

REPO = Path(__file__).resolve().parents[2]
INSTALL_NAMESPACES = ("kubeloop-system", "kubeloop-monitoring", "kubeloop-objectstore")
# The object store's claim (manifests/components/objectstore, in the local overlay).
OBJECTSTORE = ("kubeloop-objectstore", "objectstore-data")
LOOP_NAMESPACE = "kubeloop-real-loop"
TIMEOUT = 240


def node_env() -> dict[str, str]:
    """hack/node.env: the node's name, address and ranges (one definition, shell and here)."""
    out = {}
    for line in (REPO / "hack" / "node.env").read_text().splitlines():
        m = re.match(r"^([A-Z_]+)=(\S+)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


NODE = node_env()
# Where hack/node.sh keeps the node's state (the same defaults as the script).
CACHE = Path(os.environ.get("KUBELOOP_CACHE", str(Path.home() / ".cache" / "kubeloop")))
NODE_DIR = Path(os.environ.get("KUBELOOP_NODE_DIR", str(CACHE / "node")))


# ----------------------------------------------------------------------------- helpers


def node_sh(*args: str) -> str:
    out = subprocess.run(
        [str(REPO / "hack" / "node.sh"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, f"hack/node.sh {' '.join(args)}:\n{out.stderr}{out.stdout}"
    return out.stdout


def containerd_socket() -> str:
    return str(NODE_DIR / "run" / "containerd.sock")


def http_json(url: str, body: str | None = None, timeout: float = 10) -> Any:
    req = urllib.request.Request(
        url,
        data=body.encode() if body is not None else None,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pods(core: client.CoreV1Api, ns: str, selector: str) -> list[client.V1Pod]:
    return [
        p
        for p in core.list_namespaced_pod(ns, label_selector=selector).items
        if not p.metadata.deletion_timestamp
    ]


def assert_real(pod: client.V1Pod) -> None:
    """The pod ran on the real node, in containerd, not on kwok."""
    assert pod.spec.node_name == NODE["NODE_NAME"], (pod.metadata.name, pod.spec.node_name)
    statuses = pod.status.container_statuses or []
    assert statuses, pod.metadata.name
    for s in statuses:
        assert (s.container_id or "").startswith("containerd://"), (pod.metadata.name, s)
    ip = pod.status.pod_ip or ""
    assert ip.startswith(NODE["POD_CIDR"].rsplit(".", 1)[0] + "."), (pod.metadata.name, ip)


def delete_deployments(apps: client.AppsV1Api, core: client.CoreV1Api, ns: str) -> None:
    for d in apps.list_namespaced_deployment(ns).items:
        apps.delete_namespaced_deployment(d.metadata.name, ns, propagation_policy="Foreground")
    wait_for(
        lambda: (
            not apps.list_namespaced_deployment(ns).items and not core.list_namespaced_pod(ns).items
        ),
        timeout=120,
        what=f"the Deployments and pods of {ns} to go",
    )


def delete_kubeloop_objects(kube: Kube, core: client.CoreV1Api, ns: str) -> None:
    for kind in ("InferenceService", "TrainingJob", "ModelVersion"):
        for obj in kube.list(api.API_VERSION, kind, ns):
            kube.delete(api.API_VERSION, kind, ns, obj["metadata"]["name"])
    wait_for(
        lambda: (
            not any(kube.list(api.API_VERSION, k, ns) for k in ("InferenceService", "TrainingJob"))
            and not [p for p in core.list_namespaced_pod(ns).items if p.metadata.labels]
        ),
        timeout=120,
        what=f"Kubeloop's objects and pods in {ns} to go",
    )


def fresh_volume(core: client.CoreV1Api, ns: str, claim: str = "kubeloop-artifacts") -> None:
    """The PVC ``claim`` of ``ns`` (the artifact PVC) on a new, empty directory of the
    real node."""
    pv = f"kubeloop-local-{ns}-{claim}"
    try:
        core.delete_namespaced_persistent_volume_claim(claim, ns)
    except client.ApiException as e:
        if e.status != 404:
            raise
    wait_for(
        lambda: (
            claim
            not in {c.metadata.name for c in core.list_namespaced_persistent_volume_claim(ns).items}
        ),
        timeout=60,
        what=f"the PVC {ns}/{claim} to go",
    )
    try:
        core.delete_persistent_volume(pv)
    except client.ApiException as e:
        if e.status != 404:
            raise
    wait_for(
        lambda: pv not in {v.metadata.name for v in core.list_persistent_volume().items},
        timeout=60,
        what=f"the PV {pv} to go",
    )
    shutil.rmtree(NODE_DIR / "volumes" / ns / claim, ignore_errors=True)
    assert node_sh("volume", ns, claim).strip() == pv


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def installed(cluster: Cluster, api: client.ApiClient, kube: Kube) -> Iterator[None]:
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    node = core.read_node(NODE["NODE_NAME"])
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions), (
        "the real node is not Ready: hack/run-tests.sh starts it with hack/node.sh up"
    )

    # The install namespaces leave the kwok tier (test_install.py puts them there), and
    # whatever ran in them goes; `default` is the walkthrough's namespace.
    for ns in INSTALL_NAMESPACES:
        try:
            core.patch_namespace(
                ns, {"metadata": {"annotations": dict.fromkeys(KWOK_TIER_ANNOTATIONS)}}
            )
            delete_deployments(apps, core, ns)
        except client.ApiException as e:
            if e.status != 404:
                raise
    delete_kubeloop_objects(kube, core, "default")
    core.patch_namespace(
        "default",
        {
            "metadata": {
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                }
            }
        },
    )
    fresh_volume(core, "default")
    fresh_volume(core, *OBJECTSTORE)  # an empty object store
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        str(REPO / "manifests" / "overlays" / "local"),
        timeout=300,
    )
    for ns, name in (
        ("kubeloop-system", "kubeloop-operator"),
        ("kubeloop-monitoring", "prometheus"),
        ("kubeloop-objectstore", "objectstore"),
    ):
        cluster.kubectl(
            "-n", ns, "rollout", "status", f"deployment/{name}", "--timeout=240s", timeout=300
        )
    yield
    delete_kubeloop_objects(kube, core, "default")
    for ns in INSTALL_NAMESPACES:
        delete_deployments(apps, core, ns)


def operator_pods(core: client.CoreV1Api) -> list[client.V1Pod]:
    found = pods(core, "kubeloop-system", "app.kubernetes.io/name=kubeloop-operator")
    assert found, "no operator pod"
    return found


def operator_pod(core: client.CoreV1Api) -> client.V1Pod:
    """The replica that leads (the Lease's holder), or the only one."""
    found = operator_pods(core)
    if len(found) == 1:
        return found[0]
    leases = client.CoordinationV1Api(core.api_client)

    def leader() -> client.V1Pod | None:
        try:
            lease = leases.read_namespaced_lease("kubeloop-operator", "kubeloop-system")
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise
        holder = lease.spec.holder_identity
        return next((p for p in operator_pods(core) if p.metadata.name == holder), None)

    return wait_for(leader, timeout=60, interval=1, what="a leader among the operator's replicas")


# ----------------------------------------------------------------------------- tests


def test_the_operator_runs_in_its_container_as_restricted(
    installed: None, cluster: Cluster, core: client.CoreV1Api
) -> None:
    for replica in operator_pods(core):
        assert_real(replica)
    pod = operator_pod(core)
    assert pod.spec.service_account_name == "kubeloop-operator"
    ns = core.read_namespace("kubeloop-system")
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    name = pod.metadata.name
    # Inside the container (kubectl exec goes API server -> kubelet -> containerd).
    probe = (
        "import os, pathlib\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n"
        "    pathlib.Path('/probe').write_text('x')\n"
        "    print('root-writable')\n"
        "except OSError as e:\n"
        "    print('read-only', e.errno)\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
        "print(pathlib.Path('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read_text())\n"
    )
    out = cluster.kubectl("-n", "kubeloop-system", "exec", name, "--", "python", "-c", probe)
    lines = out.stdout.split()
    assert lines[:2] == ["65532", "65532"], out.stdout
    assert lines[2] == "read-only", out.stdout
    assert int(lines[4], 16) == 0, f"effective capabilities: {lines[4]}"
    assert lines[5] == "kubeloop-system"
    # Its log (API server -> kubelet) shows it started and serves its metrics.
    logs = cluster.kubectl("-n", "kubeloop-system", "logs", name).stdout
    assert "Serving metrics" in logs, logs[-2000:]


def user_env(cluster: Cluster) -> dict[str, str]:
    return {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{cluster.bin_dir}:{os.environ['PATH']}",
    }


def run_as_user(cmd: str, env: dict[str, str]) -> str:
    """One README command, by a shell in the repository as a user would: its stdout."""
    out = subprocess.run(
        ["bash", "-c", cmd],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=330,
        check=False,
    )
    assert out.returncode == 0, f"{cmd}\n{out.stderr}{out.stdout}"
    return out.stdout


def test_iris_walkthrough_as_written_on_real_pods(
    installed: None, cluster: Cluster, core: client.CoreV1Api, kube: Kube
) -> None:
    """examples/iris/README.md in `default`, each command run by a shell as a user would.

    The one change: the README's local port 8080 becomes a free port (in the port-forward
    and the curls alike), so that the test does not depend on 8080 being free here.
    """
    commands = readme_commands(REPO / "examples" / "iris" / "README.md")
    port = str(free_port())
    env = user_env(cluster)
    forward: subprocess.Popen[str] | None = None
    answers: list[Any] = []
    try:
        for written in commands:
            if written.startswith("kubectl delete"):
                continue  # the clean-up step; the fixture cleans up
            cmd = written.replace("localhost:8080", f"localhost:{port}")
            if cmd.startswith("kubectl port-forward"):
                argv = shlex.split(cmd.replace("8080:80", f"{port}:80"))
                forward = subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                wait_for(lambda: _listening(int(port)), timeout=30, what="kubectl port-forward")
                continue
            if "<id from the prediction>" in cmd:
                cmd = cmd.replace("<id from the prediction>", answers[0]["id"])
            stdout = run_as_user(cmd, env)
            if cmd.startswith("curl"):
                answers.append(json.loads(stdout))
    finally:
        if forward is not None:
            forward.terminate()
            forward.wait(timeout=10)

    v1, v2, meta, feedback = answers[:4]
    assert v1["predictions"] == [0, 2], v1  # setosa and virginica, as the README's rows are
    assert v2["outputs"][0]["data"] == [0], v2
    assert [i["name"] for i in meta["inputs"]], meta
    assert feedback, "feedback is acknowledged"

    # What ran, ran for real: the training pod (completed in containerd, exit 0) and the
    # predictor pod, both on the real node, sharing the real volume.
    mv = kube.get(api.API_VERSION, "ModelVersion", "default", "iris-v1")
    assert mv is not None and mv["spec"]["metrics"]["accuracy"] >= 0.9
    train = pods(core, "default", f"{api.LABEL_TRAININGJOB}=iris")
    assert train, "the training pod"
    assert_real(train[0])
    term = train[0].status.container_statuses[0].state.terminated
    assert term is not None and term.exit_code == 0, train[0].status
    served = pods(core, "default", f"{api.LABEL_INFERENCESERVICE}=iris")
    assert len(served) == 1
    assert_real(served[0])
    claims = {
        v.persistent_volume_claim.claim_name
        for v in served[0].spec.volumes
        if v.persistent_volume_claim
    }
    assert "kubeloop-artifacts" in claims


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_prediction_through_the_cluster_ip(
    installed: None, core: client.CoreV1Api, kube: Kube
) -> None:
    if kube.get(api.API_VERSION, "InferenceService", "default", "iris") is None:
        pytest.fail("needs the walkthrough's InferenceService (test order)")
    svc = core.read_namespaced_service("iris-predictor", "default")
    ip = svc.spec.cluster_ip
    assert ip.startswith(NODE["SERVICE_CIDR"].split(".0.0/")[0] + "."), ip
    body = json.dumps({"instances": rows()[:3]})
    port = svc.spec.ports[0].port
    got = wait_for(
        lambda: _try_json(f"http://{ip}:{port}/v1/models/iris:predict", body),
        timeout=30,
        what="a prediction through the ClusterIP",
    )
    assert got["predictions"] == [0, 0, 0], got
    # A ClusterIP that no Service holds is refused on this machine, not routed away.
    with pytest.raises(OSError):
        urllib.request.urlopen(
            f"http://{NODE['SERVICE_CIDR'].split('.0.0/')[0]}.255.254:80/", timeout=5
        )


def _try_json(url: str, body: str) -> Any:
    try:
        return http_json(url, body, timeout=5)
    except OSError:
        return None


def prometheus_query(query: str) -> list[dict[str, Any]]:
    url = f"http://{NODE['NODE_IP']}:30090/api/v1/query?" + urllib.parse.urlencode({"query": query})
    body = http_json(url, timeout=10)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_discovers_and_scrapes_the_real_pods(
    installed: None, core: client.CoreV1Api
) -> None:
    replicas = {p.metadata.name for p in operator_pods(core)}
    assert_real(pods(core, "kubeloop-monitoring", "app.kubernetes.io/name=prometheus")[0])
    predictor = pods(core, "default", f"{api.LABEL_INFERENCESERVICE}=iris")
    assert predictor, "needs the walkthrough's predictor (test order)"

    def scraped() -> list[dict[str, Any]] | None:
        try:
            op = prometheus_query('up{job="kubeloop-operator"} == 1')
            serving = prometheus_query(
                "sum by (namespace, pod, inferenceservice, role, modelversion) "
                '(kubeloop_serving_predictions_total{job="kubeloop-predictors"})'
            )
        except OSError:
            return None
        up = {s["metric"].get("pod") for s in op}
        return [*op, *serving] if up == replicas and serving else None

    found = wait_for(
        scraped, timeout=120, interval=2, what="Prometheus to scrape the operator and the predictor"
    )
    op_series = [s for s in found if s["metric"].get("job") == "kubeloop-operator"]
    assert {s["metric"]["namespace"] for s in op_series} == {"kubeloop-system"}, op_series
    serving = [s for s in found if "inferenceservice" in s["metric"]]
    labels = serving[0]["metric"]
    assert labels["namespace"] == "default" and labels["inferenceservice"] == "iris", labels
    assert labels["pod"] == predictor[0].metadata.name and labels["modelversion"] == "iris-v1"
    assert labels["role"] == "stable"
    assert float(serving[0]["value"][1]) >= 2, serving  # the walkthrough's predictions


# ----------------------------------------------------------------------------- the loop


class RealWorld(World):
    """test_loop's World, with the in-cluster operator: its log is its container's."""

    def __init__(self, kube: Kube, ns: str, cluster: Cluster) -> None:
        super().__init__(kube, ns, None, None)  # type: ignore[arg-type]
        self.cluster = cluster

    def wait(self, fn: Any, what: str, timeout: float = TIMEOUT) -> Any:
        try:
            return wait_for(fn, timeout=timeout, interval=1, what=what)
        except AssertionError as e:
            log = self.cluster.kubectl(
                "-n",
                "kubeloop-system",
                "logs",
                "deployment/kubeloop-operator",
                "--tail=80",
                check=False,
            )
            raise AssertionError(
                f"{e}\nstatus: {json.dumps(self.status(), indent=1)}\n"
                f"--- operator ---\n{log.stdout}"
            ) from e


def test_the_ui_shows_drift_from_the_real_pod_through_the_pod_proxy(
    installed: None, cluster: Cluster, core: client.CoreV1Api, kube: Kube, tmp_path: Path
) -> None:
    """`kubectl kubeloop ui` asks the real serving pod for its drift report through the API
    server's pod proxy (the kwok tier's loopback pod addresses are refused by it): a window
    of iris spread over its classes with petal length shifted shows that feature alone."""
    if kube.get(api.API_VERSION, "InferenceService", "default", "iris") is None:
        pytest.fail("needs the walkthrough's InferenceService (test order)")
    (pod,) = pods(core, "default", f"{api.LABEL_INFERENCESERVICE}=iris")
    shifted = rows(2.0)
    window = [shifted[i * len(shifted) // 200] for i in range(200)]  # the example's window
    got = http_json(
        f"http://{pod.status.pod_ip}:8080/v1/models/iris:predict",
        json.dumps({"instances": window}),
    )
    assert len(got["predictions"]) == 200
    with chromium() as browser, UIProcess(cluster.kubeconfig, "default", tmp_path) as ui:
        page = browser.new_page()
        page.goto(ui.url + "services/iris")
        page.wait_for_selector("#drift[data-loaded='1']", timeout=30000)
        tables = page.locator("#drift table.drift")
        assert tables.count() == 1, page.locator("#drift").inner_text()
        drifted = tables.nth(0).locator("tr.drifted th[scope=row]").all_inner_texts()
        assert drifted == [FEATURE], tables.nth(0).inner_text()
        page.close()


def kill_operator_container(core: client.CoreV1Api) -> tuple[str, int]:
    """SIGKILL the leading operator's container through containerd: (pod, restart count)."""
    pod = operator_pod(core)
    status = pod.status.container_statuses[0]
    cid = status.container_id.removeprefix("containerd://")
    out = subprocess.run(
        [
            "ctr",
            "--address",
            containerd_socket(),
            "-n",
            "k8s.io",
            "tasks",
            "kill",
            "-s",
            "SIGKILL",
            cid,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return pod.metadata.name, int(status.restart_count)


def operator_restarted(core: client.CoreV1Api, name: str, before: int) -> bool:
    s = core.read_namespaced_pod(name, "kubeloop-system").status.container_statuses[0]
    return bool(s.restart_count > before and s.ready)


def workspace(core: client.CoreV1Api, kube: Kube, ns: str, *, claim: bool = False) -> None:
    """A restricted namespace with a fresh artifact volume, emptied of an earlier run's
    Kubeloop objects and ConfigMaps; with ``claim``, the artifact PVC too, as the
    workspace kustomization makes it (the overlay's storage class)."""
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    try:
        core.create_namespace({"metadata": {"name": ns, "labels": labels}})
    except client.ApiException as e:
        if e.status != 409:
            raise
        delete_kubeloop_objects(kube, core, ns)
        for cm in core.list_namespaced_config_map(ns).items:
            if cm.metadata.name != "kube-root-ca.crt":
                core.delete_namespaced_config_map(cm.metadata.name, ns)
    wait_for(
        lambda: any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(ns).items
        ),
        what=f"the default ServiceAccount of {ns}",
    )
    fresh_volume(core, ns)
    if claim:
        core.create_namespaced_persistent_volume_claim(
            ns,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "kubeloop-artifacts", "namespace": ns},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "kubeloop-local",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )


@pytest.fixture(scope="module")
def loop_namespace(installed: None, core: client.CoreV1Api, kube: Kube) -> Iterator[str]:
    ns = LOOP_NAMESPACE
    workspace(core, kube, ns, claim=True)
    yield ns
    delete_kubeloop_objects(kube, core, ns)


def test_the_closed_loop_on_real_pods_survives_a_killed_operator(
    cluster: Cluster, core: client.CoreV1Api, kube: Kube, loop_namespace: str
) -> None:
    ns = loop_namespace
    w = RealWorld(kube, ns, cluster)
    w.shifted_dataset()
    w.train_v1()
    w.serve(retraining_policy())
    for p in pods(core, ns, f"{api.LABEL_INFERENCESERVICE}={ISVC}"):
        assert_real(p)

    tj = w.drift_until_retrain()
    name = tj["metadata"]["name"]
    assert (tj["spec"]["trigger"]["signal"], tj["spec"]["champion"]) == ("drift", "iris-v1")

    # SIGKILL the operator's container right after it started the run.
    killed, before = kill_operator_container(core)
    w.wait(
        lambda: operator_restarted(core, killed, before),
        "the kubelet to restart the operator's container",
    )

    done = w.wait(lambda: finished(w, name), f"{name} to finish in its pod")
    assert condition(done, "Succeeded")["status"] == "True", done["status"]
    run = pods(core, ns, f"{api.LABEL_TRAININGJOB}={name}")
    assert run, "the retraining pod"
    assert_real(run[0])

    w.wait(lambda: w.status().get("canaryVersion") == "iris-v2", "the loop's canary")
    ip = w.wait(lambda: w.pod_ips("canary", "iris-v2"), "the canary server")[0]
    canary_pod = [p for p in pods(core, ns, f"{api.LABEL_ROLE}=canary") if p.status.pod_ip == ip]
    assert canary_pod and canary_pod[0].metadata.labels[api.LABEL_MODELVERSION] == "iris-v2"
    assert_real(canary_pod[0])

    def promoted() -> bool:
        w.send("canary", 2.0, batches=2, size=20)
        return w.alias_holder() == "iris-v2"

    w.wait(promoted, "the canary to be promoted (alias production -> iris-v2)")
    w.wait(lambda: w.deployments() == [STABLE], "the canary Deployment to go")
    w.wait(lambda: len(w.pod_ips("stable", "iris-v2")) == 3, "v2 on the stable pods")
    assert kube.get("apps/v1", "Deployment", ns, CANARY) is None
    assert w.status()["servingVersion"] == "iris-v2"
    assert len(w.retrains()) == 1, [t["metadata"]["name"] for t in w.retrains()]
    # One Job per run (the first training and the retraining), and versions 1 and 2 only.
    jobs = client.BatchV1Api(kube.api_client).list_namespaced_job(ns).items
    runs = sorted(j.metadata.labels[api.LABEL_TRAININGJOB] for j in jobs)
    assert runs == sorted(["iris-train", name]), runs
    versions = sorted(
        mv["metadata"]["name"] for mv in kube.list(api.API_VERSION, "ModelVersion", ns)
    )
    assert versions == ["iris-v1", "iris-v2"]
