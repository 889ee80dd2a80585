"""Hyperparameter search (spec.search) against the real control plane, with real training.

The kube-controller-manager's Job controller runs the search's one Indexed Job (its
parallelism, completion indexes, per-index backoff and pod failure policy); kwok runs the
pods and the test kubelet runs the real ``kubeloop-train`` behind each of them, with the
``JOB_COMPLETION_INDEX`` the Job controller gives the pod. Nothing is mocked.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from kubeloop import cli
from kubeloop.kube import Kube
from kubeloop_runtime import api, search
from tests.integration.harness import Cluster, OperatorProcess, condition, wait_for
from tests.integration.test_trainingjob import create, jobs_of, training_job, versions_of
from tests.unit.test_search import GRID as GRID_12  # C x solver x max_iter: 12, 3 at once

TIMEOUT = 600


@pytest.fixture
def artifacts(artifacts_pvc: str) -> str:
    return artifacts_pvc


@pytest.fixture
def api_client(api: client.ApiClient) -> client.ApiClient:
    """The admin client (the ``api`` fixture, named so as not to hide the api module)."""
    return api


class RunningPods:
    """Watches the namespace's pods and remembers the most that ran at once."""

    def __init__(self, api_client: client.ApiClient, ns: str) -> None:
        self.core, self.ns = client.CoreV1Api(api_client), ns
        self.running: set[str] = set()
        self.most = 0
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RunningPods:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        # A LIST, then a WATCH from its resourceVersion: every change in order, none missed.
        while not self._stop.is_set():
            listed = self.core.list_namespaced_pod(self.ns)
            self.running = set()
            for p in listed.items:
                self._saw(p.metadata.name, p.status.phase, deleted=False)
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.core.list_namespaced_pod,
                    self.ns,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=5,
                ):
                    pod = event["raw_object"]
                    phase = (pod.get("status") or {}).get("phase")
                    self._saw(pod["metadata"]["name"], phase, deleted=event["type"] == "DELETED")
            except client.ApiException as e:  # 410 Gone: list again
                if e.status != 410:
                    raise

    def _saw(self, name: str, phase: str | None, *, deleted: bool) -> None:
        self.seen.add(name)
        if deleted or phase != "Running":
            self.running.discard(name)
        else:
            self.running.add(name)
        self.most = max(self.most, len(self.running))


