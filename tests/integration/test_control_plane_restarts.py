"""The API server and etcd restarted under load (issue #18): nothing lost, nothing doubled.

While a load thread creates TrainingJobs (real training in the test kubelet) and creates
and changes InferenceServices (replicas, the served version), the real kube-apiserver and
etcd of the local control plane are restarted 10 times in about 10 minutes, in turn the API
server alone, etcd alone, and both: each is killed (etcd with SIGTERM or SIGKILL, drawn;
the API server with SIGKILL) and started again with its own command line after a drawn
pause (``hack/cluster.sh stop-component`` / ``start-component``). Checked:

- every moment (a watchdog): at most one Job and one ModelVersion per TrainingJob, at most
  one Deployment, Service and PDB per InferenceService, and no status that was written is
  gone (a finished TrainingJob stays finished, a condition never disappears);
- at the end: every object converged to what the load last asked for (each run Succeeded
  with exactly one Job, versions 1..N of each model with no gap, each InferenceService Ready
  serving the version asked for with the replicas asked for, and its PDB only with more
  than one replica), ``status.observedGeneration`` is each object's generation;
- the operator never restarted (the same process from start to end), and its metrics show
  what it went through: watches listed again after 410 Gone, reconciles retried;
- the control plane is whole again: the API server ready, the controller-manager and the
  scheduler still the processes they were.

The test takes about 10 minutes (the 10 restarts spread over 7 minutes, their outages, then
convergence) and prints its figures; ``KUBELOOP_RESTARTS`` and ``KUBELOOP_RESTART_SPREAD``
(seconds) shorten it while working on it, ``KUBELOOP_FAULT_SEED`` changes the draws.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes.client.exceptions import ApiException

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import (
    Cluster,
    OperatorProcess,
    Sampler,
    condition,
    is_true,
    wait_for,
)
from tests.integration.test_faults import metric_sum, spread_gaps
from tests.integration.test_trainingjob import training_job

T = TypeVar("T")

SEED = int(os.environ.get("KUBELOOP_FAULT_SEED", "18"))
RESTARTS = int(os.environ.get("KUBELOOP_RESTARTS", "10"))
SPREAD = float(os.environ.get("KUBELOOP_RESTART_SPREAD", "420"))  # seconds, restarts spread over
CONVERGE = 150.0  # seconds for the load's last changes to land after the last restart
MODELS = ("alpha", "beta")
SERVICES = ("svc-0", "svc-1", "svc-2")
KINDS = ("kube-apiserver", "etcd", "both")

pytestmark = [pytest.mark.long, pytest.mark.timeout(int(SPREAD + CONVERGE + 240))]


# ----------------------------------------------------------------------------- the faults


def cluster_sh(cluster: Cluster, *args: str) -> None:
    out = subprocess.run(
        [str(cluster.repo / "hack" / "cluster.sh"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, f"hack/cluster.sh {' '.join(args)}:\n{out.stderr}{out.stdout}"


def api_ready(cluster: Cluster) -> bool:
    out = cluster.kubectl(
        "get", "--raw", "/readyz", "--request-timeout=3s", check=False, timeout=10
    )
    return out.returncode == 0


def component_pid(cluster: Cluster, component: str) -> int:
    """The pid kwokctl (or start-component) recorded for ``component`` of this cluster."""
    workdir = (
        Path(os.environ.get("KUBELOOP_CACHE", str(Path.home() / ".cache" / "kubeloop")))
        / "kwok"
        / "clusters"
        / os.environ.get("KUBELOOP_CLUSTER_NAME", "kubeloop")
    )
    return int((workdir / "pids" / f"{component}.pid").read_text())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Restart:
    kind: str  # kube-apiserver, etcd or both
    signal: str  # TERM or KILL
    pause: float  # seconds between the kill and the start
    at: float = 0.0  # seconds since the start of the run
    outage: float = 0.0  # seconds from the kill until the API server was ready again


class Restarter:
    """Restarts the API server and etcd at seeded moments, one kind after the other."""

    def __init__(self, cluster: Cluster, seed: int, count: int, spread: float) -> None:
        rng = random.Random(seed)
        self.gaps = spread_gaps(rng, count, spread, 0.4)
        # etcd is stopped with SIGTERM or SIGKILL (drawn); the API server is SIGKILLed, as a
        # crash does: its graceful SIGTERM shutdown waits out its watches for over a minute.
        self.plan = [
            Restart(
                KINDS[i % 3],
                rng.choice(("TERM", "KILL")) if KINDS[i % 3] == "etcd" else "KILL",
                round(rng.uniform(0.5, 5.0), 1),
            )
            for i in range(count)
        ]
        self.cluster = cluster
        self.done: list[Restart] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restarter", daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the restarts did not finish"
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        try:
            for gap, r in zip(self.gaps, self.plan, strict=True):
                if self._stop.wait(gap):
                    return
                self.restart(r)
        except BaseException as e:  # the test thread raises it
            self.error = e

    def restart(self, r: Restart) -> None:
        r.at = round(time.monotonic() - self.started, 1)
        killed = time.monotonic()
        parts = ["kube-apiserver", "etcd"] if r.kind == "both" else [r.kind]
        for c in parts:
            cluster_sh(self.cluster, "stop-component", c, r.signal)
        time.sleep(r.pause)
        for c in reversed(parts):  # etcd before the API server that needs it
            cluster_sh(self.cluster, "start-component", c)
        wait_for(
            lambda: api_ready(self.cluster),
            timeout=120,
            interval=0.5,
            what=f"the API server to be ready after restarting {r.kind}",
        )
        r.outage = round(time.monotonic() - killed, 1)
        self.done.append(r)


# ----------------------------------------------------------------------------- the load


def transient(e: BaseException) -> bool:
    """An error of the API server being away or starting; the load's own writes retry it."""
    if isinstance(e, ApiException):
        return e.status in (0, 429, 500, 502, 503, 504)
    return True  # connection refused, reset, timed out


