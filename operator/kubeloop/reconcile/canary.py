"""The closed loop's canary and its state machine. Pure: no I/O, no clock.

A canary is the loop's own (``status.loopCanary``, started for a challenger that passed
its gate) or a person's (``spec.canary`` with ``analysis``)::

    (accepted challenger) --start--> Analyzing --Promote--> Promoting --alias moved--> Promoted
                                         |                 (or PromotionRequired when the
                                         |                  service pins a version)
                                         +--Rollback / kubeloop.io/rollback--> RolledBack
    spec.canary set while the loop's canary runs --> ManualOverride (the loop's is dropped)

:func:`kubeloop.reconcile.analysis.analyse` judges the numbers; :func:`step` is one tick of
the state machine: it writes the loop's canary fields and the analysis into the plan
and returns the ``CanaryAnalysis`` condition. Every state is read back from the status on
the next tick, so a restart between two ticks changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubeloop import registry
from kubeloop.conditions import Condition, get_condition
from kubeloop.manifest import Obj
from kubeloop.reconcile.analysis import Verdict, analyse
from kubeloop.reconcile.loop_state import Event, LoopPlan, Observed, Retrain
from kubeloop_runtime import api
from kubeloop_runtime.rfc3339 import format_time, parse_time

COND_CANARY_ANALYSIS = "CanaryAnalysis"

# CanaryAnalysis reasons.
ANALYZING = "Analyzing"
PROMOTING = "Promoting"
PROMOTED = "Promoted"
PROMOTION_REQUIRED = "PromotionRequired"
ROLLED_BACK = "RolledBack"
MANUAL_OVERRIDE = "ManualOverride"

# status.analysis.decision values.
PENDING = "Pending"
PROMOTE = "Promote"
ROLLBACK = "Rollback"
SUPERSEDED = "Superseded"


def loop_canary(
    spec: api.InferenceServiceSpec, status: Mapping[str, Any] | None
) -> api.CanarySpec | None:
    """The canary the closed loop runs (``status.loopCanary``), as a CanarySpec; None if none.

    A manual ``spec.canary`` wins (the caller checks it first).
    """
    lc = (status or {}).get("loopCanary") or {}
    mv = lc.get("modelVersion")
    if not isinstance(mv, str) or not mv:
        return None
    pct = lc.get("trafficPercent")
    if not isinstance(pct, int) or isinstance(pct, bool):
        pct = spec.retraining.canary_traffic_percent if spec.retraining else 25
    analysis = spec.retraining.analysis if spec.retraining else None
    try:
        return api.CanarySpec(model_version=mv, traffic_percent=pct, analysis=analysis)
    except ValidationError:
        return None


# ----------------------------------------------------------------------------- state machine


def _alias_holder(versions: Sequence[Obj], model: str, alias: str) -> str | None:
    holder = registry.resolve_alias(
        [v for v in versions if registry.model_of(v) == model], model, alias
    )
    return registry.name_of(holder) if holder is not None else None


def _requested(versions: Sequence[Obj], name: str, alias: str) -> bool:
    for v in versions:
        if registry.name_of(v) == name:
            return alias in registry.requested_aliases(v)
    return False


def _canary_ready(status: Obj, version: str) -> bool:
    ready = get_condition(status.get("conditions"), "CanaryReady")
    return (
        status.get("canaryVersion") == version
        and ready is not None
        and ready.get("status") == "True"
    )


@dataclass
class _Tick:
    """The canary's state during one tick: the loop's canary and the recorded analysis,
    as read from the status and changed by the steps below."""

    obs: Observed
    now: dt.datetime
    p: LoopPlan
    lc: dict[str, Any]  # status.loopCanary as this tick leaves it
    analysis_st: dict[str, Any]  # status.analysis as this tick leaves it
    alias_ref: str | None  # the alias the service follows (None: it pins a version)
    cond: Condition | None = None
    canary: api.CanarySpec | None = None  # the canary under analysis, if any
    loop_owned: bool = False  # the loop's canary (else a person's spec.canary)

    def finish(
        self, decision: str, message: str, metrics: Mapping[str, float], source: str = "analysis"
    ) -> None:
        """Record the analysis' outcome. ``source``: who decided, the analysis of the
        canary's metrics or a person ("manual")."""
        self.p.status["analysis"] = {
            "decision": decision,
            "modelVersion": self.analysis_st.get("modelVersion") or self.lc.get("modelVersion"),
            "message": message[:1024],
            "time": format_time(self.now),
            "metrics": dict(metrics),
            "source": source,
        }


