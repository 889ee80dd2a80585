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

The status fields written here (``lastRetrain``, ``activeRetrains``, ``loopCanary``,
``canaryStartTime``, ``analysis``, ``retrainRequestHandled`` and the ``Retraining`` /
``CanaryAnalysis`` conditions) are the loop's own; the InferenceService controller owns the
rest and reads ``loopCanary`` through :func:`loop_canary`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from kubeloop import cron, registry
from kubeloop.conditions import MESSAGE_MAX, Condition, get_condition
from kubeloop_runtime import api, rfc3339

Obj = Mapping[str, Any]

COND_RETRAINING = "Retraining"
COND_CANARY_ANALYSIS = "CanaryAnalysis"

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
GATE_FAILED = "QualityGateFailed"

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

RETRAIN_INFIX = "-retrain-"
MAX_NAME = 63


# ----------------------------------------------------------------------------- time


parse_time = rfc3339.parse_time
format_time = rfc3339.format_time


# ----------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class Signals:
    """What the stable pods' ``/monitoring`` endpoints say, aggregated over the pods."""

    pods: int = 0  # pods that answered
    drift: bool | None = None  # None: no pod has enough data in its window
    drift_share: float | None = None
    drifted_features: tuple[str, ...] = ()
    accuracy: float | None = None  # labelled-count-weighted mean (classification)
    accuracy_count: int = 0
    live_error: float | None = None  # rmse, labelled-count-weighted (regression)


@dataclass(frozen=True)
class CanaryStats:
    """Request counts and latency of the canary pods since they started, plus accuracy."""

    pods: int = 0
    requests: float = 0.0
    errors: float = 0.0  # HTTP 5xx: 4xx are the client's fault and do not count
    p99_latency: float | None = None
    accuracy: float | None = None
    accuracy_count: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0


@dataclass(frozen=True)
class Retrain:
    """One TrainingJob the loop started for this service."""

    name: str
    index: int
    created: dt.datetime | None
    trigger: api.TriggerRef | None
    finished: bool
    succeeded: bool
    reason: str
    message: str
    model_version: str | None

    @property
    def started(self) -> dt.datetime | None:
        """When the run was triggered (trigger.time, else the object's creation)."""
        return parse_time(self.trigger.time if self.trigger else None) or self.created


def retrain_index(isvc: str, name: str) -> int:
    """``n`` of ``<isvc>-retrain-<n>`` (also of a hashed long name); 0 when not ours."""
    m = re.search(r"-retrain-(\d+)$", name)
    if m is None:
        return 0
    return int(m.group(1)) if name.startswith(retrain_prefix(isvc)) else 0


