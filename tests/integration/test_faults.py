"""The whole loop under faults (issue #18): nothing lost, nothing doubled, the same end state.

The loop is test_loop's story, run end to end: train iris v1, register it, alias it
``production``, serve it with 3 replicas, drift the served inputs, retrain, pass the champion
gate, canary v2, analyse, promote. Each test disturbs it differently and then checks the
same invariants and the same end state as the undisturbed run in test_loop.py:

- exactly one Job per TrainingJob, and two TrainingJobs (v1 and the one retraining);
- ModelVersions iris-v1 and iris-v2, no gap and no duplicate;
- one stable Deployment and no canary left; at most one canary Deployment at any moment;
- ``production`` held by exactly one version, iris-v2, which the stable pods serve.

Seeds are printed and can be set with ``KUBELOOP_FAULT_SEED``.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.faultproxy import FaultProxy, Faults
from tests.integration.harness import OperatorProcess, Sampler
from tests.integration.test_loop import CANARY, ISVC, STABLE, World, retraining_policy, rows

SEED = int(os.environ.get("KUBELOOP_FAULT_SEED", "18"))

# What an undisturbed run ends with (test_loop.test_drift_retrains_gates_canaries_and_promotes).
END_STATE = {
    "trainingjobs": ["iris-svc-retrain-1", "iris-train"],
    "jobs": {"iris-svc-retrain-1": 1, "iris-train": 1},
    "modelversions": ["iris-v1", "iris-v2"],
    "production": ["iris-v2"],
    "deployments": [STABLE],
    "serving": "iris-v2",
    "analysis": "Promote",
}


def end_state(w: World) -> dict[str, Any]:
    tjs = sorted(t["metadata"]["name"] for t in w.kube.list(api.API_VERSION, "TrainingJob", w.ns))
    mvs = w.kube.list(api.API_VERSION, "ModelVersion", w.ns)
    st = w.status()
    return {
        "trainingjobs": tjs,
        "jobs": jobs_per_trainingjob(w),
        "modelversions": sorted(m["metadata"]["name"] for m in mvs),
        "production": sorted(
            m["metadata"]["name"]
            for m in mvs
            if "production" in ((m.get("status") or {}).get("aliases") or [])
        ),
        "deployments": w.deployments(),
        "serving": st.get("servingVersion"),
        "analysis": (st.get("analysis") or {}).get("decision"),
    }


class Watchdog(Sampler):
    """Samples invariants that must hold at every moment while the loop runs."""

    def __init__(self, w: World) -> None:
        super().__init__()
        self.w = w
        self.max_canaries = 0

    def sample(self) -> None:
        deps = self.w.deployments()
        canaries = [d for d in deps if d == CANARY]
        self.max_canaries = max(self.max_canaries, len(canaries))
        unknown = [d for d in deps if d not in (STABLE, CANARY)]
        if unknown:
            self.violations.append(f"unexpected Deployments {unknown}")
        holders = [
            m["metadata"]["name"]
            for m in self.w.kube.list(api.API_VERSION, "ModelVersion", self.w.ns)
            if "production" in ((m.get("status") or {}).get("aliases") or [])
        ]
        if len(holders) > 1:
            self.violations.append(f"production held by {holders}")
        for j, n in jobs_per_trainingjob(self.w).items():
            if n > 1:
                self.violations.append(f"{n} Jobs for TrainingJob {j}")

    def failed(self, e: Exception) -> None:
        if "Connection" not in str(e):
            self.violations.append(f"watchdog: {e}")


def jobs_per_trainingjob(w: World) -> dict[str, int]:
    jobs: dict[str, int] = {}
    for j in w.kube.list("batch/v1", "Job", w.ns):
        owner = (j["metadata"].get("labels") or {}).get(api.LABEL_TRAININGJOB, "?")
        jobs[owner] = jobs.get(owner, 0) + 1
    return jobs


def run_loop(w: World) -> None:
    """test_loop's story, from an empty namespace to the promoted v2."""
    w.shifted_dataset()
    w.train_v1()
    w.serve(retraining_policy())
    name = w.drift_until_retrain()["metadata"]["name"]
    w.wait(
        lambda: (w.get("TrainingJob", name) or {}).get("status", {}).get("conditions"),
        f"{name} to report",
    )

    def promoted() -> bool:
        if w.pod_ips("canary"):
            w.send("canary", 2.0, batches=2, size=20)
        else:
            w.send("stable", 2.0)
        return w.alias_holder() == "iris-v2"

    w.wait(promoted, "the canary to be promoted (alias production -> iris-v2)", timeout=240)
    w.wait(lambda: w.deployments() == [STABLE], "the canary Deployment to go")
    w.wait(lambda: w.status().get("servingVersion") == "iris-v2", "v2 served")
    w.wait(lambda: len(w.pod_ips("stable", "iris-v2")) == 3, "v2 on the 3 stable pods")


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ----------------------------------------------------------------------------- API faults