def step(
    obs: Observed, latest: Retrain | None, now: dt.datetime, p: LoopPlan
) -> tuple[Condition | None, bool]:
    """One tick of the canary: start, override, judge, promote or roll back.

    Writes the loop's canary fields, the analysis, alias moves, spec patches and Events
    into ``p``. Returns the ``CanaryAnalysis`` condition (None: nothing to say) and whether
    a canary (the loop's or a person's) is still up, which holds new runs back.
    """
    st = obs.status
    t = _Tick(
        obs=obs,
        now=now,
        p=p,
        lc=dict(st.get("loopCanary") or {}),
        analysis_st=dict(st.get("analysis") or {}),
        alias_ref=obs.spec.model.alias if obs.spec.model.model_version is None else None,
    )
    _start(t, latest)
    _choose(t)
    if t.canary is not None and t.canary.analysis is not None:
        _judge(t, t.canary, t.canary.analysis)
    lc_after = p.status.get("loopCanary", t.lc)
    return t.cond, obs.spec.canary is not None or bool(lc_after)


def _start(t: _Tick, latest: Retrain | None) -> None:
    """Start the loop's canary for a new accepted challenger (unless a person's runs)."""
    obs, p, now = t.obs, t.p, t.now
    retraining = obs.spec.retraining
    manual = obs.spec.canary
    if not (
        retraining is not None
        and latest is not None
        and latest.succeeded
        and latest.model_version
        and not t.lc
        and t.analysis_st.get("modelVersion") != latest.model_version
        and obs.serving != latest.model_version
    ):
        return
    mv = latest.model_version
    if manual is not None:
        p.status["analysis"] = {
            "decision": SUPERSEDED,
            "modelVersion": mv,
            "message": f"a manual canary ({manual.model_version}) is running; challenger"
            f" {mv} is not canaried",
            "time": format_time(now),
        }
        t.cond = Condition(
            COND_CANARY_ANALYSIS,
            "False",
            MANUAL_OVERRIDE,
            f"spec.canary ({manual.model_version}) overrides the loop; {mv} not canaried",
        )
        return
    t.lc = {
        "modelVersion": mv,
        "trafficPercent": retraining.canary_traffic_percent,
        "trainingJob": latest.name,
    }
    p.status["loopCanary"] = t.lc
    p.status["canaryStartTime"] = None
    t.analysis_st = {"decision": PENDING, "modelVersion": mv}
    p.status["analysis"] = {
        "decision": PENDING,
        "modelVersion": mv,
        "message": "waiting for the canary pods to be ready",
        "time": format_time(now),
        "metrics": {},
    }
    t.cond = Condition(
        COND_CANARY_ANALYSIS,
        "Unknown",
        ANALYZING,
        f"canary {mv} started at {retraining.canary_traffic_percent}% of replicas",
    )
    p.events.append(
        Event(
            "Normal",
            "CanaryStarted",
            f"Challenger {mv} (from {latest.name}) runs as a canary at"
            f" {retraining.canary_traffic_percent}%",
        )
    )


