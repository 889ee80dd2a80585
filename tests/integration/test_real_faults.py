"""Faults on the real node (issue #18): serving through them, and the operator telling them.

Kubeloop is installed from manifests/overlays/local (the ``installed`` fixture of
test_real_node.py). In a namespace of its own, iris is trained in its pod and served by two
InferenceServices: ``iris`` with 3 replicas (so a PDB, minAvailable 1) and ``solo`` with
one. Then, with real pods, the real kube-proxy and the real kubelet:

- a predictor pod deleted under steady traffic through the Service's ClusterIP loses no
  request beyond those in flight at that moment (kubeloop-serve drains on SIGTERM: readiness
  503 while it still answers, then finishes what is in flight);
- the PDB holds during a rollout while pods are evicted through the Eviction API as a node
  drain would: never fewer than minAvailable ready pods, and the API refuses evictions;
- a predictor's container SIGKILLed through containerd: ``solo``'s Ready condition says so,
  the kubelet restarts the container, and the condition recovers;
- the kubelet stopped for longer than the node grace period (3m20s) and started again: the node goes
  NotReady, the InferenceServices' Ready conditions say so, and recover without restarting
  any container;
- the artifact volume unavailable while a predictor pod starts: the condition says so
  (the pod cannot mount it), and recovers once the volume is back.

Needs the real node (``hack/node.sh up``; hack/run-tests.sh starts it for the whole suite).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import Sampler, condition, is_true, wait_for
from tests.integration.test_loop import rows
from tests.integration.test_real_node import (
    NODE_DIR,
    assert_real,
    containerd_socket,
    core,
    delete_kubeloop_objects,
    installed,
    node_sh,
    pods,
    workspace,
)
from tests.integration.test_trainingjob import training_job

__all__ = ["core", "installed"]  # fixtures, shared with test_real_node.py

NS = "kubeloop-real-faults"
TIMEOUT = 240
CLIENTS = 4
SERVICES = {"iris": 3, "solo": 1}  # InferenceService -> replicas


# ----------------------------------------------------------------------------- helpers


def isvc(kube: Kube, name: str) -> dict[str, Any]:
    obj = kube.get(api.API_VERSION, "InferenceService", NS, name)
    assert obj is not None, name
    return obj


def predictor_pods(core: client.CoreV1Api, name: str) -> list[client.V1Pod]:
    return pods(core, NS, f"{api.LABEL_INFERENCESERVICE}={name}")


def ready_pods(core: client.CoreV1Api, name: str) -> list[client.V1Pod]:
    """Predictor pods that are Ready and not terminating."""
    return [
        p
        for p in predictor_pods(core, name)
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def serving(kube: Kube, core: client.CoreV1Api, name: str) -> bool:
    obj = isvc(kube, name)
    return is_true(obj, "Ready") and len(ready_pods(core, name)) == SERVICES[name]


def container_ids(core: client.CoreV1Api, name: str) -> dict[str, tuple[str, int]]:
    """pod -> (container id, restart count) of the InferenceService's predictor pods."""
    out = {}
    for p in predictor_pods(core, name):
        (s,) = p.status.container_statuses
        out[p.metadata.name] = (s.container_id, int(s.restart_count))
    return out


class Conditions(Sampler):
    """Records every distinct (status, reason, message) of some objects' Ready condition."""

    interval = 0.2

    def __init__(self, kube: Kube, names: list[str]) -> None:
        super().__init__()
        self.kube = kube
        self.names = names
        self.seen: dict[str, list[tuple[str, str, str]]] = {n: [] for n in names}

    def sample(self) -> None:
        for n in self.names:
            c = condition(isvc(self.kube, n), "Ready")
            entry = (c.get("status", ""), c.get("reason", ""), c.get("message", ""))
            if not self.seen[n] or self.seen[n][-1] != entry:
                self.seen[n].append(entry)

    def failed(self, e: Exception) -> None:
        pass  # the API server is fine here; a read that failed is retried next time

    def went_down_and_up(self, name: str) -> bool:
        states = [s for s, _, _ in self.seen[name]]
        return "False" in states and states[-1] == "True"

    def first_down(self, name: str) -> tuple[str, str, str]:
        return next(e for e in self.seen[name] if e[0] == "False")


