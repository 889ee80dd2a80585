"""The closed loop's decisions: observed world -> the next step. Pure: no I/O, no clock.

The loop of one InferenceService (see docs/closed-loop.md)::

    Watching --trigger--> Retraining --Succeeded--> Canary --analysis--> Promoting -> Watching
                              |                        |
                              +--gate failed--> Rejected (Watching)
                                                       +--analysis--> RolledBack (Watching)

Every decision is level-based: it is recomputed from the InferenceService (spec, status,
the ``kubeloop.io/retrain`` annotation), the TrainingJobs labelled with the service, the
ModelVersions and the signals read from the serving pods. Nothing depends on having seen
an earlier tick, so an operator restart at any point neither loses nor repeats a step:

- the TrainingJob's name is deterministic (``<isvc>-retrain-<n>``) and creation is
  idempotent; the newest TrainingJob (not only ``status.lastRetrain``) starts the cooldown,
  so a crash between "create" and "write status" cannot start a second run;
- a manual request is handled when a TrainingJob carries its value (``trigger.value``),
  not only when the status says so;
- a promotion first moves the alias (idempotent) and only then clears the loop's canary.

Where each part is decided: :mod:`kubeloop.reconcile.triggers` (whether a run starts),
:mod:`kubeloop.builders.retrain` (the run's TrainingJob and name),
:mod:`kubeloop.reconcile.canary` (the canary's state machine) with
:mod:`kubeloop.reconcile.analysis` (its verdict), :mod:`kubeloop.reconcile.loop_state`
(what a tick reads and writes). :func:`plan` here runs one tick as a sequence of steps.

The status fields written here (``lastRetrain``, ``activeRetrains``, ``loopCanary``,
``canaryStartTime``, ``analysis``, ``retrainRequestHandled`` and the ``Retraining`` /
``CanaryAnalysis`` conditions) are the loop's own; the InferenceService controller owns the
rest and reads ``loopCanary`` through :func:`loop_canary`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from kubeloop.builders.retrain import build_trainingjob, retrain_index, retrain_name
from kubeloop.conditions import MESSAGE_MAX, Condition, get_condition
from kubeloop.manifest import Obj
from kubeloop.reconcile import canary
from kubeloop.reconcile.loop_state import Event, LoopPlan, Observed, Retrain
from kubeloop.reconcile.triggers import (
    Fired,
    TriggerDecision,
    dataset_baseline,
    decide_trigger,
)
from kubeloop_runtime import api
from kubeloop_runtime.rfc3339 import format_time

COND_RETRAINING = "Retraining"

# Retraining reasons (True while a run is going, False otherwise).
REASON_BY_SIGNAL = {
    "drift": "DriftDetected",
    "accuracy": "AccuracyBelowThreshold",
    "error": "ErrorAboveThreshold",
    "schedule": "Scheduled",
    "manual": "Manual",
    "data": "DatasetChanged",
}
WATCHING = "Watching"
CHALLENGER_ACCEPTED = "ChallengerAccepted"
CHALLENGER_REJECTED = "ChallengerRejected"
TRAINING_FAILED = "TrainingFailed"


def plan(obs: Observed, now: dt.datetime) -> LoopPlan:
    """One tick of the loop: what to write, create, move and say.

    1. record the runs (adopts a run created just before a crash);
    2. the ``Retraining`` condition from the newest run;
    3. the canary: start, override, judge, promote, roll back (``canary.step``);
    4. whether a new run starts (``triggers.decide_trigger``), and start it;
    5. the conditions that changed, and the Warnings they carry.
    """
    p = LoopPlan()
    runs = sorted(obs.runs, key=lambda run: (run.index, run.started or now))
    latest = runs[-1] if runs else None
    _record_runs(obs.status, runs, p)
    retraining_cond = retraining_condition(obs.spec.retraining, latest)
    canary_cond, canary_in_flight = canary.step(obs, latest, now, p)
    if obs.spec.retraining is not None:
        started = _trigger(
            obs, obs.spec.retraining, runs, canary_in_flight=canary_in_flight, now=now, p=p
        )
        retraining_cond = started or retraining_cond
    _post_conditions(obs.status, retraining_cond, canary_cond, p)
    return p


def _active(runs: Sequence[Retrain]) -> list[str]:
    return [r.name for r in runs if not r.finished]


def _record_runs(st: Obj, runs: Sequence[Retrain], p: LoopPlan) -> None:
    """Step 1: ``activeRetrains`` and ``lastRetrain`` from the runs themselves."""
    latest = runs[-1] if runs else None
    active = _active(runs)
    if active != (st.get("activeRetrains") or []):
        p.status["activeRetrains"] = active or None
    recorded = st.get("lastRetrain") or {}
    if latest is not None and recorded.get("trainingJob") != latest.name and latest.trigger:
        p.status["lastRetrain"] = {
            "time": latest.trigger.time
            or (format_time(latest.started) if latest.started else None),
            "trainingJob": latest.name,
            "signal": latest.trigger.signal,
            "value": latest.trigger.value,
        }
        if latest.trigger.signal == "manual" and latest.trigger.value:
            p.status["retrainRequestHandled"] = latest.trigger.value


def retraining_condition(
    retraining: api.RetrainingSpec | None, latest: Retrain | None
) -> Condition | None:
    """Step 2: the ``Retraining`` condition from the newest run (None: no policy, no run)."""
    if latest is not None and not latest.finished:
        signal = latest.trigger.signal if latest.trigger else "manual"
        return Condition(
            COND_RETRAINING,
            "True",
            REASON_BY_SIGNAL.get(signal, "Manual"),
            f"TrainingJob {latest.name} is running ({signal}"
            + (f" {latest.trigger.value}" if latest.trigger and latest.trigger.value else "")
            + ")",
        )
    if latest is not None and latest.succeeded:
        return Condition(
            COND_RETRAINING,
            "False",
            CHALLENGER_ACCEPTED,
            f"TrainingJob {latest.name} registered {latest.model_version}, which passed its"
            " quality gate against the champion",
        )
    if latest is not None:
        rejected = latest.reason == api.REASON_QUALITY_GATE_FAILED
        return Condition(
            COND_RETRAINING,
            "False",
            CHALLENGER_REJECTED if rejected else TRAINING_FAILED,
            f"TrainingJob {latest.name}: {latest.message or latest.reason}"
            + ("; the serving version stays" if rejected else ""),
        )
    if retraining is not None:
        return Condition(
            COND_RETRAINING, "False", WATCHING, "no retraining run yet; watching the triggers"
        )
    return None


def _trigger(
    obs: Observed,
    retraining: api.RetrainingSpec,
    runs: Sequence[Retrain],
    *,
    canary_in_flight: bool,
    now: dt.datetime,
    p: LoopPlan,
) -> Condition | None:
    """Step 4: decide on the triggers, keep the dataset baseline, start a run if one fires.
    Returns the ``Retraining`` condition of a run started now."""
    st = obs.status
    if obs.serving is None or obs.model is None:
        decision = TriggerDecision(None, [], None)
        p.log.append("no serving ModelVersion resolved; triggers wait")
    else:
        decision = decide_trigger(
            retraining,
            status={**st, **{k: v for k, v in p.status.items() if v is not None}},
            runs=runs,
            signals=obs.signals,
            annotation=obs.annotation,
            created=obs.created,
            canary_in_flight=canary_in_flight,
            now=now,
            dataset_version=obs.dataset_version,
        )
    # The first version seen is the baseline; a run started for new data moves it.
    baseline = dataset_baseline(st, runs)
    if obs.dataset_version and baseline is None:
        p.status["datasetVersion"] = obs.dataset_version
    elif baseline is not None and baseline != st.get("datasetVersion"):
        p.status["datasetVersion"] = baseline
    if decision.fire is not None and obs.model is not None:
        return _start_run(obs, retraining, runs, f=decision.fire, model=obs.model, now=now, p=p)
    if decision.fired and decision.blocked:
        p.log.append(
            "triggers fired ("
            + ", ".join(f.signal for f in decision.fired)
            + f") but no retraining starts: {decision.blocked}"
        )
    return None


def _start_run(
    obs: Observed,
    retraining: api.RetrainingSpec,
    runs: Sequence[Retrain],
    *,
    f: Fired,
    model: str,
    now: dt.datetime,
    p: LoopPlan,
) -> Condition:
    """Create the next run (``<isvc>-retrain-<n+1>``) and record it in the status."""
    recorded = obs.status.get("lastRetrain") or {}
    index = (
        max(
            [r.index for r in runs]
            + [retrain_index(obs.owner.name, str(recorded.get("trainingJob") or ""))]
        )
        + 1
    )
    name = retrain_name(obs.owner.name, index)
    trigger = api.TriggerRef(
        inference_service=obs.owner.name,
        signal=f.signal,
        value=f.value[:256],
        time=format_time(now),
    )
    p.create = build_trainingjob(
        obs.owner, retraining, name=name, model=model, trigger=trigger, champion=obs.serving
    )
    p.retrain_signal = f.signal
    p.status["lastRetrain"] = {
        "time": format_time(now),
        "trainingJob": name,
        "signal": f.signal,
        "value": f.value,
    }
    p.status["activeRetrains"] = [*_active(runs), name]
    if f.signal == "manual":
        p.status["retrainRequestHandled"] = f.value
    if obs.dataset_version:  # every run trains on the data as it is now
        p.status["datasetVersion"] = obs.dataset_version
    p.events.append(
        Event("Normal", "RetrainingStarted", f"{f.message}; created TrainingJob {name}")
    )
    return Condition(
        COND_RETRAINING,
        "True",
        REASON_BY_SIGNAL[f.signal],
        f"{f.message}; started TrainingJob {name}"[:1024],
    )


def _condition_changed(old: Obj, c: Condition) -> bool:
    """Whether ``c`` differs from the stored condition, which holds the message cut to
    MESSAGE_MAX (so a long message seen again is no change, and posts no second Event)."""
    prev = get_condition(old.get("conditions"), c.type)
    return prev is None or (prev.get("status"), prev.get("reason"), prev.get("message")) != (
        c.status,
        c.reason,
        c.message[:MESSAGE_MAX],
    )


def _post_conditions(
    st: Obj, retraining: Condition | None, canary_cond: Condition | None, p: LoopPlan
) -> None:
    """Step 5: the conditions that changed; a failed or rejected run is also a Warning."""
    for c in (retraining, canary_cond):
        if c is not None and _condition_changed(st, c):
            p.conditions.append(c)
            if (
                c is retraining
                and c.status == "False"
                and c.reason in (CHALLENGER_REJECTED, TRAINING_FAILED)
            ):
                p.events.append(Event("Warning", c.reason, c.message))
