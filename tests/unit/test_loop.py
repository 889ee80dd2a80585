"""The closed loop's pure decisions: triggers, cooldown, concurrency, analysis, transitions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubeloop.builders import predictor, retrain
from kubeloop.conditions import MESSAGE_MAX, get_condition
from kubeloop.reconcile import analysis, canary, loop, loop_state, triggers
from kubeloop.reconcile import inferenceservice as isvc_rec
from kubeloop_runtime import api, rfc3339

NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
CREATED = NOW - dt.timedelta(days=1)
OWNER = predictor.Owner(name="iris", namespace="ml", uid="uid-isvc")


def ts(t: dt.datetime) -> str:
    return rfc3339.format_time(t)


def isvc_spec(**retraining: Any) -> api.InferenceServiceSpec:
    r = {
        "template": {"dataset": {"builtin": "iris"}, "estimator": {"type": "LogisticRegression"}},
        "cooldownSeconds": 3600,
        "analysis": {"windowSeconds": 60, "minRequests": 10, "maxErrorRate": 0.05},
        **retraining,
    }
    return api.InferenceServiceSpec.model_validate(
        {"model": {"model": "iris", "alias": "production"}, "replicas": 3, "retraining": r}
    )


def tj(
    name: str,
    *,
    signal: str = "drift",
    value: str = "0.75",
    at: dt.datetime = NOW - dt.timedelta(minutes=5),
    succeeded: str | None = None,
    reason: str = "",
    message: str = "",
    mv: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if succeeded is not None:
        status["conditions"] = [
            {"type": "Succeeded", "status": succeeded, "reason": reason, "message": message}
        ]
    if mv:
        status["modelVersion"] = mv
    return {
        "metadata": {"name": name, "creationTimestamp": ts(at)},
        "spec": {
            "trigger": {
                "inferenceService": "iris",
                "signal": signal,
                "value": value,
                "time": ts(at),
            }
        },
        "status": status,
    }


def mv(
    name: str, version: int, aliases: list[str] | None = None, spec_aliases: Any = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "1"},
        "spec": {"model": "iris", "version": version, "aliases": spec_aliases or aliases or []},
        "status": {"aliases": aliases or [], "conditions": [{"type": "Ready", "status": "True"}]},
    }


def observe(
    spec: api.InferenceServiceSpec | None = None,
    *,
    status: dict[str, Any] | None = None,
    runs: list[dict[str, Any]] | None = None,
    signals: loop_state.Signals | None = None,
    annotation: str | None = None,
    versions: list[dict[str, Any]] | None = None,
    serving: str | None = "iris-v1",
    canary: loop_state.CanaryStats | None = None,
    rollback: str | None = None,
) -> loop_state.Observed:
    return loop_state.Observed(
        owner=OWNER,
        created=CREATED,
        spec=spec or isvc_spec(),
        status=status or {},
        annotation=annotation,
        runs=[loop_state.retrain_from("iris", r) for r in runs or []],
        model_versions=versions if versions is not None else [mv("iris-v1", 1, ["production"])],
        serving=serving,
        model="iris",
        task=api.Task.CLASSIFICATION,
        signals=signals,
        canary_stats=canary,
        rollback_request=rollback,
    )


DRIFT = loop_state.Signals(
    pods=3, drift=True, drift_share=0.75, drifted_features=("petal length (cm)",)
)
QUIET = loop_state.Signals(pods=3, drift=False, drift_share=0.0)


def cond(p: loop_state.LoopPlan, type_: str) -> Any:
    for c in p.conditions:
        if c.type == type_:
            return c
    return None


# ----------------------------------------------------------------------------- triggers


def test_drift_starts_one_trainingjob_with_trigger_and_champion() -> None:
    p = loop.plan(observe(signals=DRIFT), NOW)
    assert p.create is not None
    assert p.create["metadata"]["name"] == "iris-retrain-1"
    assert p.create["metadata"]["labels"][api.LABEL_INFERENCESERVICE] == "iris"
    owner = p.create["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("InferenceService", "uid-isvc")
    spec = api.TrainingJobSpec.model_validate(p.create["spec"])
    assert spec.model == "iris"
    assert spec.champion == "iris-v1"
    assert spec.champion_gate is not None
    assert spec.trigger == api.TriggerRef(
        inference_service="iris", signal="drift", value="0.75", time=ts(NOW)
    )
    assert p.status["lastRetrain"] == {
        "time": ts(NOW),
        "trainingJob": "iris-retrain-1",
        "signal": "drift",
        "value": "0.75",
    }
    assert p.status["activeRetrains"] == ["iris-retrain-1"]
    c = cond(p, loop.COND_RETRAINING)
    assert (c.status, c.reason) == ("True", "DriftDetected")
    assert "0.75" in c.message and "petal length" in c.message
    assert p.retrain_signal == "drift"
    assert [e.reason for e in p.events] == ["RetrainingStarted"]


def test_no_drift_no_retrain_and_a_watching_condition() -> None:
    p = loop.plan(observe(signals=QUIET), NOW)
    assert p.create is None
    c = cond(p, loop.COND_RETRAINING)
    assert (c.status, c.reason) == ("False", loop.WATCHING)


def test_drift_unknown_without_enough_data_does_not_fire() -> None:
    assert loop.plan(observe(signals=loop_state.Signals(pods=3, drift=None)), NOW).create is None


def test_drift_trigger_off() -> None:
    spec = isvc_spec(triggers={"drift": False})
    assert loop.plan(observe(spec, signals=DRIFT), NOW).create is None


@pytest.mark.parametrize(("accuracy", "fires"), [(0.7, True), (0.8, False), (0.95, False)])
def test_accuracy_below(accuracy: float, fires: bool) -> None:
    spec = isvc_spec(triggers={"drift": False, "accuracyBelow": 0.8})
    signals = loop_state.Signals(pods=2, accuracy=accuracy, accuracy_count=120)
    p = loop.plan(observe(spec, signals=signals), NOW)
    assert (p.create is not None) is fires
    if fires:
        assert p.create is not None
        assert p.create["spec"]["trigger"]["signal"] == "accuracy"
        assert cond(p, loop.COND_RETRAINING).reason == "AccuracyBelowThreshold"


def test_accuracy_without_labels_does_not_fire() -> None:
    spec = isvc_spec(triggers={"drift": False, "accuracyBelow": 0.8})
    assert loop.plan(observe(spec, signals=loop_state.Signals(pods=2)), NOW).create is None


def test_error_above_for_regression() -> None:
    spec = isvc_spec(triggers={"drift": False, "errorAbove": 10.0})
    p = loop.plan(
        observe(spec, signals=loop_state.Signals(pods=1, live_error=12.5, accuracy_count=50)), NOW
    )
    assert p.create is not None and p.create["spec"]["trigger"]["signal"] == "error"


def test_schedule_due_and_not_due() -> None:
    spec = isvc_spec(triggers={"drift": False, "schedule": "0 * * * *"}, cooldownSeconds=0)
    # Last retrain at 11:00:00 -> next fire 12:00:00 == NOW: due.
    status = {
        "lastRetrain": {"time": ts(NOW - dt.timedelta(hours=1)), "trainingJob": "iris-retrain-3"}
    }
    p = loop.plan(observe(spec, status=status, signals=QUIET), NOW)
    assert p.create is not None
    assert p.create["metadata"]["name"] == "iris-retrain-4"
    assert p.create["spec"]["trigger"] == {
        "inferenceService": "iris",
        "signal": "schedule",
        "value": ts(NOW),
        "time": ts(NOW),
    }
    # Last retrain at 12:00 already: the next fire is 13:00.
    status = {"lastRetrain": {"time": ts(NOW), "trainingJob": "iris-retrain-4"}}
    later = NOW + dt.timedelta(minutes=30)
    assert loop.plan(observe(spec, status=status, signals=QUIET), later).create is None


def test_manual_annotation_new_value_fires_same_value_does_not() -> None:
    p = loop.plan(observe(annotation="now", signals=QUIET), NOW)
    assert p.create is not None
    assert p.create["spec"]["trigger"]["signal"] == "manual"
    assert p.create["spec"]["trigger"]["value"] == "now"
    assert p.status["retrainRequestHandled"] == "now"
    assert cond(p, loop.COND_RETRAINING).reason == "Manual"
    # Handled (recorded in status): nothing.
    status = {"retrainRequestHandled": "now"}
    assert loop.plan(observe(annotation="now", status=status), NOW).create is None
    # Handled (a run carries it, the status write was lost): nothing either.
    done = tj("iris-retrain-1", signal="manual", value="now", succeeded="False", reason="DataError")
    assert loop.plan(observe(annotation="now", runs=[done]), NOW).create is None
    # A new value fires again, even within the cooldown (a person asked).
    p = loop.plan(observe(annotation="2024-05-01T12:00", status=status, runs=[done]), NOW)
    assert p.create is not None and p.create["metadata"]["name"] == "iris-retrain-2"


def test_retraining_disabled_never_fires() -> None:
    spec = isvc_spec(enabled=False)
    assert loop.plan(observe(spec, signals=DRIFT, annotation="now"), NOW).create is None


def test_no_serving_version_no_retrain() -> None:
    assert loop.plan(observe(signals=DRIFT, serving=None), NOW).create is None


# ------------------------------------------------------------------- cooldown / concurrency


def test_flapping_signal_within_cooldown_starts_no_second_retrain() -> None:
    first = loop.plan(observe(signals=DRIFT), NOW)
    assert first.create is not None
    status = {k: v for k, v in first.status.items() if v is not None}
    run = tj("iris-retrain-1", at=NOW, succeeded="False", reason="QualityGateFailed")
    # Off, on, off, on over the next 50 minutes (cooldown 1 h): nothing new.
    for minutes, signals in ((10, QUIET), (20, DRIFT), (30, QUIET), (50, DRIFT)):
        t = NOW + dt.timedelta(minutes=minutes)
        assert loop.plan(observe(status=status, runs=[run], signals=signals), t).create is None
    # After the cooldown, drift starts run 2.
    p = loop.plan(observe(status=status, runs=[run], signals=DRIFT), NOW + dt.timedelta(hours=1))
    assert p.create is not None and p.create["metadata"]["name"] == "iris-retrain-2"


def test_cooldown_counts_from_the_newest_run_even_if_status_lost_it() -> None:
    """A crash between creating the TrainingJob and writing status must not start another."""
    run = tj("iris-retrain-1", at=NOW - dt.timedelta(seconds=5))
    p = loop.plan(observe(status={}, runs=[run], signals=DRIFT), NOW)
    assert p.create is None
    # ... and the status adopts the run.
    assert p.status["lastRetrain"]["trainingJob"] == "iris-retrain-1"
    assert p.status["activeRetrains"] == ["iris-retrain-1"]
    assert cond(p, loop.COND_RETRAINING).status == "True"


def test_max_concurrent() -> None:
    spec = isvc_spec(cooldownSeconds=0, maxConcurrent=2)
    running = [tj("iris-retrain-1", at=NOW - dt.timedelta(hours=2))]
    p = loop.plan(observe(spec, runs=running, signals=DRIFT), NOW)
    assert p.create is not None and p.create["metadata"]["name"] == "iris-retrain-2"
    running.append(tj("iris-retrain-2", at=NOW - dt.timedelta(hours=1)))
    assert loop.plan(observe(spec, runs=running, signals=DRIFT), NOW).create is None
    # A manual request waits for a free slot too (and stays pending, not handled).
    p = loop.plan(observe(spec, runs=running, annotation="now"), NOW)
    assert p.create is None and "retrainRequestHandled" not in p.status


def test_decide_trigger_reports_why_it_is_blocked() -> None:
    r = isvc_spec().retraining
    assert r is not None
    runs = [
        loop_state.retrain_from(
            "iris", tj("iris-retrain-1", at=NOW - dt.timedelta(minutes=1), succeeded="True")
        )
    ]
    d = triggers.decide_trigger(
        r, status={}, runs=runs, signals=DRIFT, annotation=None, created=CREATED,
        canary_in_flight=False, now=NOW,
    )  # fmt: skip
    assert d.fire is None and d.blocked is not None and "cooldown" in d.blocked


# ----------------------------------------------------------------------------- outcomes


def test_gate_failure_stops_the_loop_with_a_clear_reason() -> None:
    msg = "champion gate failed: accuracy 0.61 (challenger) vs 0.93 (iris-v1)"
    run = tj("iris-retrain-1", succeeded="False", reason="QualityGateFailed", message=msg)
    p = loop.plan(
        observe(
            runs=[run], signals=QUIET, status={"lastRetrain": {"trainingJob": "iris-retrain-1"}}
        ),
        NOW,
    )
    c = cond(p, loop.COND_RETRAINING)
    assert (c.status, c.reason) == ("False", loop.CHALLENGER_REJECTED)
    assert "0.61" in c.message and "0.93" in c.message
    assert "loopCanary" not in p.status and p.create is None
    assert [e.reason for e in p.events] == [loop.CHALLENGER_REJECTED]
    # Seen again: same condition, no new Event.
    st = {
        "conditions": [
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
        ]
    }
    again = loop.plan(
        observe(
            runs=[run],
            signals=QUIET,
            status={**st, "lastRetrain": {"trainingJob": "iris-retrain-1"}},
        ),
        NOW,
    )
    assert again.events == [] and again.conditions == []


def test_training_failure_is_not_a_rejection() -> None:
    run = tj("iris-retrain-1", succeeded="False", reason="DataError", message="no such column")
    c = cond(loop.plan(observe(runs=[run]), NOW), loop.COND_RETRAINING)
    assert c.reason == loop.TRAINING_FAILED


def test_accepted_challenger_starts_the_loop_canary() -> None:
    run = tj("iris-retrain-1", succeeded="True", reason="Trained", mv="iris-v2")
    versions = [mv("iris-v1", 1, ["production"]), mv("iris-v2", 2)]
    p = loop.plan(observe(runs=[run], versions=versions, signals=DRIFT), NOW)
    assert p.status["loopCanary"] == {
        "modelVersion": "iris-v2",
        "trafficPercent": 25,
        "trainingJob": "iris-retrain-1",
    }
    assert p.status["analysis"]["decision"] == canary.PENDING
    assert cond(p, canary.COND_CANARY_ANALYSIS).status == "Unknown"
    assert cond(p, loop.COND_RETRAINING).reason == loop.CHALLENGER_ACCEPTED
    assert "CanaryStarted" in [e.reason for e in p.events]
    # No retraining while the canary is being analysed, even with drift and no cooldown.
    assert p.create is None
    # The InferenceService controller sees it through desired_canary.
    desired = isvc_rec.desired_canary(isvc_spec(), p.status)
    assert desired is not None
    assert (desired.model_version, desired.traffic_percent) == ("iris-v2", 25)
    assert desired.analysis is not None and desired.analysis.window_seconds == 60


def test_manual_canary_wins_over_the_loop() -> None:
    spec = api.InferenceServiceSpec.model_validate(
        {**isvc_spec().wire(), "canary": {"modelVersion": "iris-v7", "trafficPercent": 50}}
    )
    status = {"loopCanary": {"modelVersion": "iris-v2", "trafficPercent": 25}}
    assert isvc_rec.desired_canary(spec, status).model_version == "iris-v7"  # type: ignore[union-attr]
    p = loop.plan(observe(spec, status=status), NOW)
    assert p.status["loopCanary"] is None
    assert p.status["analysis"]["decision"] == canary.SUPERSEDED
    assert cond(p, canary.COND_CANARY_ANALYSIS).reason == canary.MANUAL_OVERRIDE


# ----------------------------------------------------------------------------- analysis


A = api.AnalysisSpec(
    window_seconds=60,
    min_requests=10,
    max_error_rate=0.05,
    max_p99_latency_seconds=0.5,
    min_accuracy=0.8,
)


@pytest.mark.parametrize(
    ("stats", "elapsed", "decision", "reason"),
    [
        (
            loop_state.CanaryStats(pods=1, requests=100, errors=0, p99_latency=0.01, accuracy=0.9),
            30,
            "Pending",
            "",
        ),
        (loop_state.CanaryStats(pods=1, requests=5, errors=0, p99_latency=0.01), 90, "Pending", ""),
        (
            loop_state.CanaryStats(pods=1, requests=100, errors=1, p99_latency=0.01, accuracy=0.9),
            90,
            "Promote",
            "",
        ),
        (
            loop_state.CanaryStats(pods=1, requests=100, errors=0, p99_latency=0.01),
            90,
            "Promote",
            "",
        ),  # no labels
        (
            loop_state.CanaryStats(pods=1, requests=100, errors=6, p99_latency=0.01),
            90,
            "Rollback",
            "error_rate",
        ),
        (
            loop_state.CanaryStats(pods=1, requests=100, errors=0, p99_latency=0.7),
            90,
            "Rollback",
            "latency",
        ),
        (
            loop_state.CanaryStats(
                pods=1, requests=100, errors=0, p99_latency=0.01, accuracy=0.5, accuracy_count=40
            ),
            90,
            "Rollback",
            "accuracy",
        ),
        (loop_state.CanaryStats(pods=0), 90, "Pending", ""),
    ],
)
def test_analyse(stats: loop_state.CanaryStats, elapsed: int, decision: str, reason: str) -> None:
    v = analysis.analyse(A, stats, NOW - dt.timedelta(seconds=elapsed), NOW)
    assert (v.decision, v.reason) == (decision, reason)


def test_analyse_messages_carry_the_numbers() -> None:
    v = analysis.analyse(
        A,
        loop_state.CanaryStats(pods=1, requests=100, errors=6),
        NOW - dt.timedelta(seconds=61),
        NOW,
    )
    assert "0.06" in v.message and "0.05" in v.message and "6 of 100" in v.message
    assert v.metrics["errorRate"] == pytest.approx(0.06)
    assert analysis.analyse(A, None, None, NOW).decision == "Pending"


def canary_status(
    decision: str = canary.PENDING, started: dt.datetime | None = None
) -> dict[str, Any]:
    st: dict[str, Any] = {
        "loopCanary": {
            "modelVersion": "iris-v2",
            "trafficPercent": 25,
            "trainingJob": "iris-retrain-1",
        },
        "analysis": {"decision": decision, "modelVersion": "iris-v2"},
        "canaryVersion": "iris-v2",
        "conditions": [{"type": "CanaryReady", "status": "True", "reason": "RolledOut"}],
        "lastRetrain": {"trainingJob": "iris-retrain-1"},
    }
    if started is not None:
        st["canaryStartTime"] = ts(started)
    return st


RUN_OK = tj("iris-retrain-1", succeeded="True", reason="Trained", mv="iris-v2")
V12 = [mv("iris-v1", 1, ["production"]), mv("iris-v2", 2)]
HEALTHY = loop_state.CanaryStats(pods=1, requests=40, errors=0, p99_latency=0.002)


def test_canary_clock_starts_when_ready() -> None:
    p = loop.plan(observe(status=canary_status(), runs=[RUN_OK], versions=V12, canary=HEALTHY), NOW)
    assert p.status["canaryStartTime"] == ts(NOW)
    assert p.status["analysis"]["decision"] == canary.PENDING


def test_canary_passes_and_the_alias_moves_then_the_canary_is_dropped() -> None:
    st = canary_status(started=NOW - dt.timedelta(seconds=61))
    p = loop.plan(observe(status=st, runs=[RUN_OK], versions=V12, canary=HEALTHY), NOW)
    assert p.alias_move == ("iris-v2", "production")
    assert p.status["analysis"]["decision"] == canary.PROMOTE
    assert cond(p, canary.COND_CANARY_ANALYSIS).reason == canary.PROMOTING
    assert "loopCanary" not in p.status  # kept until the alias is confirmed
    # Next tick, alias requested but not confirmed yet: nothing new to ask.
    st2 = {**st, "analysis": p.status["analysis"]}
    requested = [
        mv("iris-v1", 1, ["production"]),
        mv("iris-v2", 2, [], spec_aliases=["production"]),
    ]
    p2 = loop.plan(observe(status=st2, runs=[RUN_OK], versions=requested, canary=HEALTHY), NOW)
    assert p2.alias_move is None and "loopCanary" not in p2.status
    # The registry confirmed it on v2: the canary goes, the condition says Promoted.
    moved = [mv("iris-v1", 1), mv("iris-v2", 2, ["production"])]
    p3 = loop.plan(observe(status=st2, runs=[RUN_OK], versions=moved, serving="iris-v2"), NOW)
    assert p3.status["loopCanary"] is None
    c = cond(p3, canary.COND_CANARY_ANALYSIS)
    assert (c.status, c.reason) == ("True", canary.PROMOTED)
    assert "Promoted" in [e.reason for e in p3.events]
    # And the loop does not start a canary for v2 again.
    st3 = {**st2, "loopCanary": None, "canaryVersion": None}
    p4 = loop.plan(observe(status=st3, runs=[RUN_OK], versions=moved, serving="iris-v2"), NOW)
    assert "loopCanary" not in p4.status and p4.alias_move is None


def test_canary_fails_and_is_rolled_back() -> None:
    st = canary_status(started=NOW - dt.timedelta(seconds=61))
    bad = loop_state.CanaryStats(pods=1, requests=40, errors=0, p99_latency=2.0)
    spec = isvc_spec(analysis={"windowSeconds": 60, "minRequests": 10, "maxP99LatencySeconds": 0.5})
    p = loop.plan(observe(spec, status=st, runs=[RUN_OK], versions=V12, canary=bad), NOW)
    assert p.status["loopCanary"] is None
    assert p.status["analysis"]["decision"] == canary.ROLLBACK
    assert p.alias_move is None
    c = cond(p, canary.COND_CANARY_ANALYSIS)
    assert (c.status, c.reason) == ("False", canary.ROLLED_BACK)
    assert "p99 latency 2s > maxP99LatencySeconds 0.5" in c.message
    # Rolled back: not restarted for the same version.
    st2 = {**st, "loopCanary": None, "analysis": p.status["analysis"]}
    p2 = loop.plan(observe(spec, status=st2, runs=[RUN_OK], versions=V12), NOW)
    assert "loopCanary" not in p2.status


def test_pinned_service_passing_canary_requires_promotion() -> None:
    spec = api.InferenceServiceSpec.model_validate(
        {**isvc_spec().wire(), "model": {"modelVersion": "iris-v1"}}
    )
    st = canary_status(started=NOW - dt.timedelta(seconds=61))
    p = loop.plan(observe(spec, status=st, runs=[RUN_OK], versions=V12, canary=HEALTHY), NOW)
    assert p.alias_move is None and p.spec_patch is None
    assert cond(p, canary.COND_CANARY_ANALYSIS).reason == canary.PROMOTION_REQUIRED
    assert "loopCanary" not in p.status  # the canary keeps running until a person decides


def test_manual_canary_with_analysis_rolls_back_through_the_spec() -> None:
    spec = api.InferenceServiceSpec.model_validate(
        {
            **isvc_spec().wire(),
            "canary": {
                "modelVersion": "iris-v2",
                "trafficPercent": 25,
                "analysis": {"windowSeconds": 10, "minRequests": 0, "maxErrorRate": 0.0},
            },
        }
    )
    st = {**canary_status(started=NOW - dt.timedelta(seconds=11)), "loopCanary": None}
    bad = loop_state.CanaryStats(pods=1, requests=10, errors=1)
    p = loop.plan(observe(spec, status=st, versions=V12, canary=bad), NOW)
    assert p.spec_patch == {"spec": {"canary": None}}


def test_retrain_names() -> None:
    assert retrain.retrain_name("iris", 3) == "iris-retrain-3"
    assert retrain.retrain_index("iris", "iris-retrain-12") == 12
    assert retrain.retrain_index("iris", "other-retrain-12") == 0
    long = "x" * 60
    name = retrain.retrain_name(long, 9999)
    assert len(name) + len("-train") <= 63
    assert retrain.retrain_index(long, name) == 9999


def test_condition_observed_generation_round_trip() -> None:
    p = loop.plan(observe(signals=DRIFT), NOW)
    from kubeloop.conditions import set_conditions

    conds = set_conditions([], p.conditions, generation=4)
    c = get_condition(conds, loop.COND_RETRAINING)
    assert c is not None and c["observedGeneration"] == 4


def test_a_long_gate_message_stored_cut_posts_no_second_event() -> None:
    """The status holds the message cut to MESSAGE_MAX; seeing it again is no change."""
    msg = "champion gate failed: " + "accuracy 0.61 (challenger) vs 0.93; " * 60
    assert len(msg) > MESSAGE_MAX
    run = tj("iris-retrain-1", succeeded="False", reason="QualityGateFailed", message=msg)
    seen = {"lastRetrain": {"trainingJob": "iris-retrain-1"}}
    first = loop.plan(observe(runs=[run], signals=QUIET, status=seen), NOW)
    c = cond(first, loop.COND_RETRAINING)
    assert [e.reason for e in first.events] == [loop.CHALLENGER_REJECTED]
    stored = {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
    stored["message"] = stored["message"][:MESSAGE_MAX]  # what the API server holds
    again = loop.plan(
        observe(runs=[run], signals=QUIET, status={**seen, "conditions": [stored]}), NOW
    )
    assert again.events == [] and again.conditions == []


def test_a_rollback_request_rolls_back_exactly_the_running_loop_canary() -> None:
    st = canary_status(started=NOW - dt.timedelta(seconds=10))
    # Healthy so far, analysis pending: the request decides, not the metrics.
    p = loop.plan(
        observe(status=st, runs=[RUN_OK], versions=V12, canary=HEALTHY, rollback="iris-v2"), NOW
    )
    assert p.status["loopCanary"] is None
    assert p.status["analysis"]["decision"] == canary.ROLLBACK
    assert p.status["analysis"]["source"] == "manual"
    assert p.status["analysis"]["modelVersion"] == "iris-v2"
    assert p.alias_move is None and p.spec_patch is None
    c = cond(p, canary.COND_CANARY_ANALYSIS)
    assert (c.status, c.reason) == ("False", canary.ROLLED_BACK)
    assert "kubeloop.io/rollback=iris-v2" in c.message
    assert [e.reason for e in p.events] == [canary.ROLLED_BACK]
    # A request naming another version (a stale one) changes nothing.
    other = loop.plan(
        observe(status=st, runs=[RUN_OK], versions=V12, canary=HEALTHY, rollback="iris-v9"), NOW
    )
    assert "loopCanary" not in other.status
    assert (other.status.get("analysis") or {}).get("decision") != canary.ROLLBACK


def test_an_analysis_rollback_says_its_source() -> None:
    st = canary_status(started=NOW - dt.timedelta(seconds=61))
    bad = loop_state.CanaryStats(pods=1, requests=40, errors=0, p99_latency=2.0)
    spec = isvc_spec(analysis={"windowSeconds": 60, "minRequests": 10, "maxP99LatencySeconds": 0.5})
    p = loop.plan(observe(spec, status=st, runs=[RUN_OK], versions=V12, canary=bad), NOW)
    assert p.status["analysis"]["source"] == "analysis"