@dataclass
class Traffic:
    """Client threads posting predictions to a URL in a loop, one connection a request."""

    url: str
    body: bytes
    clients: int = CLIENTS
    # (start, end, error or "") of every request
    done: list[tuple[float, float, str]] = field(default_factory=list)
    started: dict[int, float] = field(default_factory=dict)  # thread -> start of its request
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, i: int) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            with self._lock:
                self.started[i] = start
            error = ""
            req = urllib.request.Request(
                self.url, data=self.body, headers={"content-type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    answer = json.loads(r.read())
                    if len(answer.get("predictions", [])) != 2:
                        error = f"bad answer {answer}"
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
            with self._lock:
                self.started.pop(i, None)
                self.done.append((start, time.monotonic(), error))

    def in_flight(self) -> int:
        with self._lock:
            return len(self.started)

    def failures(self) -> list[tuple[float, float, str]]:
        with self._lock:
            return [d for d in self.done if d[2]]

    def answered(self) -> int:
        with self._lock:
            return sum(1 for d in self.done if not d[2])


def service_url(core: client.CoreV1Api, name: str) -> str:
    svc = core.read_namespaced_service(f"{name}-predictor", NS)
    return f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}/v1/models/{name}:predict"


BODY = json.dumps({"instances": rows()[:2]}).encode()


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def served(installed: None, core: client.CoreV1Api, kube: Kube) -> Iterator[None]:
    workspace(core, kube, NS, claim=True)
    kube.create(training_job(NS, "iris"))
    wait_for(
        lambda: is_true(kube.get(api.API_VERSION, "TrainingJob", NS, "iris"), "Succeeded"),
        timeout=TIMEOUT,
        interval=1,
        what="iris trained in its pod",
    )
    for name, replicas in SERVICES.items():
        kube.create(
            {
                "apiVersion": api.API_VERSION,
                "kind": "InferenceService",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"model": {"modelVersion": "iris-v1"}, "replicas": replicas},
            }
        )
    for name in SERVICES:
        wait_for(
            lambda n=name: serving(kube, core, n),  # type: ignore[misc]
            timeout=TIMEOUT,
            interval=1,
            what=f"InferenceService {name} Ready on its real pods",
        )
        for p in predictor_pods(core, name):
            assert_real(p)
    yield
    delete_kubeloop_objects(kube, core, NS)


# ----------------------------------------------------------------------------- serving


def test_a_predictor_pod_deleted_under_traffic_loses_no_request(
    served: None, core: client.CoreV1Api, kube: Kube
) -> None:
    victim = predictor_pods(core, "iris")[0].metadata.name
    with Traffic(service_url(core, "iris"), BODY) as traffic:
        wait_for(lambda: traffic.answered() >= 50, timeout=60, what="steady traffic")
        in_flight = traffic.in_flight()
        killed = time.monotonic()
        core.delete_namespaced_pod(victim, NS)  # the pod's own grace period
        wait_for(
            lambda: (
                victim not in {p.metadata.name for p in predictor_pods(core, "iris")}
                and len(ready_pods(core, "iris")) == 3
            ),
            timeout=TIMEOUT,
            interval=0.5,
            what=f"pod {victim} replaced",
        )
        gone = time.monotonic() - killed
        time.sleep(3)  # traffic on the new set of endpoints
    failures = traffic.failures()
    print(
        f"{traffic.answered()} answered, {len(failures)} failed; {in_flight} in flight when "
        f"{victim} was deleted; replaced and gone after {gone:.1f}s; failures: {failures[:5]}"
    )
    assert traffic.answered() > 100
    assert len(failures) <= in_flight, failures[:10]
    # It drained: its server answered for the drain time after SIGTERM before it stopped.
    assert gone >= api.SERVE_DRAIN_SECONDS
    wait_for(lambda: serving(kube, core, "iris"), timeout=TIMEOUT, what="iris Ready")