def retrain_prefix(isvc: str) -> str:
    """The name prefix of this service's retraining runs (hashed when the name is long)."""
    prefix = f"{isvc}{RETRAIN_INFIX}"
    # Room for a 4-digit counter and the Job suffix "-train" (the Job is named after it).
    if len(prefix) + 4 + len("-train") <= MAX_NAME:
        return prefix
    digest = hashlib.sha256(isvc.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(RETRAIN_INFIX) - len(digest) - 1 - 4 - len("-train")
    return f"{isvc[:keep].rstrip('-')}-{digest}{RETRAIN_INFIX}"


def retrain_name(isvc: str, index: int) -> str:
    return f"{retrain_prefix(isvc)}{index}"


def retrain_from(isvc: str, tj: Obj) -> Retrain:
    """Read one TrainingJob (as the API server returns it) into a :class:`Retrain`."""
    meta = tj.get("metadata") or {}
    spec = tj.get("spec") or {}
    status = tj.get("status") or {}
    name = str(meta.get("name", ""))
    trigger: api.TriggerRef | None = None
    if isinstance(spec.get("trigger"), Mapping):
        try:
            trigger = api.TriggerRef.model_validate(spec["trigger"])
        except ValidationError:
            trigger = None
    cond = get_condition(status.get("conditions"), api.COND_SUCCEEDED) or {}
    finished = cond.get("status") in ("True", "False")
    return Retrain(
        name=name,
        index=retrain_index(isvc, name),
        created=parse_time(meta.get("creationTimestamp")),
        trigger=trigger,
        finished=finished,
        succeeded=cond.get("status") == "True",
        reason=str(cond.get("reason") or status.get("reason") or ""),
        message=str(cond.get("message") or status.get("message") or ""),
        model_version=status.get("modelVersion") or None,
    )


# ----------------------------------------------------------------------------- triggers


@dataclass(frozen=True)
class Fired:
    """A trigger that fired: the signal, its value as text, and a human sentence."""

    signal: Literal["drift", "accuracy", "error", "schedule", "manual", "data"]
    value: str
    message: str


def dataset_baseline(status: Obj, runs: Sequence[Retrain]) -> str | None:
    """The dataset version the service was last retrained on (or first saw).

    ``status.datasetVersion``, unless the newest run was started for a dataset version
    (its trigger value): a crash between creating that run and writing the status must
    not start a second run for the same data.
    """
    newest = max(runs, key=lambda r: r.index, default=None)
    if newest is not None and newest.trigger is not None and newest.trigger.signal == "data":
        return newest.trigger.value
    recorded = status.get("datasetVersion")
    return recorded if isinstance(recorded, str) and recorded else None


def dataset_change(
    retraining: api.RetrainingSpec, version: str | None, baseline: str | None
) -> Fired | None:
    """The ``data`` trigger: the observed version differs from the baseline."""
    if not retraining.triggers.data_changed or not version or not baseline:
        return None
    if version == baseline:
        return None
    ds = retraining.template.dataset
    source = ds.uri or ds.url or (ds.config_map.name if ds.config_map else "dataset")
    return Fired(
        "data",
        version[:256],
        f"dataset {source} changed (version {version[:19]}, trained on {baseline[:19]})",
    )


def _num(v: float) -> str:
    return f"{v:.4g}"


def fired_triggers(
    retraining: api.RetrainingSpec,
    *,
    signals: Signals | None,
    annotation: str | None,
    handled_annotation: bool,
    schedule_since: dt.datetime,
    now: dt.datetime,
    data: Fired | None = None,
) -> list[Fired]:
    """Every trigger that fires now, manual first (the order decides which one is named)."""
    out: list[Fired] = []
    t = retraining.triggers
    if annotation and not handled_annotation:
        out.append(Fired("manual", annotation[:256], f"retraining requested ({annotation!r})"))
    if data is not None:
        out.append(data)
    if signals is not None:
        if t.drift and signals.drift:
            share = signals.drift_share if signals.drift_share is not None else 0.0
            feats = ", ".join(signals.drifted_features[:8])
            out.append(
                Fired(
                    "drift",
                    _num(share),
                    f"dataset drift detected: share of drifted features {_num(share)}"
                    + (f" ({feats})" if feats else ""),
                )
            )
        if (
            t.accuracy_below is not None
            and signals.accuracy is not None
            and signals.accuracy < t.accuracy_below
        ):
            out.append(
                Fired(
                    "accuracy",
                    _num(signals.accuracy),
                    f"live accuracy {_num(signals.accuracy)} < accuracyBelow"
                    f" {_num(t.accuracy_below)} over {signals.accuracy_count} labelled predictions",
                )
            )
        if (
            t.error_above is not None
            and signals.live_error is not None
            and signals.live_error > t.error_above
        ):
            out.append(
                Fired(
                    "error",
                    _num(signals.live_error),
                    f"live error (rmse) {_num(signals.live_error)} > errorAbove"
                    f" {_num(t.error_above)} over {signals.accuracy_count} labelled predictions",
                )
            )
    if t.schedule:
        try:
            fire = cron.parse(t.schedule).due(schedule_since, now)
        except cron.CronError:
            fire = None  # reported by validate_retraining
        if fire is not None:
            out.append(
                Fired(
                    "schedule",
                    format_time(fire),
                    f"scheduled ({t.schedule}) at {format_time(fire)}",
                )
            )
    return out


def validate_retraining(retraining: api.RetrainingSpec) -> str | None:
    """What admission cannot check: the cron schedule, a dataset version to watch.
    Returns a message naming the field."""
    ds = retraining.template.dataset
    if (
        retraining.triggers.data_changed
        and ds.uri is None
        and ds.url is None
        and ds.config_map is None
    ):
        return (
            "spec.retraining.triggers.dataChanged: the template's dataset has no version to"
            " watch; use dataset.uri, dataset.url or dataset.configMap"
        )
    if retraining.triggers.schedule:
        try:
            cron.parse(retraining.triggers.schedule).next_after(
                dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
            )
        except cron.CronError as e:
            return f"spec.retraining.triggers.schedule: {e}"
    return None


def last_retrain_time(status: Obj, runs: Sequence[Retrain]) -> dt.datetime | None:
    """When the latest retraining started: the newest run, or status.lastRetrain.time."""
    times = [r.started for r in runs if r.started is not None]
    recorded = parse_time((status.get("lastRetrain") or {}).get("time"))
    if recorded is not None:
        times.append(recorded)
    return max(times) if times else None


def cooldown_until(
    retraining: api.RetrainingSpec, status: Obj, runs: Sequence[Retrain]
) -> dt.datetime | None:
    last = last_retrain_time(status, runs)
    if last is None or retraining.cooldown_seconds <= 0:
        return None
    return last + dt.timedelta(seconds=retraining.cooldown_seconds)


def annotation_handled(value: str | None, status: Obj, runs: Sequence[Retrain]) -> bool:
    """A manual request is handled once a run carries it, or the status records it."""
    if not value:
        return True
    if status.get("retrainRequestHandled") == value:
        return True
    return any(
        r.trigger is not None and r.trigger.signal == "manual" and r.trigger.value == value[:256]
        for r in runs
    )


@dataclass(frozen=True)
class TriggerDecision:
    fire: Fired | None  # start a run for this
    fired: list[Fired]  # everything that fired (for messages)
    blocked: str | None  # why nothing starts although something fired


def decide_trigger(
    retraining: api.RetrainingSpec,
    *,
    status: Obj,
    runs: Sequence[Retrain],
    signals: Signals | None,
    annotation: str | None,
    created: dt.datetime,
    canary_in_flight: bool,
    now: dt.datetime,
    dataset_version: str | None = None,
) -> TriggerDecision:
    """Whether to start a retraining now, and for which signal.

    Rules: at most ``maxConcurrent`` runs at a time; none while a challenger is being
    analysed as a canary; signal triggers (drift, accuracy, error, schedule) respect the
    cooldown after the last run; a manual request skips the cooldown (a person asked) but
    not the other two, and stays pending until they allow it.
    """
    handled = annotation_handled(annotation, status, runs)
    since = last_retrain_time(status, runs) or created
    fired = fired_triggers(
        retraining,
        signals=signals,
        annotation=annotation,
        handled_annotation=handled,
        schedule_since=max(since, created),
        now=now,
        data=dataset_change(retraining, dataset_version, dataset_baseline(status, runs)),
    )
    if not retraining.enabled or not fired:
        return TriggerDecision(None, fired, None if not fired else "retraining is disabled")
    active = [r for r in runs if not r.finished]
    if len(active) >= retraining.max_concurrent:
        return TriggerDecision(
            None,
            fired,
            f"{len(active)} retraining run(s) active (maxConcurrent {retraining.max_concurrent})",
        )
    if canary_in_flight:
        return TriggerDecision(None, fired, "a canary is being analysed")
    manual = [f for f in fired if f.signal == "manual"]
    if manual:
        return TriggerDecision(manual[0], fired, None)
    until = cooldown_until(retraining, status, runs)
    if until is not None and now < until:
        return TriggerDecision(None, fired, f"cooldown active until {format_time(until)}")
    return TriggerDecision(fired[0], fired, None)


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str


def default_champion_metric(task: api.Task) -> str:
    return "accuracy" if task is api.Task.CLASSIFICATION else "rmse"


def _validation(
    validation: api.ValidationSpec | None, serving: str | None
) -> api.ValidationSpec | None:
    if validation is None or validation.reference is not None:
        return validation
    if serving is None:
        return None  # nothing serves yet: nothing to validate against
    return validation.model_copy(update={"reference": serving})


def build_trainingjob(
    owner: Owner,
    retraining: api.RetrainingSpec,
    *,
    name: str,
    model: str,
    fired: Fired,
    champion: str | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The TrainingJob of one retraining run: the template, the model, trigger, champion.

    Owned by the InferenceService (listed and garbage-collected with it; not as controller,
    the TrainingJob controller reconciles it). The ModelVersion it registers has no owner.
    """
    tpl = retraining.template
    gate = retraining.champion_gate
    trigger = api.TriggerRef(
        inference_service=owner.name,
        signal=fired.signal,
        value=fired.value[:256],
        time=format_time(now),
    )
    spec = api.TrainingJobSpec(
        model=model,
        dataset=tpl.dataset,
        estimator=tpl.estimator,
        preprocessing=tpl.preprocessing,
        evaluation=tpl.evaluation,
        quality_gate=tpl.quality_gate,
        artifact=tpl.artifact,
        run_policy=tpl.run_policy,
        resources=tpl.resources,
        image=tpl.image,
        storage=tpl.storage,
        trigger=trigger,
        champion=champion if gate.enabled else None,
        champion_gate=gate if gate.enabled and champion else None,
        # Validate against the version serving now unless the template names another.
        validation=_validation(tpl.validation, champion),
    )
    return {
        "apiVersion": api.API_VERSION,
        "kind": "TrainingJob",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": {
                api.LABEL_INFERENCESERVICE: owner.name,
                api.LABEL_MODEL: model,
                api.LABEL_MANAGED_BY: api.MANAGED_BY,
                api.LABEL_PART_OF: "kubeloop",
            },
            "annotations": {
                api.ANNOTATION_TRIGGER: trigger.model_dump_json(by_alias=True, exclude_none=True)
            },
            "ownerReferences": [
                {
                    "apiVersion": api.API_VERSION,
                    "kind": "InferenceService",
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": spec.wire(),
    }


# ----------------------------------------------------------------------------- canary analysis


@dataclass(frozen=True)
class Verdict:
    decision: Literal["Pending", "Promote", "Rollback"]
    reason: str  # Rollback: error_rate | latency | accuracy; else ""
    message: str
    metrics: dict[str, float]


def analyse(
    analysis: api.AnalysisSpec,
    stats: CanaryStats | None,
    started: dt.datetime | None,
    now: dt.datetime,
) -> Verdict:
    """Promote, roll back, or wait: the canary's numbers against ``analysis``.

    Judged once the window has passed AND at least ``minRequests`` requests reached the
    canary (until then: Pending). Error rate counts 5xx only. p99 latency and live accuracy
    are checked when their limits are set and there is data (accuracy needs labels).
    """
    if started is None:
        return Verdict("Pending", "", "waiting for the canary pods to be ready", {})
    elapsed = max(0.0, (now - started).total_seconds())
    metrics: dict[str, float] = {"elapsedSeconds": round(elapsed, 1)}
    if stats is None or stats.pods == 0:
        return Verdict("Pending", "", "no canary pod answered with metrics yet", metrics)
    metrics["requests"] = stats.requests
    metrics["errorRate"] = round(stats.error_rate, 6)
    if stats.p99_latency is not None:
        metrics["p99LatencySeconds"] = round(stats.p99_latency, 6)
    if stats.accuracy is not None:
        metrics["accuracy"] = round(stats.accuracy, 6)
        metrics["labelled"] = float(stats.accuracy_count)
    if elapsed < analysis.window_seconds:
        return Verdict(
            "Pending",
            "",
            f"analysing: {elapsed:.0f}s of {analysis.window_seconds}s,"
            f" {stats.requests:.0f} requests",
            metrics,
        )
    if stats.requests < analysis.min_requests:
        return Verdict(
            "Pending",
            "",
            f"waiting for traffic: {stats.requests:.0f} of {analysis.min_requests} requests"
            " reached the canary",
            metrics,
        )
    failures: list[tuple[str, str]] = []
    if stats.error_rate > analysis.max_error_rate:
        failures.append(
            (
                "error_rate",
                f"error rate {stats.error_rate:.4g} > maxErrorRate {analysis.max_error_rate:g}"
                f" ({stats.errors:.0f} of {stats.requests:.0f} requests failed with 5xx)",
            )
        )
    limit = analysis.max_p99_latency_seconds
    if limit is not None and stats.p99_latency is not None and stats.p99_latency > limit:
        failures.append(
            ("latency", f"p99 latency {stats.p99_latency:.4g}s > maxP99LatencySeconds {limit:g}")
        )
    if (
        analysis.min_accuracy is not None
        and stats.accuracy is not None
        and stats.accuracy < analysis.min_accuracy
    ):
        failures.append(
            (
                "accuracy",
                f"live accuracy {stats.accuracy:.4g} < minAccuracy {analysis.min_accuracy:g}"
                f" over {stats.accuracy_count} labelled predictions",
            )
        )
    if failures:
        return Verdict("Rollback", failures[0][0], "; ".join(m for _, m in failures), metrics)
    parts = [f"error rate {stats.error_rate:.4g} <= {analysis.max_error_rate:g}"]
    if limit is not None and stats.p99_latency is not None:
        parts.append(f"p99 {stats.p99_latency:.4g}s <= {limit:g}s")
    if analysis.min_accuracy is not None:
        parts.append(
            f"accuracy {stats.accuracy:.4g} >= {analysis.min_accuracy:g}"
            if stats.accuracy is not None
            else "no labels for accuracy"
        )
    return Verdict(
        "Promote",
        "",
        f"passed after {elapsed:.0f}s and {stats.requests:.0f} requests: " + ", ".join(parts),
        metrics,
    )


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


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """Everything one tick of the loop looks at."""

    owner: Owner
    created: dt.datetime
    spec: api.InferenceServiceSpec
    status: Obj
    annotation: str | None
    runs: Sequence[Retrain]
    model_versions: Sequence[Obj]
    serving: str | None  # the ModelVersion the service resolves to now (the champion)
    model: str | None  # the served model's name
    task: api.Task | None
    signals: Signals | None
    canary_stats: CanaryStats | None
    # The kubeloop.io/rollback annotation: the loop canary a user asked to roll back.
    rollback_request: str | None = None
    # The template dataset's version as the operator read it (None: not watched, unknown).
    dataset_version: str | None = None


@dataclass
class Plan:
    status: dict[str, Any] = field(default_factory=dict)  # loop-owned fields (None removes)
    conditions: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    create: dict[str, Any] | None = None  # a TrainingJob to create
    retrain_signal: str | None = None  # for kubeloop_retrains_total
    alias_move: tuple[str, str] | None = None  # (ModelVersion, alias): ask for the alias
    spec_patch: dict[str, Any] | None = None  # a manual canary's promotion/rollback
    log: list[str] = field(default_factory=list)


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


def _condition_changed(old: Obj, c: Condition) -> bool:
    """Whether ``c`` differs from the stored condition, which holds the message cut to
    MESSAGE_MAX (so a long message seen again is no change, and posts no second Event)."""
    prev = get_condition(old.get("conditions"), c.type)
    return prev is None or (prev.get("status"), prev.get("reason"), prev.get("message")) != (
        c.status,
        c.reason,
        c.message[:MESSAGE_MAX],
    )


def _canary_ready(status: Obj, version: str) -> bool:
    ready = get_condition(status.get("conditions"), "CanaryReady")
    return (
        status.get("canaryVersion") == version
        and ready is not None
        and ready.get("status") == "True"
    )


def plan(obs: Observed, now: dt.datetime) -> Plan:
    """One tick of the loop: what to write, create, move and say."""
    p = Plan()
    st = obs.status
    spec = obs.spec
    retraining = spec.retraining
    runs = sorted(obs.runs, key=lambda r: (r.index, r.started or now))
    latest = runs[-1] if runs else None
    active = [r.name for r in runs if not r.finished]

    # --- bookkeeping of runs (adopts a run created just before a crash) -------------
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

    # --- the Retraining condition from the newest run -------------------------------
    retraining_cond: Condition | None = None
    if latest is not None and not latest.finished:
        signal = latest.trigger.signal if latest.trigger else "manual"
        retraining_cond = Condition(
            COND_RETRAINING,
            "True",
            REASON_BY_SIGNAL.get(signal, "Manual"),
            f"TrainingJob {latest.name} is running ({signal}"
            + (f" {latest.trigger.value}" if latest.trigger and latest.trigger.value else "")
            + ")",
        )
    elif latest is not None and latest.succeeded:
        retraining_cond = Condition(
            COND_RETRAINING,
            "False",
            CHALLENGER_ACCEPTED,
            f"TrainingJob {latest.name} registered {latest.model_version}, which passed its"
            " quality gate against the champion",
        )
    elif latest is not None:
        rejected = latest.reason == GATE_FAILED
        retraining_cond = Condition(
            COND_RETRAINING,
            "False",
            CHALLENGER_REJECTED if rejected else TRAINING_FAILED,
            f"TrainingJob {latest.name}: {latest.message or latest.reason}"
            + ("; the serving version stays" if rejected else ""),
        )
    elif retraining is not None:
        retraining_cond = Condition(
            COND_RETRAINING, "False", WATCHING, "no retraining run yet; watching the triggers"
        )

    # --- canary: the loop's own, or a manual one with analysis ----------------------
    lc = dict(st.get("loopCanary") or {})
    analysis_st = dict(st.get("analysis") or {})
    canary_cond: Condition | None = None
    manual = spec.canary
    alias_ref = spec.model.alias if spec.model.model_version is None else None

    def finish_canary(
        decision: str, message: str, metrics: Mapping[str, float], source: str = "analysis"
    ) -> None:
        # source: who decided, the analysis of the canary's metrics or a person ("manual").
        p.status["analysis"] = {
            "decision": decision,
            "modelVersion": analysis_st.get("modelVersion") or lc.get("modelVersion"),
            "message": message[:1024],
            "time": format_time(now),
            "metrics": dict(metrics),
            "source": source,
        }

    # Start the loop's canary for a new accepted challenger.
    if (
        retraining is not None
        and latest is not None
        and latest.succeeded
        and latest.model_version
        and not lc
        and analysis_st.get("modelVersion") != latest.model_version
        and obs.serving != latest.model_version
    ):
        mv = latest.model_version
        if manual is not None:
            p.status["analysis"] = {
                "decision": SUPERSEDED,
                "modelVersion": mv,
                "message": f"a manual canary ({manual.model_version}) is running; challenger"
                f" {mv} is not canaried",
                "time": format_time(now),
            }
            canary_cond = Condition(
                COND_CANARY_ANALYSIS,
                "False",
                MANUAL_OVERRIDE,
                f"spec.canary ({manual.model_version}) overrides the loop; {mv} not canaried",
            )
        else:
            lc = {
                "modelVersion": mv,
                "trafficPercent": retraining.canary_traffic_percent,
                "trainingJob": latest.name,
            }
            p.status["loopCanary"] = lc
            p.status["canaryStartTime"] = None
            analysis_st = {"decision": PENDING, "modelVersion": mv}
            p.status["analysis"] = {
                "decision": PENDING,
                "modelVersion": mv,
                "message": "waiting for the canary pods to be ready",
                "time": format_time(now),
                "metrics": {},
            }
            canary_cond = Condition(
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

    canary: api.CanarySpec | None = None
    loop_owned = False
    if manual is not None:
        if lc:
            p.status["loopCanary"] = None
            p.status["canaryStartTime"] = None
            analysis_st = {"decision": SUPERSEDED, "modelVersion": lc.get("modelVersion")}
            finish_canary(
                SUPERSEDED,
                f"spec.canary ({manual.model_version}) replaced the loop's canary",
                {},
                source="manual",
            )
            canary_cond = Condition(
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
            lc = {}
        if manual.analysis is not None:
            canary = manual
    elif lc:
        canary = loop_canary(spec, {"loopCanary": lc})
        loop_owned = True

    if canary is not None and canary.analysis is not None:
        mv = canary.model_version
        # A new canary version restarts the analysis.
        started = parse_time(st.get("canaryStartTime"))
        if analysis_st.get("modelVersion") != mv:
            analysis_st = {"decision": PENDING, "modelVersion": mv}
            started = None
            p.status["canaryStartTime"] = None
        holder = (
            _alias_holder(obs.model_versions, obs.model or "", alias_ref) if alias_ref else None
        )
        if obs.serving == mv or (alias_ref is not None and holder == mv):
            # Promotion done (alias confirmed on the canary, or the service now names it):
            # drop the canary; the InferenceService controller keeps its pods until the
            # stable Deployment has rolled out to this version.
            if loop_owned:
                p.status["loopCanary"] = None
            else:
                p.spec_patch = {"spec": {"canary": None}}
            msg = (
                (analysis_st.get("message") or f"canary {mv} promoted")
                if analysis_st.get("decision") == PROMOTE
                else f"canary {mv} promoted"
            )
            if analysis_st.get("decision") != PROMOTE:
                finish_canary(PROMOTE, msg, {}, source="manual")
            canary_cond = Condition(
                COND_CANARY_ANALYSIS, "True", PROMOTED, f"{mv} promoted: {msg}"[:1024]
            )
            p.events.append(Event("Normal", PROMOTED, f"Canary {mv} promoted to stable"))
        elif loop_owned and obs.rollback_request == mv:
            # `kubectl kubeloop rollback`: the annotation names this canary. Spec-side
            # intent (an editor may set it); the loop, which owns the status, acts on it.
            msg = f"rolled back on request ({api.ANNOTATION_ROLLBACK}={mv})"
            finish_canary(ROLLBACK, msg, {}, source="manual")
            p.status["loopCanary"] = None
            canary_cond = Condition(
                COND_CANARY_ANALYSIS, "False", ROLLED_BACK, f"canary {mv} {msg}"
            )
            p.events.append(Event("Normal", ROLLED_BACK, f"Canary {mv} {msg}"))
        elif analysis_st.get("decision") == PROMOTE and alias_ref is not None:
            # Promotion under way: keep asking for the alias until it is confirmed.
            if not _requested(obs.model_versions, mv, alias_ref):
                p.alias_move = (mv, alias_ref)
            canary_cond = Condition(
                COND_CANARY_ANALYSIS,
                "True",
                PROMOTING,
                f"moving alias {alias_ref!r} to {mv}: {analysis_st.get('message', '')}"[:1024],
            )
        elif analysis_st.get("decision") == PROMOTE and loop_owned:
            canary_cond = Condition(
                COND_CANARY_ANALYSIS,
                "True",
                PROMOTION_REQUIRED,
                f"canary {mv} passed ({analysis_st.get('message', '')}); the service pins"
                f" spec.model.modelVersion, so promote it with `kubectl kubeloop promote"
                f" {obs.owner.name}` or roll it back with `kubectl kubeloop rollback"
                f" {obs.owner.name}`"[:1024],
            )
        else:
            if started is None and _canary_ready(st, mv):
                started = now
                p.status["canaryStartTime"] = format_time(now)
            verdict = analyse(canary.analysis, obs.canary_stats, started, now)
            if verdict.decision == "Pending":
                p.status["analysis"] = {
                    "decision": PENDING,
                    "modelVersion": mv,
                    "message": verdict.message,
                    "time": format_time(now),
                    "metrics": verdict.metrics,
                }
                if canary_cond is None:
                    canary_cond = Condition(
                        COND_CANARY_ANALYSIS,
                        "Unknown",
                        ANALYZING,
                        f"canary {mv}: {verdict.message}",
                    )
            elif verdict.decision == "Promote":
                analysis_st = {"decision": PROMOTE, "modelVersion": mv, "message": verdict.message}
                finish_canary(PROMOTE, verdict.message, verdict.metrics)
                p.events.append(
                    Event("Normal", "AnalysisPassed", f"Canary {mv}: {verdict.message}")
                )
                if alias_ref is not None:
                    p.alias_move = (mv, alias_ref)
                    canary_cond = Condition(
                        COND_CANARY_ANALYSIS,
                        "True",
                        PROMOTING,
                        f"moving alias {alias_ref!r} to {mv}: {verdict.message}"[:1024],
                    )
                elif loop_owned:
                    canary_cond = Condition(
                        COND_CANARY_ANALYSIS,
                        "True",
                        PROMOTION_REQUIRED,
                        f"canary {mv} passed ({verdict.message}); the service pins"
                        " spec.model.modelVersion, so promote it with `kubectl kubeloop"
                        f" promote {obs.owner.name}`"[:1024],
                    )
                else:
                    # A manual canary on a pinned service: the user asked for automatic
                    # promotion by setting spec.canary.analysis.
                    p.spec_patch = {"spec": {"model": {"modelVersion": mv}, "canary": None}}
                    canary_cond = Condition(
                        COND_CANARY_ANALYSIS, "True", PROMOTED, f"{mv} promoted: {verdict.message}"
                    )
            else:
                finish_canary(ROLLBACK, verdict.message, verdict.metrics)
                if loop_owned:
                    p.status["loopCanary"] = None
                else:
                    p.spec_patch = {"spec": {"canary": None}}
                canary_cond = Condition(
                    COND_CANARY_ANALYSIS,
                    "False",
                    ROLLED_BACK,
                    f"canary {mv} rolled back ({verdict.reason}): {verdict.message}"[:1024],
                )
                p.events.append(
                    Event("Warning", ROLLED_BACK, f"Canary {mv} rolled back: {verdict.message}")
                )
    # No new run while a canary (the loop's or a manual one) is up.
    lc_after = p.status.get("loopCanary", lc)
    canary_in_flight = manual is not None or bool(lc_after)

    # --- triggers --------------------------------------------------------------------
    if retraining is not None:
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
            index = (
                max(
                    [r.index for r in runs]
                    + [retrain_index(obs.owner.name, str(recorded.get("trainingJob") or ""))]
                )
                + 1
            )
            name = retrain_name(obs.owner.name, index)
            f = decision.fire
            p.create = build_trainingjob(
                obs.owner,
                retraining,
                name=name,
                model=obs.model,
                fired=f,
                champion=obs.serving,
                now=now,
            )
            p.retrain_signal = f.signal
            p.status["lastRetrain"] = {
                "time": format_time(now),
                "trainingJob": name,
                "signal": f.signal,
                "value": f.value,
            }
            p.status["activeRetrains"] = [*active, name]
            if f.signal == "manual":
                p.status["retrainRequestHandled"] = f.value
            if obs.dataset_version:  # every run trains on the data as it is now
                p.status["datasetVersion"] = obs.dataset_version
            retraining_cond = Condition(
                COND_RETRAINING,
                "True",
                REASON_BY_SIGNAL[f.signal],
                f"{f.message}; started TrainingJob {name}"[:1024],
            )
            p.events.append(
                Event("Normal", "RetrainingStarted", f"{f.message}; created TrainingJob {name}")
            )
        elif decision.fired and decision.blocked:
            p.log.append(
                "triggers fired ("
                + ", ".join(f.signal for f in decision.fired)
                + f") but no retraining starts: {decision.blocked}"
            )

    for c in (retraining_cond, canary_cond):
        if c is not None and _condition_changed(st, c):
            p.conditions.append(c)
            if (
                c is retraining_cond
                and c.status == "False"
                and c.reason
                in (
                    CHALLENGER_REJECTED,
                    TRAINING_FAILED,
                )
            ):
                p.events.append(Event("Warning", c.reason, c.message))
    return p
