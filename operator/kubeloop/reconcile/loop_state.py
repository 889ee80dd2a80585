"""What one tick of the closed loop reads (:class:`Observed`) and writes (:class:`LoopPlan`).

The observations are plain, frozen values made by the handler (``handlers/loop.py``) from
the cache and the pods' signals (``signals.py``); the decisions on them live in
``reconcile/triggers.py`` (whether a run starts), ``reconcile/canary.py`` (what the canary
does) and ``reconcile/loop.py`` (one tick, step by step).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from kubeloop.builders.predictor import Owner
from kubeloop.builders.retrain import retrain_index
from kubeloop.conditions import Condition, get_condition
from kubeloop.manifest import Obj
from kubeloop_runtime import api
from kubeloop_runtime.rfc3339 import parse_time


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


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class LoopPlan:
    """What one tick decided: the handler writes, creates, moves and says exactly this."""

    status: dict[str, Any] = field(default_factory=dict)  # loop-owned fields (None removes)
    conditions: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    create: dict[str, Any] | None = None  # a TrainingJob to create
    retrain_signal: str | None = None  # for kubeloop_retrains_total
    alias_move: tuple[str, str] | None = None  # (ModelVersion, alias): ask for the alias
    spec_patch: dict[str, Any] | None = None  # a manual canary's promotion/rollback
    log: list[str] = field(default_factory=list)