API_FAULTS = Faults(
    throttle=0.04,
    error500=0.02,
    unavailable=0.02,
    slow=0.04,
    drop_before=0.01,
    drop_after=0.01,
    gone=0.05,
    gone_mid=0.15,
    every_kind_after=40,  # a run makes 150 to 200 requests, some 20 of them watches
)


@pytest.fixture
def proxy(operator_credentials: Path) -> Any:
    p = FaultProxy(operator_credentials, API_FAULTS, SEED).start()
    yield p
    p.stop()


def test_the_loop_converges_through_injected_api_errors(
    kube: Kube,
    namespace: str,
    artifacts_pvc: str,
    kubelet: Any,
    make_operator: Any,
    proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    print(f"seed {SEED}, rates {API_FAULTS}")
    op: OperatorProcess = make_operator(
        namespaces=[namespace],
        kubeconfig=proxy.write_kubeconfig(tmp_path / "proxied" / "kubeconfig"),
        env={"KUBELOOP_ARTIFACT_ROOT": str(tmp_path / "artifacts")},
    )
    w = World(kube, namespace, kubelet, op)
    started = time.monotonic()
    with Watchdog(w) as dog:
        run_loop(w)
    took = time.monotonic() - started
    print(f"loop done in {took:.0f}s; {proxy.requests} requests, injected {dict(proxy.injected)}")
    assert dog.violations == [], dog.violations
    assert dog.max_canaries <= 1
    assert end_state(w) == END_STATE

    text = op.metrics()
    retries = metric_sum(text, "rest_client_request_retries_total", code="429")
    e500 = metric_sum(text, "rest_client_requests_total", code="500")
    e503 = metric_sum(text, "rest_client_requests_total", code="503")
    relists = metric_sum(text, "kubeloop_watch_relists_total")
    queue_retries = metric_sum(text, "workqueue_retries_total")
    print(
        f"operator saw: 429 retried {retries:.0f}, 500 {e500:.0f}, 503 {e503:.0f}, "
        f"relists {relists:.0f}, work queue retries {queue_retries:.0f}"
    )
    # Every injected fault kind happened and the operator's metrics show what it did.
    for kind in ("throttle", "error500", "unavailable", "slow", "gone", "gone_mid"):
        assert proxy.injected[kind] > 0, (kind, proxy.injected)
    assert retries >= 1  # Retry-After honoured: sent again, not failed
    assert e500 >= 1 and e503 >= 1
    assert relists >= 1  # listed again after 410 Gone
    # a throttled request is resent after Retry-After; the server gets it and the operator
    # never logs it as a failed reconcile
    assert "the fault proxy throttled" not in op.log()


# ----------------------------------------------------------------------------- SIGKILLs


KILLS = 20


def spread_gaps(rng: random.Random, count: int, spread: float, jitter: float) -> list[float]:
    """``count`` seeded gaps that add up to ``spread`` seconds, each within (1 +- jitter)
    times the mean before scaling: fault moments spread across a run."""
    gaps = [rng.uniform(1 - jitter, 1 + jitter) for _ in range(count)]
    scale = spread / sum(gaps)
    return [round(g * scale, 2) for g in gaps]


class Killer:
    """SIGKILLs the operator at seeded moments and starts it again at once."""

    def __init__(self, op: OperatorProcess, seed: int, kills: int, spread: float) -> None:
        self.moments = spread_gaps(random.Random(seed), kills, spread, 0.7)
        self.op = op
        self.done: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Killer:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop_done = round(time.monotonic() - self._started, 1)
        if exc[0] is not None:
            self._stop.set()
        self._thread.join(180)  # the remaining kills, then the end state is checked again

    def _run(self) -> None:
        for gap in self.moments:
            if self._stop.wait(gap):
                return
            self.op.kill()
            self.done.append(round(time.monotonic() - self._started, 1))
            self.op.start()


def test_the_loop_survives_the_operator_killed_at_20_random_moments(
    kube: Kube,
    namespace: str,
    artifacts_pvc: str,
    kubelet: Any,
    make_operator: Any,
    tmp_path: Path,
) -> None:
    op: OperatorProcess = make_operator(
        namespaces=[namespace], env={"KUBELOOP_ARTIFACT_ROOT": str(tmp_path / "artifacts")}
    )
    w = World(kube, namespace, kubelet, op)
    # The undisturbed loop takes about 60-90 s here; 20 kills spread over 30 s of waiting
    # (plus each restart's own 1-3 s) land in every phase, from the first training on.
    killer = Killer(op, SEED, KILLS, spread=30.0)
    print(f"seed {SEED}: kills after gaps of {killer.moments} s")
    with Watchdog(w) as dog, killer:
        run_loop(w)
    assert len(killer.done) == KILLS
    during = sum(1 for t in killer.done if t <= killer.loop_done)
    print(
        f"killed at {killer.done} s; loop done at {killer.loop_done} s ({during} kills during it)"
    )
    assert dog.violations == [], dog.violations
    assert dog.max_canaries <= 1
    w.wait(lambda: end_state(w) == END_STATE, "the undisturbed run's end state", timeout=60)


# ----------------------------------------------------------------------------- serving


def fixed_batch_copy(w: World, root: Path, mv: dict[str, Any], name: str) -> dict[str, Any]:
    """A ModelVersion ``name`` whose ONNX graph was exported with a fixed batch of one row: a
    converter's mistake that passes a one-row check and answers every longer request with
    ONNX Runtime's INVALID_ARGUMENT, a 500 (a bug of the model, not of the input)."""
    import copy
    import shutil

    import onnx

    from kubeloop_runtime import artifacts

    spec = copy.deepcopy(mv["spec"])
    art = spec["artifact"]
    src = artifacts.resolve(art["uri"], artifact_root=root).parent
    dst = src.with_name(f"{src.name}-fixed-batch")
    shutil.copytree(src, dst)
    graph_path = artifacts.resolve(art["onnxUri"], artifact_root=root)
    graph = onnx.load(dst / graph_path.name)
    for i in graph.graph.input:
        d = i.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = 1
    onnx.save(graph, dst / graph_path.name)
    for key in ("uri", "onnxUri"):
        art[key] = art[key].replace(f"/{src.name}/", f"/{dst.name}/")
    art["onnxSha256"] = artifacts.sha256_file(dst / graph_path.name)
    spec["version"] = int(name.rsplit("-v", 1)[1])
    spec["aliases"] = []
    return {
        "apiVersion": api.API_VERSION,
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": w.ns},
        "spec": spec,
    }


def status_of(w: World, ip: str, instances: list[list[float]]) -> int:
    try:
        w.predict(ip, instances)
    except urllib.error.HTTPError as e:
        return e.code
    return 200


def test_a_canary_that_errors_on_some_inputs_is_rolled_back_by_its_analysis(
    kube: Kube,
    namespace: str,
    artifacts_pvc: str,
    kubelet: Any,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """v2 answers one-row requests and fails (500) every request of more rows: the analysis
    of its canary counts the 5xx, rolls it back, and v1 keeps serving those inputs."""
    w = World(kube, namespace, kubelet, operator)
    kube.create(
        {
            "apiVersion": api.API_VERSION,
            "kind": "TrainingJob",
            "metadata": {"name": "iris-train", "namespace": namespace},
            "spec": {
                "model": "iris",
                "dataset": {"builtin": "iris"},
                "estimator": {"type": "LogisticRegression", "hyperparameters": {"max_iter": 500}},
                "artifact": {"onnx": True},
            },
        }
    )
    v1 = w.wait(lambda: w._ready_mv("iris-v1"), "iris-v1 trained with its ONNX graph")
    assert v1["spec"]["artifact"].get("onnxUri"), v1["spec"]["artifact"]
    kube.create(fixed_batch_copy(w, tmp_path / "artifacts", v1, "iris-v2"))
    w.wait(lambda: w._ready_mv("iris-v2"), "iris-v2 registered and Ready")
    kube.create(
        {
            "apiVersion": api.API_VERSION,
            "kind": "InferenceService",
            "metadata": {"name": ISVC, "namespace": namespace},
            "spec": {
                "model": {"modelVersion": "iris-v1"},
                "replicas": 1,
                "canary": {
                    "modelVersion": "iris-v2",
                    "trafficPercent": 50,
                    "analysis": {"windowSeconds": 10, "minRequests": 10, "maxErrorRate": 0.05},
                },
            },
        }
    )
    (canary,) = w.wait(lambda: w.pod_ips("canary", "iris-v2"), "the canary server")
    (stable,) = w.wait(lambda: w.pod_ips("stable", "iris-v1"), "the stable server")
    one, three = rows()[:1], rows()[:3]
    assert status_of(w, canary, one) == 200  # the canary's one-row self-check passes

    codes: dict[int, int] = {}

    def rolled_back() -> bool:
        for batch in (one, three, one):  # a third of the canary's requests fail
            code = status_of(w, canary, batch) if w.pod_ips("canary") else 0
            codes[code] = codes.get(code, 0) + 1
        return w.condition("CanaryAnalysis").get("reason") == "RolledBack"

    w.wait(rolled_back, "the canary's analysis to roll it back")
    print(f"canary answers by status code: {codes}; {w.condition('CanaryAnalysis')}")
    assert codes.get(500, 0) >= 1 and codes.get(200, 0) >= 1, codes
    c = w.condition("CanaryAnalysis")
    assert c["status"] == "False" and "error rate" in c["message"], c
    w.wait(lambda: w.deployments() == [STABLE], "the canary Deployment to go")
    assert "canary" not in w.isvc()["spec"], w.isvc()["spec"]
    assert w.status()["servingVersion"] == "iris-v1"
    assert status_of(w, stable, three) == 200  # v1 serves the inputs v2 failed on
    labels = f'inferenceservice="{ISVC}",namespace="{namespace}"'
    assert f'kubeloop_rollbacks_total{{{labels},reason="analysis"}} 1.0' in operator.metrics()
