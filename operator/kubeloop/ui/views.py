"""What each page shows, computed from the objects as the API server returns them: pure.

Every function takes plain dicts (ModelVersions, TrainingJobs, InferenceServices, Events)
and returns frozen dataclasses that :mod:`kubeloop.ui.render` turns into HTML. Nothing here
talks to the cluster, so each rule (which version replaced which, what goes on a timeline,
how drift reads) is unit-tested without one.

Size (~650 lines): one section per page's view models, over shared readers of the
objects; each page's rules are unit-tested on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubeloop import registry
from kubeloop.conditions import get_condition
from kubeloop.manifest import Obj
from kubeloop_runtime import api

# Metrics listed first on a model's page and offered first for its chart, when present.
PREFERRED_METRICS = ("accuracy", "f1", "roc_auc", "rmse", "mae", "r2")


def _meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: Obj) -> str:
    return str(_meta(obj).get("name") or "")


def _spec(obj: Obj) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Mapping[str, Any]:
    return obj.get("status") or {}


def _condition(obj: Obj, type_: str) -> tuple[str, str, str]:
    """(status, reason, message) of condition ``type_``; ("Unknown", "", "") when absent."""
    c = get_condition(_status(obj).get("conditions"), type_) or {}
    return (
        str(c.get("status") or "Unknown"),
        str(c.get("reason") or ""),
        str(c.get("message") or ""),
    )


# ----------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSummary:
    model: str
    versions: int
    latest: str
    latest_version: int
    aliases: tuple[tuple[str, str], ...]  # (alias, ModelVersion name)
    headline: tuple[str, float] | None  # the first preferred metric of the latest version


def models(mvs: Sequence[Obj]) -> list[ModelSummary]:
    """One row per model, by name."""
    by_model: dict[str, list[Obj]] = {}
    for mv in mvs:
        model = registry.model_of(mv)
        if model:
            by_model.setdefault(model, []).append(mv)
    out = []
    for model in sorted(by_model):
        mine = sorted(by_model[model], key=registry.version_of)
        latest = mine[-1]
        aliases = sorted(
            (alias, registry.name_of(mv)) for mv in mine for alias in registry.confirmed_aliases(mv)
        )
        metrics = _spec(latest).get("metrics") or {}
        key = next((k for k in PREFERRED_METRICS if k in metrics), None)
        out.append(
            ModelSummary(
                model=model,
                versions=len(mine),
                latest=registry.name_of(latest),
                latest_version=registry.version_of(latest),
                aliases=tuple(aliases),
                headline=(key, float(metrics[key])) if key else None,
            )
        )
    return out


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: int
    created: str
    ready: str  # condition status, or "GateFailed"
    ready_reason: str
    gate_passed: bool
    gate_message: str
    aliases: tuple[str, ...]  # confirmed (status.aliases)
    requested_aliases: tuple[str, ...]  # spec.aliases not yet confirmed
    metrics: Mapping[str, float]
    parameters: Mapping[str, str]
    dataset_sha256: str
    dataset_source: str
    dataset_rows: int | None
    libraries: Mapping[str, str]  # python, sklearn, numpy, pandas
    training_job: str
    trigger: str


def _trigger_text(trigger: Mapping[str, Any] | None) -> str:
    if not trigger:
        return ""
    text = str(trigger.get("signal") or "?")
    if trigger.get("value"):
        text += f"={trigger['value']}"
    if trigger.get("inferenceService"):
        text += f" on {trigger['inferenceService']}"
    return text


def version_row(mv: Obj) -> VersionRow:
    spec = _spec(mv)
    gate = spec.get("gate") or {}
    passed = bool(gate.get("passed", True))
    status, reason, _ = _condition(mv, api.COND_READY)
    confirmed = tuple(registry.confirmed_aliases(mv))
    dataset = spec.get("dataset") or {}
    framework = spec.get("framework") or {}
    lineage = spec.get("lineage") or {}
    metrics = {str(k): float(v) for k, v in (spec.get("metrics") or {}).items() if _number(v)}
    return VersionRow(
        name=registry.name_of(mv),
        version=registry.version_of(mv),
        created=str(_meta(mv).get("creationTimestamp") or ""),
        ready=status if passed else "GateFailed",
        ready_reason=reason,
        gate_passed=passed,
        gate_message=str(gate.get("message") or ""),
        aliases=confirmed,
        requested_aliases=tuple(a for a in spec.get("aliases") or [] if a not in confirmed),
        metrics=metrics,
        parameters={str(k): str(v) for k, v in (spec.get("parameters") or {}).items()},
        dataset_sha256=str(dataset.get("sha256") or ""),
        dataset_source=str(dataset.get("source") or ""),
        dataset_rows=dataset.get("rows") if isinstance(dataset.get("rows"), int) else None,
        libraries={
            k: str(framework[k]) for k in ("python", "sklearn", "numpy", "pandas") if k in framework
        },
        training_job=str(lineage.get("trainingJob") or ""),
        trigger=_trigger_text(lineage.get("trigger")),
    )


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True)
class ModelPage:
    model: str
    rows: tuple[VersionRow, ...]  # newest first
    metric_names: tuple[str, ...]  # union over versions, preferred first
    parameter_names: tuple[str, ...]
    chart_metric: str | None
    points: tuple[tuple[int, float], ...]  # (version, value) of chart_metric, oldest first


def metric_order(names: set[str]) -> tuple[str, ...]:
    return tuple(
        [m for m in PREFERRED_METRICS if m in names] + sorted(names - set(PREFERRED_METRICS))
    )


def model_page(mvs: Sequence[Obj], model: str, metric: str | None = None) -> ModelPage:
    """The versions of ``model`` side by side, and ``metric`` (default: the first preferred
    metric any version has) across them."""
    mine = [mv for mv in mvs if registry.model_of(mv) == model]
    rows = tuple(sorted((version_row(mv) for mv in mine), key=lambda r: r.version, reverse=True))
    metric_names = metric_order({k for r in rows for k in r.metrics})
    parameter_names = tuple(sorted({k for r in rows for k in r.parameters}))
    chart = metric if metric in metric_names else (metric_names[0] if metric_names else None)
    points = tuple(
        (r.version, r.metrics[chart]) for r in reversed(rows) if chart and chart in r.metrics
    )
    return ModelPage(model, rows, metric_names, parameter_names, chart, points)


def compare(rows: Sequence[VersionRow], names: Sequence[str]) -> list[VersionRow]:
    """The rows named in ``names``, in version order (a comparison's columns)."""
    wanted = set(names)
    return sorted((r for r in rows if r.name in wanted), key=lambda r: r.version)


# ----------------------------------------------------------------------------- lineage


@dataclass(frozen=True)
class Replacement:
    """A later version trained against this one as its champion, and what came of it."""

    model_version: str
    training_job: str
    why: str  # the trigger that started the run
    gate: str  # the champion gate's (or quality gate's) message
    promoted: bool  # the newer version holds an alias now


@dataclass(frozen=True)
class TrainingJobView:
    name: str
    succeeded: str  # the Succeeded condition's status
    reason: str
    message: str
    estimator: str
    champion: str
    started: str
    finished: str


@dataclass(frozen=True)
class LineagePage:
    row: VersionRow
    task: str
    artifact_uri: str
    artifact_sha256: str
    dataset_columns: int | None
    inputs: tuple[str, ...]
    training_job: TrainingJobView | None  # None: not found, or not permitted
    trigger: Mapping[str, str]  # signal, value, inferenceService, time
    served_by: tuple[str, ...]
    replaced_by: tuple[Replacement, ...]
    previous: str  # the version before, of the same model


def trainingjob_view(tj: Obj) -> TrainingJobView:
    status, reason, message = _condition(tj, api.COND_SUCCEEDED)
    st = _status(tj)
    return TrainingJobView(
        name=_name(tj),
        succeeded=status,
        reason=reason or str(st.get("reason") or ""),
        message=message or str(st.get("message") or ""),
        estimator=str((_spec(tj).get("estimator") or {}).get("type") or ""),
        champion=str(_spec(tj).get("champion") or ""),
        started=str(st.get("startTime") or _meta(tj).get("creationTimestamp") or ""),
        finished=str(st.get("completionTime") or ""),
    )


def lineage_page(mv: Obj, mvs: Sequence[Obj], tjs: Sequence[Obj]) -> LineagePage:
    """Where ``mv`` came from (TrainingJob, trigger, dataset) and which run replaced it."""
    spec = _spec(mv)
    name = registry.name_of(mv)
    model = registry.model_of(mv)
    tj_by_name = {_name(tj): tj for tj in tjs}
    lineage = spec.get("lineage") or {}
    tj = tj_by_name.get(str(lineage.get("trainingJob") or ""))
    replaced = []
    for other in mvs:
        if registry.model_of(other) != model or registry.version_of(other) <= registry.version_of(
            mv
        ):
            continue
        run = tj_by_name.get(str((_spec(other).get("lineage") or {}).get("trainingJob") or ""))
        if run is None or _spec(run).get("champion") != name:
            continue
        gate = (_status(run).get("gate") or {}).get("message") or (
            (_spec(other).get("gate") or {}).get("message") or ""
        )
        replaced.append(
            Replacement(
                model_version=registry.name_of(other),
                training_job=_name(run),
                why=_trigger_text(_spec(run).get("trigger")) or "started by hand",
                gate=str(gate),
                promoted=bool(registry.confirmed_aliases(other)),
            )
        )
    older = [
        o
        for o in mvs
        if registry.model_of(o) == model and registry.version_of(o) < registry.version_of(mv)
    ]
    previous = registry.name_of(max(older, key=registry.version_of)) if older else ""
    artifact = spec.get("artifact") or {}
    dataset = spec.get("dataset") or {}
    trigger = lineage.get("trigger") or {}
    return LineagePage(
        row=version_row(mv),
        task=str(spec.get("task") or ""),
        artifact_uri=str(artifact.get("uri") or ""),
        artifact_sha256=str(artifact.get("sha256") or ""),
        dataset_columns=dataset.get("columns") if isinstance(dataset.get("columns"), int) else None,
        inputs=tuple(str(f.get("name")) for f in (spec.get("signature") or {}).get("inputs") or []),
        training_job=trainingjob_view(tj) if tj is not None else None,
        trigger={k: str(v) for k, v in trigger.items() if v is not None},
        served_by=tuple(str(s) for s in _status(mv).get("servedBy") or []),
        replaced_by=tuple(sorted(replaced, key=lambda r: r.model_version)),
        previous=previous,
    )


# ----------------------------------------------------------------------------- services


@dataclass(frozen=True)
class TrafficShare:
    model_version: str
    role: str
    percent: int
    replicas: int
    ready_replicas: int


@dataclass(frozen=True)
class ServiceSummary:
    name: str
    model_ref: str  # "iris@production" or the pinned version
    ready: str
    ready_reason: str
    serving: str
    canary: str
    traffic: tuple[TrafficShare, ...]


def _model_ref(spec: Mapping[str, Any]) -> str:
    ref = spec.get("model") or {}
    if ref.get("alias"):
        return f"{ref.get('model')}@{ref['alias']}"
    return str(ref.get("modelVersion") or "")


def service_summary(isvc: Obj) -> ServiceSummary:
    st = _status(isvc)
    status, reason, _ = _condition(isvc, api.COND_READY)
    traffic = tuple(
        TrafficShare(
            model_version=str(t.get("modelVersion") or ""),
            role=str(t.get("role") or ""),
            percent=int(t.get("percent") or 0),
            replicas=int(t.get("replicas") or 0),
            ready_replicas=int(t.get("readyReplicas") or 0),
        )
        for t in st.get("traffic") or []
    )
    return ServiceSummary(
        name=_name(isvc),
        model_ref=_model_ref(_spec(isvc)),
        ready=status,
        ready_reason=reason,
        serving=str(st.get("servingVersion") or ""),
        canary=str(st.get("canaryVersion") or ""),
        traffic=traffic,
    )


def services(isvcs: Sequence[Obj]) -> list[ServiceSummary]:
    return sorted((service_summary(i) for i in isvcs), key=lambda s: s.name)


@dataclass(frozen=True)
class Analysis:
    decision: str  # Promote, Rollback, Wait, ...
    model_version: str
    message: str
    time: str
    metrics: Mapping[str, str]


@dataclass(frozen=True)
class TimelineEntry:
    time: str  # RFC 3339; entries sort on it
    kind: str  # trigger, run, gate, promotion, rollback, event
    title: str
    detail: str
    warning: bool = False


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class ServicePage:
    summary: ServiceSummary
    conditions: tuple[Condition, ...]
    analysis: Analysis | None
    loop_canary: str
    canary_started: str
    retraining: bool
    timeline: tuple[TimelineEntry, ...]  # newest first


_EVENT_KINDS = {
    "RetrainingStarted": "trigger",
    "Promoted": "promotion",
    "RolledBack": "rollback",
    "AnalysisPassed": "gate",
    "AnalysisFailed": "gate",
}


def event_kind(reason: str) -> str:
    """Where an Event's reason goes on the loop's timeline."""
    if reason in _EVENT_KINDS:
        return _EVENT_KINDS[reason]
    low = reason.lower()
    for word, kind in (
        ("promot", "promotion"),
        ("rollback", "rollback"),
        ("rolledback", "rollback"),
        ("retrain", "trigger"),
        ("gate", "gate"),
        ("analysis", "gate"),
    ):
        if word in low:
            return kind
    return "event"


def _event_time(ev: Obj) -> str:
    for k in ("lastTimestamp", "eventTime", "firstTimestamp"):
        if ev.get(k):
            return str(ev[k])
    return str(_meta(ev).get("creationTimestamp") or "")


def loop_runs(isvc_name: str, tjs: Sequence[Obj]) -> list[Obj]:
    """The TrainingJobs the closed loop started for this service (by their trigger)."""
    return [
        tj for tj in tjs if (_spec(tj).get("trigger") or {}).get("inferenceService") == isvc_name
    ]


def timeline(isvc: Obj, tjs: Sequence[Obj], events: Sequence[Obj]) -> list[TimelineEntry]:
    """Triggers, runs, gates, promotions and rollbacks of one service, newest first.

    From the status of the service and of the runs it started (which outlive Events), and
    from the Events about the service and those runs (deduplicated against the status:
    an Event says the same thing a status field already placed on the timeline only once).
    """
    name = _name(isvc)
    entries: list[TimelineEntry] = []
    runs = loop_runs(name, tjs)
    for tj in runs:
        spec, st = _spec(tj), _status(tj)
        trig = spec.get("trigger") or {}
        when = str(trig.get("time") or _meta(tj).get("creationTimestamp") or "")
        entries.append(
            TimelineEntry(
                when,
                "trigger",
                f"Retrain triggered: {_trigger_text(trig)}",
                f"TrainingJob {_name(tj)}",
            )
        )
        view = trainingjob_view(tj)
        if view.succeeded in ("True", "False") and view.finished:
            result = f"registered {st['modelVersion']}" if st.get("modelVersion") else view.reason
            entries.append(
                TimelineEntry(
                    view.finished,
                    "run",
                    f"Run {view.name} finished: {result}",
                    view.message,
                    warning=view.succeeded == "False",
                )
            )
        gate = st.get("gate") or {}
        if gate and view.finished:
            entries.append(
                TimelineEntry(
                    view.finished,
                    "gate",
                    f"Gate {'passed' if gate.get('passed') else 'failed'}: {view.name}",
                    str(gate.get("message") or ""),
                    warning=not gate.get("passed"),
                )
            )
    analysis = _status(isvc).get("analysis") or {}
    if analysis.get("decision") and analysis.get("time"):
        decision = str(analysis["decision"])
        kind = {"Promote": "promotion", "Rollback": "rollback"}.get(decision, "gate")
        entries.append(
            TimelineEntry(
                str(analysis["time"]),
                kind,
                f"Canary analysis: {decision} {analysis.get('modelVersion') or ''}".rstrip(),
                str(analysis.get("message") or ""),
                warning=decision == "Rollback",
            )
        )
    subjects = {("InferenceService", name)} | {("TrainingJob", _name(tj)) for tj in runs}
    seen = {(e.kind, e.time) for e in entries}
    for ev in events:
        inv = ev.get("involvedObject") or {}
        if (inv.get("kind"), inv.get("name")) not in subjects:
            continue
        reason = str(ev.get("reason") or "")
        kind, when = event_kind(reason), _event_time(ev)
        if (kind, when) in seen and kind != "event":
            continue
        count = int(ev.get("count") or 1)
        entries.append(
            TimelineEntry(
                when,
                kind,
                f"{reason} ({inv.get('kind')} {inv.get('name')})"
                + (f" x{count}" if count > 1 else ""),
                str(ev.get("message") or ""),
                warning=ev.get("type") == "Warning",
            )
        )
    return sorted(entries, key=lambda e: e.time, reverse=True)


def service_page(isvc: Obj, tjs: Sequence[Obj], events: Sequence[Obj]) -> ServicePage:
    st, spec = _status(isvc), _spec(isvc)
    analysis = st.get("analysis") or {}
    return ServicePage(
        summary=service_summary(isvc),
        conditions=tuple(
            Condition(
                str(c.get("type")),
                str(c.get("status")),
                str(c.get("reason") or ""),
                str(c.get("message") or ""),
            )
            for c in st.get("conditions") or []
        ),
        analysis=Analysis(
            decision=str(analysis.get("decision") or ""),
            model_version=str(analysis.get("modelVersion") or ""),
            message=str(analysis.get("message") or ""),
            time=str(analysis.get("time") or ""),
            metrics={str(k): str(v) for k, v in (analysis.get("metrics") or {}).items()},
        )
        if analysis
        else None,
        loop_canary=str((st.get("loopCanary") or {}).get("modelVersion") or ""),
        canary_started=str(st.get("canaryStartTime") or ""),
        retraining=bool(spec.get("retraining")),
        timeline=tuple(timeline(isvc, tjs, events)),
    )


# ----------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str
    test: str
    n: int
    psi: float | None
    p_value: float | None
    drifted: bool


@dataclass(frozen=True)
class PodDrift:
    """One serving pod's drift report (its ``/drift`` document), or why there is none."""

    pod: str
    role: str
    error: str = ""
    enough_data: bool = False
    window_count: int = 0
    window_size: int = 0
    share_drifted: float = 0.0
    dataset_drift: bool = False
    features: tuple[FeatureDrift, ...] = field(default_factory=tuple)


def _opt_float(v: Any) -> float | None:
    return float(v) if _number(v) else None


def pod_drift(pod: str, role: str, doc: Mapping[str, Any]) -> PodDrift:
    """Read a serving pod's drift document (kubeloop_runtime.drift.DriftReport.to_dict)."""
    return PodDrift(
        pod=pod,
        role=role,
        enough_data=bool(doc.get("enough_data")),
        window_count=int(doc.get("window_count") or 0),
        window_size=int(doc.get("window_size") or 0),
        share_drifted=float(doc.get("share_drifted") or 0.0),
        dataset_drift=bool(doc.get("dataset_drift")),
        features=tuple(
            FeatureDrift(
                feature=str(f.get("name")),
                kind=str(f.get("kind") or ""),
                test=str(f.get("stattest") or ""),
                n=int(f.get("n") or 0),
                psi=_opt_float(f.get("psi")),
                p_value=_opt_float(f.get("p_value")),
                drifted=bool(f.get("drifted")),
            )
            for f in doc.get("features") or []
        ),
    )


@dataclass(frozen=True)
class PromDrift:
    """Per-feature drift as Prometheus has it (kubeloop_drift_score and friends)."""

    feature: str
    version: str
    psi: float | None
    p_value: float | None
    drifted: bool


def prometheus_drift(
    scores: Sequence[Obj], p_values: Sequence[Obj], drifted: Sequence[Obj]
) -> list[PromDrift]:
    """Join the three instant-query results (``data.result`` lists) on (version, feature)."""

    def by_key(result: Sequence[Obj]) -> dict[tuple[str, str], float]:
        out = {}
        for r in result:
            labels = r.get("metric") or {}
            try:
                value = float((r.get("value") or [0, "nan"])[1])
            except (TypeError, ValueError):
                continue
            out[(str(labels.get("version") or ""), str(labels.get("feature") or ""))] = value
        return out

    s, p, d = by_key(scores), by_key(p_values), by_key(drifted)
    return [
        PromDrift(
            feature=f,
            version=v,
            psi=s.get((v, f)),
            p_value=p.get((v, f)),
            drifted=d.get((v, f), 0.0) >= 1.0,
        )
        for v, f in sorted(set(s) | set(p) | set(d))
    ]
