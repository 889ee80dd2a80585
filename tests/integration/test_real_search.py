"""Hyperparameter search on the real node: the shipped 12-trial sample, 3 pods at a time.

Kubeloop is installed from manifests/overlays/local (the ``installed`` fixture of
test_real_node.py): the operator in its container, every trial a real pod in containerd
that gets its trial from the ``JOB_COMPLETION_INDEX`` the real kubelet resolves, and writes
its result where the operator reads it back. What the process tier cannot show: the real
kubelet's completion indexes and termination messages, and that suspending or deleting a
search stops real containers (the API server drops a pod only once the kubelet has).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubeloop.kube import Kube
from kubeloop_runtime import api, search
from tests.integration.harness import condition, wait_for
from tests.integration.test_real_issue15 import _finished
from tests.integration.test_real_node import (
    assert_real,
    core,
    delete_kubeloop_objects,
    installed,
    pods,
    workspace,
)
from tests.integration.test_search import RunningPods, api_client

__all__ = ["api_client", "core", "installed"]  # fixtures, shared with test_real_node.py

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "manifests/samples/trainingjob-iris-search.yaml"
TIMEOUT = 900


@pytest.fixture(scope="module")
def search_ns(installed: None, core: client.CoreV1Api, kube: Kube) -> Iterator[str]:
    ns = "kubeloop-real-search"
    workspace(core, kube, ns, claim=True)
    yield ns
    delete_kubeloop_objects(kube, core, ns)


def test_the_shipped_12_trial_search_runs_3_real_pods_at_a_time(
    api_client: client.ApiClient, core: client.CoreV1Api, kube: Kube, search_ns: str
) -> None:
    ns = search_ns
    sample = yaml.safe_load(SAMPLE.read_text())
    sample["metadata"]["namespace"] = ns
    spec = api.TrainingJobSpec.model_validate(sample["spec"])
    assert spec.search is not None and search.trial_count(spec.search) == 12
    assert spec.search.parallelism == 3
    with RunningPods(api_client, ns) as observed:
        kube.create(sample)
        done = wait_for(
            lambda: _finished(kube, ns, "iris-search"), timeout=TIMEOUT, what="iris-search"
        )
    st = done["status"]
    assert condition(done, "Succeeded")["status"] == "True", st
    assert observed.most == 3, observed.most

    (job,) = kube.list("batch/v1", "Job", ns, labels={api.LABEL_TRAININGJOB: "iris-search"})
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["status"]["completedIndexes"] == "0-11"
    trials = st["trials"]
    assert [t["index"] for t in trials] == list(range(12))
    assert {t["phase"] for t in trials} == {"Succeeded"}
    # The spec as the API server keeps it: JSON has one number type (the sample's 1.0 is 1).
    held = api.TrainingJobSpec.model_validate(done["spec"]).search
    assert held is not None
    for t in trials:
        assert t["parameters"] == search.text_parameters(search.trial_parameters(held, t["index"]))
    best = st["search"]["bestTrial"]
    top = max(t["metrics"]["accuracy"] for t in trials)
    assert trials[best]["metrics"]["accuracy"] == top

    (mv,) = kube.list(api.API_VERSION, "ModelVersion", ns, labels={api.LABEL_MODEL: "iris-search"})
    lineage = mv["spec"]["lineage"]
    assert lineage["trainingJob"] == "iris-search"
    assert lineage["trial"]["index"] == best
    assert lineage["trial"]["parameters"] == trials[best]["parameters"]
    assert f"/trials/{best}/" in mv["spec"]["artifact"]["uri"]

    trial_pods = pods(core, ns, f"{api.LABEL_TRAININGJOB}=iris-search")
    assert len(trial_pods) == 12
    for pod in trial_pods:
        assert_real(pod)


def _running(core: client.CoreV1Api, ns: str, name: str) -> list[client.V1Pod]:
    return [
        p for p in pods(core, ns, f"{api.LABEL_TRAININGJOB}={name}") if p.status.phase == "Running"
    ]


def _no_pods(core: client.CoreV1Api, ns: str, name: str) -> bool:
    """Not even a terminating one: the kubelet has stopped every container."""
    selector = f"{api.LABEL_TRAININGJOB}={name}"
    return not core.list_namespaced_pod(ns, label_selector=selector).items


def test_suspending_or_deleting_a_search_stops_its_real_pods(
    core: client.CoreV1Api, kube: Kube, search_ns: str
) -> None:
    ns, name = search_ns, "slow-search"
    sample = yaml.safe_load(SAMPLE.read_text())
    sample["metadata"].update(name=name, namespace=ns)
    # Slow trials (hundreds of boosting rounds on digits), still training when stopped.
    sample["spec"].update(
        model=name,
        dataset={"builtin": "digits"},
        estimator={"type": "GradientBoostingClassifier"},
        search={"parameters": {"n_estimators": {"values": [400, 500, 600, 700]}},
                "parallelism": 2},
    )  # fmt: skip
    kube.create(sample)
    wait_for(lambda: len(_running(core, ns, name)) == 2, timeout=300, what="2 trials running")
    for pod in _running(core, ns, name):
        assert_real(pod)
    kube.patch("batch/v1", "Job", ns, f"{name}-train", {"spec": {"suspend": True}})
    wait_for(lambda: _no_pods(core, ns, name), timeout=120, what="the suspended pods to stop")

    def suspended() -> dict[str, Any] | None:
        obj = kube.get(api.API_VERSION, "TrainingJob", ns, name)
        held = condition(obj, "Suspended").get("status") == "True"
        return obj if held else None

    held = wait_for(suspended, timeout=60, what="the TrainingJob to say Suspended")
    assert {t["phase"] for t in held["status"]["trials"]} == {"Pending"}, held["status"]

    kube.patch("batch/v1", "Job", ns, f"{name}-train", {"spec": {"suspend": False}})
    wait_for(lambda: len(_running(core, ns, name)) == 2, timeout=300, what="the trials resumed")
    kube.delete(api.API_VERSION, "TrainingJob", ns, name)
    wait_for(lambda: _no_pods(core, ns, name), timeout=120, what="the deleted search's pods")
    assert kube.list(api.API_VERSION, "ModelVersion", ns, labels={api.LABEL_MODEL: name}) == []