def retrying(fn: Callable[[], T], what: str, timeout: float = 180.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception as e:
            if not transient(e) or time.monotonic() > deadline:
                raise AssertionError(f"{what}: {e}") from e
            time.sleep(0.5)


@dataclass
class Desired:
    """What the load asked for, which the end state must show."""

    runs: dict[str, str] = field(default_factory=dict)  # TrainingJob -> model
    services: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> spec asked

    def versions(self, model: str) -> int:
        return sum(1 for m in self.runs.values() if m == model)


class Load:
    """Creates TrainingJobs and creates and changes InferenceServices, one step every few
    seconds, until stopped; every write is retried through outages."""

    def __init__(self, kube: Kube, ns: str, seed: int) -> None:
        self.kube = kube
        self.ns = ns
        self.rng = random.Random(seed + 1)
        self.desired = Desired()
        self.steps: list[str] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(240)
        assert not self._thread.is_alive(), "the load did not stop"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            n = 0
            while not self._stop.wait(self.rng.uniform(12, 24)):
                self.step(n)
                n += 1
        except BaseException as e:
            self.error = e

    # ---------------------------------------------------------------- steps

    def step(self, n: int) -> None:
        """Even steps train, odd steps create or change an InferenceService."""
        if n % 2 == 0:
            self.train(MODELS[(n // 2) % len(MODELS)], n // 2)
        else:
            self.serve(n // 2)

    def train(self, model: str, k: int) -> None:
        name = f"{model}-{k}"
        body = training_job(self.ns, name, model=model)
        retrying(lambda: self.kube.create(body), f"create TrainingJob {name}")
        self.desired.runs[name] = model
        self.steps.append(f"train {name}")

    def newest(self, model: str) -> int:
        """The newest version of ``model`` registered so far (0: none yet)."""
        mvs = retrying(
            lambda: self.kube.list(
                api.API_VERSION, "ModelVersion", self.ns, labels={api.LABEL_MODEL: model}
            ),
            f"list ModelVersions of {model}",
        )
        return max((int(m["spec"]["version"]) for m in mvs), default=0)

    def serve(self, k: int) -> None:
        name = SERVICES[k % len(SERVICES)]
        model = MODELS[k % len(MODELS)]
        version = self.newest(model)
        if version == 0:
            self.steps.append(f"skip {name} (no {model} version yet)")
            return
        replicas = self.rng.choice((1, 2, 3))
        spec = {"model": {"modelVersion": f"{model}-v{version}"}, "replicas": replicas}
        if name not in self.desired.services:
            body = {
                "apiVersion": api.API_VERSION,
                "kind": "InferenceService",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": spec,
            }
            retrying(lambda: self.kube.create(body), f"create InferenceService {name}")
            self.steps.append(f"create {name} {spec}")
        else:
            retrying(
                lambda: self.kube.patch(
                    api.API_VERSION, "InferenceService", self.ns, name, {"spec": spec}
                ),
                f"change InferenceService {name}",
            )
            self.steps.append(f"change {name} {spec}")
        self.desired.services[name] = spec


# ----------------------------------------------------------------------------- invariants


class Watchdog(Sampler):
    """Samples, every second, what must hold at every moment; the API server being away is
    no violation (its reads are the test's own)."""

    interval = 1.0

    def __init__(self, kube: Kube, ns: str) -> None:
        super().__init__()
        self.kube = kube
        self.ns = ns
        self.finished: set[str] = set()  # TrainingJobs seen finished
        self.conditions: dict[tuple[str, str], set[str]] = {}  # (kind, name) -> types seen

    def failed(self, e: Exception) -> None:
        if not transient(e):
            self.violations.append(f"watchdog: {e!r}")

    def _count(self, api_version: str, kind: str, label: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.kube.list(api_version, kind, self.ns):
            owner = ((o["metadata"].get("labels") or {}).get(label)) or "?"
            if not o["metadata"].get("deletionTimestamp"):
                out[owner] = out.get(owner, 0) + 1
        return out

    def sample(self) -> None:
        for kind, api_version, label in (
            ("Job", "batch/v1", api.LABEL_TRAININGJOB),
            ("ModelVersion", api.API_VERSION, api.LABEL_TRAININGJOB),
            ("Deployment", "apps/v1", api.LABEL_INFERENCESERVICE),
            ("Service", "v1", api.LABEL_INFERENCESERVICE),
            ("PodDisruptionBudget", "policy/v1", api.LABEL_INFERENCESERVICE),
        ):
            for owner, n in self._count(api_version, kind, label).items():
                if n > 1:
                    self.violations.append(f"{n} {kind}s for {owner}")
        for kind in ("TrainingJob", "InferenceService", "ModelVersion"):
            for o in self.kube.list(api.API_VERSION, kind, self.ns):
                name = o["metadata"]["name"]
                types = {c["type"] for c in (o.get("status") or {}).get("conditions") or []}
                seen = self.conditions.setdefault((kind, name), set())
                lost = seen - types
                if lost:
                    self.violations.append(f"{kind} {name} lost its conditions {sorted(lost)}")
                seen |= types
                if kind == "TrainingJob":
                    done = condition(o, api.COND_SUCCEEDED).get("status") in ("True", "False")
                    if name in self.finished and not done:
                        self.violations.append(f"TrainingJob {name} is no longer finished")
                    if done:
                        self.finished.add(name)


# ----------------------------------------------------------------------------- the end


def converged(kube: Kube, ns: str, want: Desired) -> list[str]:
    """What still differs from what the load asked for; [] once everything converged."""
    problems: list[str] = []
    jobs: dict[str, int] = {}
    for j in kube.list("batch/v1", "Job", ns):
        owner = (j["metadata"].get("labels") or {}).get(api.LABEL_TRAININGJOB, "?")
        jobs[owner] = jobs.get(owner, 0) + 1
    for name in want.runs:
        obj = kube.get(api.API_VERSION, "TrainingJob", ns, name)
        if not is_true(obj, api.COND_SUCCEEDED):
            problems.append(f"TrainingJob {name}: {(obj or {}).get('status')}")
        elif obj and obj["status"].get("observedGeneration") != obj["metadata"]["generation"]:
            problems.append(f"TrainingJob {name}: observedGeneration behind")
        if jobs.get(name) != 1:
            problems.append(f"TrainingJob {name}: {jobs.get(name, 0)} Jobs")
    if set(jobs) - set(want.runs):
        problems.append(f"Jobs of unknown runs: {sorted(set(jobs) - set(want.runs))}")
    mvs = kube.list(api.API_VERSION, "ModelVersion", ns)
    for model in MODELS:
        got = sorted(int(m["spec"]["version"]) for m in mvs if m["spec"]["model"] == model)
        if got != list(range(1, want.versions(model) + 1)):
            problems.append(f"model {model}: versions {got}, want 1..{want.versions(model)}")
    for m in mvs:
        if not is_true(m, api.COND_READY):
            problems.append(f"ModelVersion {m['metadata']['name']} not Ready")
    for name, spec in want.services.items():
        obj = kube.get(api.API_VERSION, "InferenceService", ns, name) or {}
        st = obj.get("status") or {}
        serving = spec["model"]["modelVersion"]
        if not is_true(obj, api.COND_READY) or st.get("servingVersion") != serving:
            problems.append(f"InferenceService {name}: want {serving} Ready, status {st}")
            continue
        if st.get("observedGeneration") != obj["metadata"]["generation"]:
            problems.append(f"InferenceService {name}: observedGeneration behind")
        deps = kube.list("apps/v1", "Deployment", ns, labels={api.LABEL_INFERENCESERVICE: name})
        if [d["metadata"]["name"] for d in deps] != [f"{name}-predictor"]:
            problems.append(f"InferenceService {name}: Deployments {deps}")
        elif deps[0]["spec"].get("replicas") != spec["replicas"]:
            problems.append(f"InferenceService {name}: replicas {deps[0]['spec'].get('replicas')}")
        pdb = kube.get("policy/v1", "PodDisruptionBudget", ns, f"{name}-predictor")
        if (pdb is not None) != (spec["replicas"] > 1):
            problems.append(f"InferenceService {name}: PDB {pdb is not None}, {spec['replicas']}")
        if kube.get("v1", "Service", ns, f"{name}-predictor") is None:
            problems.append(f"InferenceService {name}: no Service")
    return problems


def test_the_api_server_and_etcd_restarted_10_times_under_load(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    artifacts_pvc: str,
    kubelet: Any,
    make_operator: Any,
    tmp_path: Path,
) -> None:
    kubelet.serve = False  # kwok makes the predictor pods Ready; only training runs here
    # As installed: with leader election (one replica), whose Lease renewals the outages
    # interrupt too.
    op: OperatorProcess = make_operator(
        namespaces=[namespace],
        env={
            "KUBELOOP_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
            "KUBELOOP_LEADER_ELECTION": "true",
            "KUBELOOP_LEASE_NAME": f"kubeloop-{namespace}",
            "KUBELOOP_LEASE_NAMESPACE": "kubeloop-system",
            "POD_NAME": "replica-0",
        },
    )
    assert op.proc is not None
    pid = op.proc.pid
    others = {c: component_pid(cluster, c) for c in ("kube-controller-manager", "kube-scheduler")}
    restarter = Restarter(cluster, SEED, RESTARTS, SPREAD)
    print(f"seed {SEED}: restarts after gaps of {restarter.gaps} s: {restarter.plan}")
    load = Load(kube, namespace, SEED)
    started = time.monotonic()
    with Watchdog(kube, namespace) as dog:
        load.start()
        restarter.start()
        try:
            restarter.join(SPREAD + 10 * RESTARTS + 120)
        finally:
            restarter.stop()
            load.stop()
        wait_for(lambda: api_ready(cluster), timeout=60, what="the API server")

        def settled() -> bool:
            problems = retrying(lambda: converged(kube, namespace, load.desired), "read")
            assert not problems, problems
            return True

        try:
            wait_for(settled, timeout=CONVERGE, interval=2, what="every object to converge")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- operator ---\n{op.log()[-5000:]}") from e
    took = time.monotonic() - started
    print(f"load: {load.steps}")
    print(
        "restarts (kind, signal, pause, at, outage): "
        f"{[(r.kind, r.signal, r.pause, r.at, r.outage) for r in restarter.done]}"
    )
    assert len(restarter.done) == RESTARTS
    assert dog.violations == [], dog.violations[:20]
    assert dog.samples > 0

    # The same operator process throughout, and what it went through is in its metrics.
    assert op.proc.poll() is None and op.proc.pid == pid, "the operator restarted"
    text = op.metrics()
    relists = metric_sum(text, "kubeloop_watch_relists_total")
    retries = metric_sum(text, "workqueue_retries_total")
    failures = metric_sum(text, "kubeloop_reconcile_failures_total")
    print(
        f"{len(load.desired.runs)} runs, {len(load.desired.services)} InferenceServices, "
        f"{len(load.steps)} steps in {took:.0f}s; outages "
        f"{min(r.outage for r in restarter.done)}-{max(r.outage for r in restarter.done)} s; "
        f"operator: relists {relists:.0f}, work queue retries {retries:.0f}, "
        f"failures written to status {failures:.0f}, watchdog samples {dog.samples}"
    )
    assert relists >= 1  # the new API server's watch cache starts after the old versions
    terms = op.log().count("Became the leader")
    print(f"leader terms: {terms} (a new term after each outage longer than the deadline)")
    assert metric_sum(text, "leader_election_master_status") == 1
    assert len(load.desired.runs) >= RESTARTS // 2 and load.desired.services

    # The control plane is whole: the other components never exited.
    for component, before in others.items():
        assert component_pid(cluster, component) == before and alive(before), component
