"""The closed loop as a controller: drift/decay -> retrain -> gate -> canary -> promote.

Thin: each tick reads the world (the InferenceService, its retraining TrainingJobs, the
ModelVersions, the serving pods' signals over HTTP), asks the pure
:func:`kubeloop.reconcile.loop.plan` what to do, and does it — create one TrainingJob, ask
for an alias, write the loop's status fields and conditions, post Events.

What runs a tick (the "loop" controller's work queue, keyed by InferenceService):

- any change of the InferenceService (so a new ``kubeloop.io/retrain`` annotation acts at
  once) or of its retraining TrainingJobs;
- for an InferenceService that has ``spec.retraining``, a ``spec.canary.analysis`` or a
  running loop canary, a requeue every ``settings.poll_interval`` seconds: the pods'
  signals must be polled. It is a delayed key in the work queue, not a kopf timer or
  daemon, so no finalizer is put on the InferenceService.

The tick writes status under the InferenceService controller's per-object lock (both
write ``status.conditions``), and reads the pods' signals before taking it (HTTP is slow).
After it changes the canary, it runs the InferenceService reconcile so the canary
Deployment follows without waiting for that controller's resync.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import kopf

from kubeloop.builders.predictor import COMPONENT, Owner
from kubeloop.client import CachedClient
from kubeloop.conditions import set_conditions
from kubeloop.controller import Result
from kubeloop.handlers import _events, inferenceservice
from kubeloop.handlers._common import Logger, object_logger, state_of
from kubeloop.metrics import OperatorMetrics
from kubeloop.reconcile import loop
from kubeloop.reconcile.inferenceservice import (
    InvalidSpecError,
    desired_canary,
    parse_spec,
    resolve_stable,
)
from kubeloop.reconcile.loop_state import CanaryStats, LoopPlan, Observed, Signals, retrain_from
from kubeloop.settings import Settings
from kubeloop.signals import read_canary, read_signals
from kubeloop_runtime import api
from kubeloop_runtime.rfc3339 import parse_time

KIND = "InferenceService"


def wants_loop(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether an InferenceService needs the loop: a policy, an analysed canary, or a
    canary the loop still runs."""
    canary = spec.get("canary") or {}
    return bool(
        spec.get("retraining")
        or canary.get("analysis")
        or (status.get("loopCanary") or {}).get("modelVersion")
    )


def reconcile_key(memo: Any, namespace: str, name: str) -> Result:
    """The loop controller's entry point: one tick, and the next one if the loop runs."""
    tick(memo, namespace, name, object_logger(KIND, namespace, name))
    body = memo.client.get(api.API_VERSION, KIND, namespace, name)
    if body is not None and wants_loop(body.get("spec") or {}, body.get("status") or {}):
        return Result(requeue_after=memo.settings.poll_interval)
    return Result()