def _choose(t: _Tick) -> None:
    """Which canary is analysed: a person's ``spec.canary`` replaces the loop's."""
    manual = t.obs.spec.canary
    p, lc = t.p, t.lc
    if manual is not None:
        if lc:
            p.status["loopCanary"] = None
            p.status["canaryStartTime"] = None
            t.analysis_st = {"decision": SUPERSEDED, "modelVersion": lc.get("modelVersion")}
            t.finish(
                SUPERSEDED,
                f"spec.canary ({manual.model_version}) replaced the loop's canary",
                {},
                source="manual",
            )
            t.cond = Condition(
                COND_CANARY_ANALYSIS,
                "False",
                MANUAL_OVERRIDE,
                f"spec.canary ({manual.model_version}) overrides the loop's canary"
                f" {lc.get('modelVersion')}",
            )
            p.events.append(
                Event(
                    "Normal",
                    MANUAL_OVERRIDE,
                    f"spec.canary replaced canary {lc.get('modelVersion')}",
                )
            )
            t.lc = {}
        if manual.analysis is not None:
            t.canary = manual
    elif lc:
        t.canary = loop_canary(t.obs.spec, {"loopCanary": lc})
        t.loop_owned = True


def _judge(t: _Tick, canary: api.CanarySpec, analysis: api.AnalysisSpec) -> None:
    """The analysed canary's next state, from what the status and the registry say."""
    obs, p = t.obs, t.p
    mv = canary.model_version
    # A new canary version restarts the analysis.
    started = parse_time(obs.status.get("canaryStartTime"))
    if t.analysis_st.get("modelVersion") != mv:
        t.analysis_st = {"decision": PENDING, "modelVersion": mv}
        started = None
        p.status["canaryStartTime"] = None
    alias_ref = t.alias_ref
    holder = _alias_holder(obs.model_versions, obs.model or "", alias_ref) if alias_ref else None
    if obs.serving == mv or (alias_ref is not None and holder == mv):
        _promoted(t, mv)
    elif t.loop_owned and obs.rollback_request == mv:
        _rolled_back_on_request(t, mv)
    elif t.analysis_st.get("decision") == PROMOTE and alias_ref is not None:
        _promoting(t, mv, alias_ref)
    elif t.analysis_st.get("decision") == PROMOTE and t.loop_owned:
        _promotion_required(t, mv)
    else:
        _analyse(t, analysis, mv, started)


def _promoted(t: _Tick, mv: str) -> None:
    """Promotion done (alias confirmed on the canary, or the service now names it): drop
    the canary; the InferenceService controller keeps its pods until the stable
    Deployment has rolled out to this version."""
    p = t.p
    if t.loop_owned:
        p.status["loopCanary"] = None
    else:
        p.spec_patch = {"spec": {"canary": None}}
    msg = (
        (t.analysis_st.get("message") or f"canary {mv} promoted")
        if t.analysis_st.get("decision") == PROMOTE
        else f"canary {mv} promoted"
    )
    if t.analysis_st.get("decision") != PROMOTE:
        t.finish(PROMOTE, msg, {}, source="manual")
    t.cond = Condition(COND_CANARY_ANALYSIS, "True", PROMOTED, f"{mv} promoted: {msg}"[:1024])
    p.events.append(Event("Normal", PROMOTED, f"Canary {mv} promoted to stable"))


def _rolled_back_on_request(t: _Tick, mv: str) -> None:
    """`kubectl kubeloop rollback`: the annotation names this canary. Spec-side intent (an
    editor may set it); the loop, which owns the status, acts on it."""
    msg = f"rolled back on request ({api.ANNOTATION_ROLLBACK}={mv})"
    t.finish(ROLLBACK, msg, {}, source="manual")
    t.p.status["loopCanary"] = None
    t.cond = Condition(COND_CANARY_ANALYSIS, "False", ROLLED_BACK, f"canary {mv} {msg}")
    t.p.events.append(Event("Normal", ROLLED_BACK, f"Canary {mv} {msg}"))