def test_the_pdb_holds_during_a_rollout_with_evictions(
    served: None, core: client.CoreV1Api, kube: Kube
) -> None:
    policy = client.PolicyV1Api(core.api_client)

    def pdb_observed() -> bool:
        pdb = policy.read_namespaced_pod_disruption_budget("iris-predictor", NS)
        return bool(pdb.status and pdb.status.current_healthy == 3)

    wait_for(pdb_observed, timeout=60, what="the PDB to count 3 healthy pods")
    pdb = policy.read_namespaced_pod_disruption_budget("iris-predictor", NS)
    min_available = int(pdb.spec.min_available)
    before = kube.get("apps/v1", "Deployment", NS, "iris-predictor")
    assert before is not None
    generation = before["metadata"]["generation"]

    low = {"ready": 3}
    evicted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def watch_ready() -> None:
        while not stop.wait(0.1):
            low["ready"] = min(low["ready"], len(ready_pods(core, "iris")))

    def evict() -> None:  # as `kubectl drain` does, as fast as the API lets it
        while not stop.wait(0.3) and len(evicted) < 6:
            for p in ready_pods(core, "iris"):
                body = client.V1Eviction(
                    metadata=client.V1ObjectMeta(name=p.metadata.name, namespace=NS)
                )
                try:
                    core.create_namespaced_pod_eviction(p.metadata.name, NS, body)
                    evicted.append(p.metadata.name)
                except client.ApiException as e:
                    if e.status != 429:  # the PDB says no
                        raise
                    refused.append(p.metadata.name)

    threads = [threading.Thread(target=f, daemon=True) for f in (watch_ready, evict)]
    with Traffic(service_url(core, "iris"), BODY) as traffic:
        for t in threads:
            t.start()
        # A rollout: new serving options change the pod template.
        kube.patch(api.API_VERSION, "InferenceService", NS, "iris", {"spec": {"maxBatchSize": 32}})

        def rolled_out() -> bool:
            dep = kube.get("apps/v1", "Deployment", NS, "iris-predictor") or {}
            st = dep.get("status") or {}
            return (
                dep["metadata"]["generation"] > generation
                and st.get("observedGeneration") == dep["metadata"]["generation"]
                and st.get("updatedReplicas") == 3
                and st.get("availableReplicas") == 3
                and st.get("replicas") == 3
                and serving(kube, core, "iris")
            )

        wait_for(rolled_out, timeout=TIMEOUT, interval=0.5, what="the rollout under evictions")
        stop.set()
        for t in threads:
            t.join(30)
    print(
        f"min ready {low['ready']} (minAvailable {min_available}); {len(evicted)} evicted, "
        f"{len(refused)} refused by the PDB; traffic {traffic.answered()} answered, "
        f"{len(traffic.failures())} failed: {traffic.failures()[:3]}"
    )
    assert low["ready"] >= min_available
    assert refused, "no eviction was refused: the PDB was never tested"
    assert evicted, "no eviction happened: the rollout was not disturbed"


# ----------------------------------------------------------------------------- the node


def test_a_killed_container_is_told_and_recovers(
    served: None, core: client.CoreV1Api, kube: Kube
) -> None:
    (pod,) = predictor_pods(core, "solo")
    (status,) = pod.status.container_statuses
    with Conditions(kube, ["solo"]) as seen:
        out = subprocess.run(
            ["ctr", "--address", containerd_socket(), "-n", "k8s.io", "tasks", "kill",
             "-s", "SIGKILL", status.container_id.removeprefix("containerd://")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        wait_for(
            lambda: seen.went_down_and_up("solo"),
            timeout=TIMEOUT,
            interval=0.5,
            what="solo's Ready to go False and come back",
        )
    down = seen.first_down("solo")
    print(f"solo's Ready went {seen.seen['solo']}")
    assert down[1] and down[2], down  # a reason and a message
    (after,) = container_ids(core, "solo").values()
    assert after[1] == status.restart_count + 1 and after[0] != status.container_id
    assert seen.violations == []


def test_the_kubelet_restarted_after_the_node_grace_period(
    served: None, core: client.CoreV1Api, kube: Kube
) -> None:
    before = {n: container_ids(core, n) for n in SERVICES}
    with Conditions(kube, list(SERVICES)) as seen:
        # kwokctl runs the controller-manager with --node-monitor-grace-period=3m20s: away
        # for longer than that, the node goes NotReady.
        node_sh("restart-kubelet", "210")
        for name in SERVICES:
            wait_for(
                lambda n=name: seen.went_down_and_up(n) and serving(kube, core, n),  # type: ignore[misc]
                timeout=TIMEOUT,
                interval=0.5,
                what=f"{name}'s Ready to go False and come back",
            )
    for name in SERVICES:
        print(f"{name}'s Ready went {seen.seen[name]}")
        down = seen.first_down(name)
        assert down[1] and down[2], down
        # The new kubelet adopted the running containers: none was restarted.
        assert container_ids(core, name) == before[name]


def test_the_artifact_volume_unavailable_is_told_and_recovers(
    served: None, core: client.CoreV1Api, kube: Kube
) -> None:
    volume = NODE_DIR / "volumes" / NS / "kubeloop-artifacts"
    away = volume.with_name("kubeloop-artifacts.away")
    (pod,) = predictor_pods(core, "solo")
    with Conditions(kube, ["solo"]) as seen:
        volume.rename(away)
        try:
            core.delete_namespaced_pod(pod.metadata.name, NS)
            wait_for(
                lambda: any(s == "False" for s, _, _ in seen.seen["solo"]),
                timeout=TIMEOUT,
                interval=0.5,
                what="solo's Ready to go False",
            )
            time.sleep(10)  # the new pod keeps failing to mount it meanwhile
            (new,) = predictor_pods(core, "solo")
            assert not is_true(new.to_dict(), "Ready")
        finally:
            away.rename(volume)
        wait_for(
            lambda: seen.went_down_and_up("solo") and serving(kube, core, "solo"),
            timeout=TIMEOUT,
            interval=0.5,
            what="solo to serve again once the volume is back",
        )
    print(f"solo's Ready went {seen.seen['solo']}")
    down = seen.first_down("solo")
    assert down[1] and down[2], down
