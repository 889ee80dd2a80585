"""Whether a retraining run starts now, and for which signal. Pure: no I/O, no clock.

The triggers of ``spec.retraining.triggers`` (a manual request, new data, drift, live
accuracy or error, a cron schedule on croniter in ``kubeloop/cron.py``) and what holds
them back (``maxConcurrent``, a canary under analysis, the cooldown). Every rule reads
the runs themselves, not only the status, so a crash between creating a run and
recording it can neither lose nor repeat a run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from kubeloop import cron
from kubeloop.manifest import Obj
from kubeloop.reconcile.loop_state import Retrain, Signals
from kubeloop_runtime import api
from kubeloop_runtime.rfc3339 import format_time, parse_time


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
