"""The closed loop's dataChanged trigger (pure): baseline, firing, cooldown, crash safety."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from kubeloop import datasets
from kubeloop.reconcile import loop, loop_state, triggers
from kubeloop.settings import Settings
from kubeloop_runtime import api
from tests.unit.test_loop import NOW, QUIET, cond, isvc_spec, observe, tj

V1, V2 = "1" * 64, "2" * 64


def data_spec(**triggers: Any) -> api.InferenceServiceSpec:
    return isvc_spec(
        template={
            "dataset": {"uri": "s3://data/iris/", "target": "target"},
            "estimator": {"type": "LogisticRegression"},
            "storage": {"secretName": "s3-creds"},
        },
        triggers={"drift": False, "dataChanged": True, **triggers},
    )


def with_version(obs: loop_state.Observed, version: str | None) -> loop_state.Observed:
    return dataclasses.replace(obs, dataset_version=version)


def test_first_version_seen_is_the_baseline_and_fires_nothing() -> None:
    p = loop.plan(with_version(observe(data_spec(), signals=QUIET), V1), NOW)
    assert p.create is None
    assert p.status["datasetVersion"] == V1


def test_a_new_version_starts_a_run_that_records_it() -> None:
    obs = observe(data_spec(), signals=QUIET, status={"datasetVersion": V1})
    p = loop.plan(with_version(obs, V2), NOW)
    assert p.create is not None
    trigger = p.create["spec"]["trigger"]
    assert trigger["signal"] == "data" and trigger["value"] == V2  # the lineage
    assert p.create["spec"]["storage"] == {"secretName": "s3-creds"}  # from the template
    assert p.status["datasetVersion"] == V2
    assert p.retrain_signal == "data"
    c = cond(p, loop.COND_RETRAINING)
    assert c.reason == "DatasetChanged" and "s3://data/iris/" in c.message


def test_same_version_does_not_fire() -> None:
    obs = observe(data_spec(), signals=QUIET, status={"datasetVersion": V1})
    assert loop.plan(with_version(obs, V1), NOW).create is None


def test_unknown_version_does_not_fire() -> None:
    obs = observe(data_spec(), signals=QUIET, status={"datasetVersion": V1})
    assert loop.plan(with_version(obs, None), NOW).create is None


def test_trigger_off_does_not_fire() -> None:
    obs = observe(data_spec(dataChanged=False), signals=QUIET, status={"datasetVersion": V1})
    assert loop.plan(with_version(obs, V2), NOW).create is None


def test_cooldown_holds_new_data_until_it_ends() -> None:
    run = tj("iris-retrain-1", signal="drift", at=NOW - dt.timedelta(minutes=10), succeeded="True")
    obs = observe(data_spec(), signals=QUIET, status={"datasetVersion": V1}, runs=[run])
    assert loop.plan(with_version(obs, V2), NOW).create is None
    later = NOW + dt.timedelta(hours=1)
    assert loop.plan(with_version(obs, V2), later).create is not None


def test_a_run_created_before_a_crash_is_not_started_again() -> None:
    """The status still says V1, but the newest run was started for V2."""
    run = tj("iris-retrain-1", signal="data", value=V2, at=NOW - dt.timedelta(hours=2))
    obs = observe(data_spec(), signals=QUIET, status={"datasetVersion": V1}, runs=[run])
    p = loop.plan(with_version(obs, V2), NOW)
    assert p.create is None
    assert p.status["datasetVersion"] == V2


def test_any_run_moves_the_baseline() -> None:
    obs = observe(
        data_spec(), annotation="now", signals=QUIET, status={"datasetVersion": V1}
    )  # a manual run while V2 is there: it trains on V2
    p = loop.plan(with_version(obs, V2), NOW)
    assert p.create is not None and p.create["spec"]["trigger"]["signal"] == "manual"
    assert p.status["datasetVersion"] == V2


def test_a_dataset_without_a_version_is_reported() -> None:
    spec = isvc_spec(triggers={"dataChanged": True})  # builtin iris
    assert spec.retraining is not None
    message = triggers.validate_retraining(spec.retraining)
    assert message is not None and "spec.retraining.triggers.dataChanged" in message


class FakeKube:
    def __init__(self, data: dict[str, str]) -> None:
        self.data = data
        self.gets = 0

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        self.gets += 1
        return {"data": dict(self.data)}


def test_watch_reads_a_configmap_at_most_once_per_poll_period() -> None:
    clock = [0.0]
    watch = datasets.DatasetWatch(clock=lambda: clock[0])
    spec = isvc_spec(
        template={
            "dataset": {"configMap": {"name": "d", "key": "a.csv"}, "target": "y"},
            "estimator": {"type": "LogisticRegression"},
        },
        triggers={"dataChanged": True, "dataPollSeconds": 30},
    )
    assert spec.retraining is not None
    kube = FakeKube({"a.csv": "x,y\n1,2\n"})
    first = watch.version(kube, "ml", "iris", spec.retraining, Settings())
    kube.data["a.csv"] = "x,y\n1,3\n"
    clock[0] = 10.0
    assert watch.version(kube, "ml", "iris", spec.retraining, Settings()) == first
    assert kube.gets == 1
    clock[0] = 31.0
    second = watch.version(kube, "ml", "iris", spec.retraining, Settings())
    assert second is not None and second != first and kube.gets == 2