# ----------------------------------------------------------------------------- one tick


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def tick(memo: Any, namespace: str, name: str, logger: Logger) -> LoopPlan | None:
    """Read, decide, act — once. Idempotent; safe to run from several triggers at once."""
    kube: CachedClient = memo.client
    settings: Settings = memo.settings
    metrics: OperatorMetrics = memo.metrics
    body = kube.get(api.API_VERSION, KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    try:
        spec = parse_spec(body.get("spec"))
    except InvalidSpecError:
        return None  # the InferenceService controller reports it
    if not wants_loop(body.get("spec") or {}, body.get("status") or {}):
        return None

    # Signals first, without the lock: HTTP to pods can take up to the timeout.
    pods = kube.list(
        "v1",
        "Pod",
        namespace,
        labels={api.LABEL_INFERENCESERVICE: name, api.LABEL_COMPONENT: COMPONENT},
    )
    signals = None
    dataset_version = None
    if spec.retraining is not None and spec.retraining.enabled:
        signals = read_signals(name, pods, settings.signal_timeout)
        watch = state_of(memo).dataset_watch
        dataset_version = watch.version(kube, namespace, name, spec.retraining, settings)
    canary_stats = None
    if desired_canary(spec, body.get("status")) is not None:
        canary_stats = read_canary(name, pods, settings.signal_timeout)

    with state_of(memo).isvc_locks(namespace, name):
        body = kube.get(api.API_VERSION, KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        spec = parse_spec(body.get("spec"))
        plan = _plan(kube, body, spec, signals, canary_stats, dataset_version=dataset_version)
        _act(kube, metrics, body, plan, logger)

    canary_changed = "loopCanary" in plan.status or plan.alias_move is not None
    if plan.spec_patch is not None:
        kube.patch(api.API_VERSION, KIND, namespace, name, plan.spec_patch)
        logger.info("Patched InferenceService %s/%s: %s", namespace, name, plan.spec_patch)
    elif canary_changed:
        inferenceservice.reconcile(memo, namespace, name, logger)
    return plan


def _plan(
    kube: CachedClient,
    body: dict[str, Any],
    spec: api.InferenceServiceSpec,
    signals: Signals | None,
    canary_stats: CanaryStats | None,
    *,
    dataset_version: str | None = None,
) -> LoopPlan:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    status: dict[str, Any] = body.get("status") or {}
    runs = [
        retrain_from(name, tj)
        for tj in kube.list(
            api.API_VERSION, "TrainingJob", ns, labels={api.LABEL_INFERENCESERVICE: name}
        )
    ]
    mvs = kube.list(api.API_VERSION, "ModelVersion", ns)
    stable = resolve_stable(spec.model, mvs)
    served = stable.served
    obs = Observed(
        owner=Owner.from_body(body),
        created=parse_time(meta.get("creationTimestamp")) or _now(),
        spec=spec,
        status=status,
        annotation=(meta.get("annotations") or {}).get(api.ANNOTATION_RETRAIN),
        runs=runs,
        model_versions=mvs,
        serving=served.name if served is not None else None,
        model=served.spec.model if served is not None else spec.model.model,
        task=served.spec.task if served is not None else None,
        signals=signals,
        canary_stats=canary_stats,
        rollback_request=(meta.get("annotations") or {}).get(api.ANNOTATION_ROLLBACK),
        dataset_version=dataset_version,
    )
    return loop.plan(obs, _now())


def _act(
    kube: CachedClient,
    metrics: OperatorMetrics,
    body: dict[str, Any],
    plan: LoopPlan,
    logger: Logger,
) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    for line in plan.log:
        logger.debug("Closed loop of %s/%s: %s", ns, name, line)

    if plan.create is not None:
        tj_name = plan.create["metadata"]["name"]
        created = kube.create(plan.create)
        if created is not None:
            logger.info("Created TrainingJob %s/%s", ns, tj_name)
            metrics.retrains_total.labels(ns, name, plan.retrain_signal or "manual").inc()
        else:
            existing = kube.get(api.API_VERSION, "TrainingJob", ns, tj_name) or {}
            labels = (existing.get("metadata") or {}).get("labels") or {}
            if labels.get(api.LABEL_INFERENCESERVICE) != name:
                raise kopf.TemporaryError(
                    f"TrainingJob {tj_name} exists and is not a run of {name}; not retraining",
                    delay=30,
                )
            logger.info("Adopted existing TrainingJob %s/%s", ns, tj_name)

    if plan.alias_move is not None:
        mv_name, alias = plan.alias_move
        mv = kube.get(api.API_VERSION, "ModelVersion", ns, mv_name)
        if mv is not None:
            aliases = list((mv.get("spec") or {}).get("aliases") or [])
            if alias not in aliases:
                kube.patch(
                    api.API_VERSION,
                    "ModelVersion",
                    ns,
                    mv_name,
                    {
                        "metadata": {"resourceVersion": mv["metadata"]["resourceVersion"]},
                        "spec": {"aliases": [*aliases, alias]},
                    },
                )
                logger.info("Asked for alias %r on ModelVersion %s/%s", alias, ns, mv_name)

    status = dict(plan.status)
    old: dict[str, Any] = body.get("status") or {}
    if plan.conditions:
        status["conditions"] = set_conditions(
            old.get("conditions"), plan.conditions, generation=meta.get("generation")
        )
    changed = {k: v for k, v in status.items() if old.get(k) != v}
    if changed:
        kube.patch_status(api.API_VERSION, KIND, ns, name, changed)
    for ev in plan.events:
        logger.info("%s: %s", ev.reason, ev.message)
        _events.event(body, ev.type, ev.reason, ev.message)