def _promoting(t: _Tick, mv: str, alias_ref: str) -> None:
    """Promotion under way: keep asking for the alias until it is confirmed."""
    if not _requested(t.obs.model_versions, mv, alias_ref):
        t.p.alias_move = (mv, alias_ref)
    t.cond = Condition(
        COND_CANARY_ANALYSIS,
        "True",
        PROMOTING,
        f"moving alias {alias_ref!r} to {mv}: {t.analysis_st.get('message', '')}"[:1024],
    )


def _promotion_required(t: _Tick, mv: str) -> None:
    """The loop's canary passed, but the service pins a version: a person promotes it."""
    name = t.obs.owner.name
    t.cond = Condition(
        COND_CANARY_ANALYSIS,
        "True",
        PROMOTION_REQUIRED,
        f"canary {mv} passed ({t.analysis_st.get('message', '')}); the service pins"
        f" spec.model.modelVersion, so promote it with `kubectl kubeloop promote"
        f" {name}` or roll it back with `kubectl kubeloop rollback"
        f" {name}`"[:1024],
    )


def _analyse(t: _Tick, analysis: api.AnalysisSpec, mv: str, started: dt.datetime | None) -> None:
    """Judge the canary's numbers, and act on the verdict."""
    obs, p, now = t.obs, t.p, t.now
    if started is None and _canary_ready(obs.status, mv):
        started = now
        p.status["canaryStartTime"] = format_time(now)
    verdict = analyse(analysis, obs.canary_stats, started, now)
    if verdict.decision == "Pending":
        p.status["analysis"] = {
            "decision": PENDING,
            "modelVersion": mv,
            "message": verdict.message,
            "time": format_time(now),
            "metrics": verdict.metrics,
        }
        if t.cond is None:
            t.cond = Condition(
                COND_CANARY_ANALYSIS,
                "Unknown",
                ANALYZING,
                f"canary {mv}: {verdict.message}",
            )
    elif verdict.decision == "Promote":
        _passed(t, mv, verdict)
    else:
        t.finish(ROLLBACK, verdict.message, verdict.metrics)
        if t.loop_owned:
            p.status["loopCanary"] = None
        else:
            p.spec_patch = {"spec": {"canary": None}}
        t.cond = Condition(
            COND_CANARY_ANALYSIS,
            "False",
            ROLLED_BACK,
            f"canary {mv} rolled back ({verdict.reason}): {verdict.message}"[:1024],
        )
        p.events.append(
            Event("Warning", ROLLED_BACK, f"Canary {mv} rolled back: {verdict.message}")
        )


def _passed(t: _Tick, mv: str, verdict: Verdict) -> None:
    """The analysis passed: move the alias, ask a person, or promote a pinned service's
    manual canary (the user asked for automatic promotion by setting its analysis)."""
    p = t.p
    t.analysis_st = {"decision": PROMOTE, "modelVersion": mv, "message": verdict.message}
    t.finish(PROMOTE, verdict.message, verdict.metrics)
    p.events.append(Event("Normal", "AnalysisPassed", f"Canary {mv}: {verdict.message}"))
    if t.alias_ref is not None:
        p.alias_move = (mv, t.alias_ref)
        t.cond = Condition(
            COND_CANARY_ANALYSIS,
            "True",
            PROMOTING,
            f"moving alias {t.alias_ref!r} to {mv}: {verdict.message}"[:1024],
        )
    elif t.loop_owned:
        t.cond = Condition(
            COND_CANARY_ANALYSIS,
            "True",
            PROMOTION_REQUIRED,
            f"canary {mv} passed ({verdict.message}); the service pins"
            " spec.model.modelVersion, so promote it with `kubectl kubeloop"
            f" promote {t.obs.owner.name}`"[:1024],
        )
    else:
        p.spec_patch = {"spec": {"model": {"modelVersion": mv}, "canary": None}}
        t.cond = Condition(
            COND_CANARY_ANALYSIS, "True", PROMOTED, f"{mv} promoted: {verdict.message}"
        )