def _tj(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    obj = kube.get(api.API_VERSION, "TrainingJob", ns, name)
    assert obj is not None
    return obj


def wait_done(kube: Kube, ns: str, name: str, op: OperatorProcess) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        obj = _tj(kube, ns, name)
        return obj if condition(obj, "Succeeded").get("status") in ("True", "False") else None

    try:
        return wait_for(done, timeout=TIMEOUT, what=f"the search {name} to finish")
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- operator log ---\n{op.log()[-6000:]}") from e


def runs_output(cluster: Cluster, ns: str, name: str) -> str:
    out = io.StringIO()
    argv = ["--kubeconfig", str(cluster.kubeconfig), "-n", ns, "runs", name]
    assert cli.main(argv, out=out) == 0
    return out.getvalue()


def test_a_12_trial_search_at_parallelism_3_registers_the_best(
    cluster: Cluster,
    api_client: client.ApiClient,
    kube: Kube,
    namespace: str,
    artifacts: str,
    operator: OperatorProcess,
    kubelet: Any,
    tmp_path: Path,
) -> None:
    ns = namespace
    with RunningPods(api_client, ns) as observed:
        create(kube, training_job(ns, "iris-search", search=GRID_12))
        done = wait_done(kube, ns, "iris-search", operator)
    st = done["status"]
    assert condition(done, "Succeeded")["status"] == "True", st
    assert st["reason"] == "Trained"

    # Exactly one Job: Indexed, 12 completions, 3 at a time, all 12 indexes completed.
    (job,) = jobs_of(kube, ns, "iris-search")
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (12, 3)
    assert job["status"]["completedIndexes"] == "0-11"
    # Never more than 3 trial pods running at once, and the search did use all 3.
    assert observed.most == 3, (observed.most, sorted(observed.seen))
    assert kubelet.most_trainers == 3
    assert len(observed.seen) == 12

    # 12 trials recorded, each with the parameters its index derives to and its metrics.
    api_spec = api.TrainingJobSpec.model_validate(done["spec"])
    assert api_spec.search is not None
    trials = st["trials"]
    assert [t["index"] for t in trials] == list(range(12))
    assert {t["phase"] for t in trials} == {"Succeeded"}
    for t in trials:
        assert t["parameters"] == search.text_parameters(
            search.trial_parameters(api_spec.search, t["index"])
        )
        assert 0.0 < t["metrics"]["accuracy"] <= 1.0
        # The pod of index i trained trial i: its own result says so, with those values.
        result = json.loads(
            (tmp_path / "artifacts" / ns / "iris-search" / "trials" / str(t["index"])
             / "result.json").read_text()
        )  # fmt: skip
        assert result["trial"] == t["index"]
        assert result["parameters"]["C"] == t["parameters"]["C"]
        assert result["parameters"]["solver"] == t["parameters"]["solver"]
    summary = st["search"]
    assert (summary["trials"], summary["succeeded"], summary["failed"]) == (12, 12, 0)
    best_accuracy = max(t["metrics"]["accuracy"] for t in trials)
    best = min(t["index"] for t in trials if t["metrics"]["accuracy"] == best_accuracy)
    assert summary["bestTrial"] == best and summary["bestValue"] == best_accuracy

    # One ModelVersion for the search: the best trial's model, named in its lineage.
    (mv,) = versions_of(kube, ns, "iris")
    mv_spec = api.ModelVersionSpec.model_validate(mv["spec"])
    assert st["modelVersion"] == mv["metadata"]["name"] == "iris-v1"
    assert mv_spec.lineage.training_job == "iris-search"
    assert mv_spec.lineage.trial is not None
    assert mv_spec.lineage.trial.index == best and mv_spec.lineage.trial.trials == 12
    assert mv_spec.lineage.trial.parameters == trials[best]["parameters"]
    assert mv_spec.metrics["accuracy"] == best_accuracy
    assert mv_spec.artifact.uri == (
        f"pvc://kubeloop-artifacts/{ns}/iris-search/trials/{best}/model.skops"
    )

    # kubectl kubeloop runs prints every trial and marks the best.
    text = runs_output(cluster, ns, "iris-search")
    lines = text.splitlines()
    assert lines[0].startswith("TrainingJob iris-search: 12 trials, 12 succeeded, 0 failed")
    assert f"best trial {best} by accuracy (maximize) -> ModelVersion iris-v1" in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == [str(i) for i in range(12)]
    assert [r[0] for r in rows if r[2] == "*"] == [str(best)]


def test_failed_trials_are_reported_and_fail_the_search_only_when_all_fail(
    kube: Kube, namespace: str, artifacts: str, operator: OperatorProcess, kubelet: Any
) -> None:
    ns = namespace
    # C must be > 0: scikit-learn refuses -1 (InvalidSpec, exit 2: FailIndex, no retry).
    some = {"parameters": {"C": {"values": [-1.0, 0.5, 2.0]}}, "parallelism": 3}
    every = {"parameters": {"C": {"values": [-1.0, -2.0]}}, "parallelism": 2}
    create(kube, training_job(ns, "some-fail", search=some))
    create(kube, training_job(ns, "all-fail", model="doomed", search=every))

    partly = wait_done(kube, ns, "some-fail", operator)
    st = partly["status"]
    assert condition(partly, "Succeeded")["status"] == "True", st
    assert (st["search"]["succeeded"], st["search"]["failed"]) == (2, 1)
    assert st["search"]["failedReasons"] == {"InvalidSpec": 1}
    failed = st["trials"][0]
    assert (failed["phase"], failed["reason"]) == ("Failed", "InvalidSpec")
    assert "C" in failed["message"], failed
    assert "1 of 3 trials failed (InvalidSpec: 1)" in st["message"]
    assert st["search"]["bestTrial"] in (1, 2)
    (job,) = jobs_of(kube, ns, "some-fail")
    assert job["status"]["failedIndexes"] == "0"
    assert len(versions_of(kube, ns, "iris")) == 1

    doomed = wait_done(kube, ns, "all-fail", operator)
    assert condition(doomed, "Succeeded")["status"] == "False"
    assert condition(doomed, "Succeeded")["reason"] == "AllTrialsFailed"
    assert doomed["status"]["search"]["failedReasons"] == {"InvalidSpec": 2}
    assert "every one of the 2 trials failed" in doomed["status"]["message"]
    assert "bestTrial" not in doomed["status"]["search"]
    assert condition(doomed, "Registered")["status"] == "False"
    assert versions_of(kube, ns, "doomed") == []


def _trial_pods(core: client.CoreV1Api, ns: str, name: str) -> list[client.V1Pod]:
    return [
        p
        for p in core.list_namespaced_pod(
            ns, label_selector=f"{api.LABEL_TRAININGJOB}={name}"
        ).items
        if not p.metadata.deletion_timestamp
    ]


def test_suspending_or_deleting_a_search_stops_its_pods(
    api_client: client.ApiClient,
    kube: Kube,
    namespace: str,
    artifacts: str,
    operator: OperatorProcess,
    kubelet: Any,
) -> None:
    ns, core, batch = namespace, client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    # Slow trials (hundreds of boosting rounds on digits), so that they are still running
    # when the search is suspended; each is stopped within seconds of starting.
    slow = {
        "dataset": {"builtin": "digits"},
        "estimator": {"type": "GradientBoostingClassifier"},
        "search": {"parameters": {"n_estimators": {"values": [400, 500, 600, 700]}},
                   "parallelism": 2},
    }  # fmt: skip
    create(kube, training_job(ns, "slow", **slow))
    wait_for(
        lambda: len(kubelet.running_trainers()) == 2,
        timeout=120,
        what="two trial pods training",
    )
    batch.patch_namespaced_job("slow-train", ns, {"spec": {"suspend": True}})
    wait_for(lambda: not _trial_pods(core, ns, "slow"), timeout=120, what="the pods to go")
    wait_for(lambda: not kubelet.running_trainers(), timeout=60, what="the trainers to stop")

    def suspended() -> dict[str, Any] | None:
        obj = _tj(kube, ns, "slow")
        trials = {t["phase"] for t in (obj.get("status") or {}).get("trials") or []}
        return (
            obj
            if condition(obj, "Suspended").get("status") == "True" and trials == {"Pending"}
            else None
        )

    held = wait_for(suspended, timeout=60, what="the TrainingJob to say Suspended")
    assert condition(held, "Succeeded")["status"] == "Unknown"
    assert condition(held, "Succeeded")["reason"] == "Suspended"

    # Resumed, the same indexes run again; deleting the TrainingJob stops them for good.
    batch.patch_namespaced_job("slow-train", ns, {"spec": {"suspend": False}})
    wait_for(lambda: len(kubelet.running_trainers()) == 2, timeout=120, what="the trials to resume")
    kube.delete(api.API_VERSION, "TrainingJob", ns, "slow")
    wait_for(lambda: not _trial_pods(core, ns, "slow"), timeout=120, what="the pods to go")
    wait_for(lambda: not jobs_of(kube, ns, "slow"), timeout=60, what="the Job to go")
    wait_for(lambda: not kubelet.running_trainers(), timeout=60, what="the trainers to stop")
    assert versions_of(kube, ns, "iris") == []
