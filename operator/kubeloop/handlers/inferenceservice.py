"""InferenceService controller: thin kopf handlers around one level-based reconcile.

What triggers a reconcile of an InferenceService:

- its own create / update / resume, and a resync timer (a backstop, like controller-runtime's
  sync period);
- events of its predictor Deployments (label ``kubeloop.io/inferenceservice``), so the
  ``RolledOut``/``Ready`` conditions follow the real rollout;
- events of ModelVersions it refers to — by name, canary name, or model (alias) — found
  through a kopf index of InferenceServices, so a ModelVersion that appears, turns Ready, or
  gains an alias is picked up within a watch event, not a poll interval.

Every trigger runs the same :func:`reconcile`: read the InferenceService and the
ModelVersions, decide (``kubeloop.reconcile.inferenceservice``), apply the children with
server-side apply, write the status. A per-object lock serialises concurrent triggers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kubeloop import kube as kube_mod
from kubeloop import metrics as m
from kubeloop.builders import predictor as b
from kubeloop.handlers._events import as_body
from kubeloop.handlers._instrument import reconciling
from kubeloop.metrics import OperatorMetrics
from kubeloop.reconcile import inferenceservice as r
from kubeloop.registry import KeyedLocks
from kubeloop.settings import Settings
from kubeloop_runtime import api

KIND = "InferenceService"
RESYNC_SECONDS = 30.0
Logger = logging.Logger | logging.LoggerAdapter[Any]

# Serialises every writer of one InferenceService in this process: this controller's
# reconcile and the closed loop's tick (both write status.conditions).
locks = KeyedLocks()


# ----------------------------------------------------------------------------- plumbing


@kopf.index(api.GROUP, api.VERSION, api.INFERENCESERVICES)
def isvc_refs(
    *, namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str, str], str]:
    """(namespace, "mv"|"model", value) -> InferenceService names that refer to it."""
    if namespace is None:
        return {}
    keys: set[tuple[str, str, str]] = set()
    model = spec.get("model") or {}
    if model.get("modelVersion"):
        keys.add((namespace, "mv", str(model["modelVersion"])))
    if model.get("model"):
        keys.add((namespace, "model", str(model["model"])))
    canary = spec.get("canary") or {}
    if canary.get("modelVersion"):
        keys.add((namespace, "mv", str(canary["modelVersion"])))
    return dict.fromkeys(keys, name)


# ----------------------------------------------------------------------------- handlers


@kopf.on.resume(api.GROUP, api.VERSION, api.INFERENCESERVICES)
@kopf.on.create(api.GROUP, api.VERSION, api.INFERENCESERVICES)
@kopf.on.update(api.GROUP, api.VERSION, api.INFERENCESERVICES)
def reconcile_inferenceservice(
    *, namespace: str | None, name: str, memo: kopf.Memo, logger: Logger, **_: Any
) -> None:
    if namespace is None:
        return
    invalid = reconcile(memo, namespace, name, logger)
    if invalid is not None:
        raise kopf.PermanentError(invalid)


@kopf.timer(api.GROUP, api.VERSION, api.INFERENCESERVICES, interval=RESYNC_SECONDS)
def resync_inferenceservice(
    *, namespace: str | None, name: str, memo: kopf.Memo, logger: Logger, **_: Any
) -> None:
    if namespace is not None:
        reconcile(memo, namespace, name, logger)


@kopf.on.event(
    "apps",
    "v1",
    "deployments",
    labels={api.LABEL_INFERENCESERVICE: kopf.PRESENT, api.LABEL_MANAGED_BY: api.MANAGED_BY},
)
def predictor_deployment_event(
    *,
    namespace: str | None,
    labels: Mapping[str, str],
    memo: kopf.Memo,
    logger: Logger,
    **_: Any,
) -> None:
    if namespace is None:
        return
    reconcile(memo, namespace, labels[api.LABEL_INFERENCESERVICE], logger)


@kopf.on.event(api.GROUP, api.VERSION, api.MODELVERSIONS)
def model_version_event(
    *,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    memo: kopf.Memo,
    logger: Logger,
    isvc_refs: kopf.Index[tuple[str, str, str], str] | None = None,
    **_: Any,
) -> None:
    """A ModelVersion changed: reconcile the InferenceServices that refer to it."""
    if namespace is None or isvc_refs is None:
        return
    keys = [(namespace, "mv", name)]
    if spec.get("model"):
        keys.append((namespace, "model", str(spec["model"])))
    targets: set[str] = set()
    for key in keys:
        if key in isvc_refs:
            targets.update(isvc_refs[key])
    for isvc in sorted(targets):
        reconcile(memo, namespace, isvc, logger)


# ----------------------------------------------------------------------------- reconcile


def reconcile(memo: kopf.Memo, namespace: str, name: str, logger: Logger) -> str | None:
    """Reconcile one InferenceService; returns the message when its spec is invalid."""
    metrics: OperatorMetrics = memo.metrics
    with locks(namespace, name), reconciling(metrics, m.INFERENCESERVICE):
        return _reconcile(
            kube=memo.kube,
            settings=memo.settings,
            metrics=metrics,
            namespace=namespace,
            name=name,
            logger=logger,
        )


def _reconcile(
    *,
    kube: kube_mod.Kube,
    settings: Settings,
    metrics: OperatorMetrics,
    namespace: str,
    name: str,
    logger: Logger,
) -> str | None:
    body = kube.get(api.API_VERSION, KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None  # gone or going: owner references clean up the children
    generation = body["metadata"].get("generation")
    old_status: dict[str, Any] = body.get("status") or {}

    try:
        spec = r.parse_spec(body.get("spec"))
    except r.InvalidSpecError as e:
        status = r.invalid_status(old_status, generation, str(e))
        _write_status(kube, namespace, name, old_status, status)
        _event(body, "Warning", reason=r.INVALID_SPEC, message=str(e))
        return str(e)

    metrics.saw_inferenceservice(namespace, name)  # its counters exist at 0 from now on
    owner = b.Owner.from_body(body)
    mvs = kube.list(api.API_VERSION, "ModelVersion", namespace)
    stable = r.resolve_stable(spec.model, mvs)
    canary = r.desired_canary(spec, old_status)
    canary_res = r.resolve_canary(canary, mvs) if canary is not None else None
    stable_dep = kube.get("apps/v1", "Deployment", namespace, b.predictor_name(name))
    canary_dep = kube.get("apps/v1", "Deployment", namespace, b.canary_name(name))
    before = r.deployment_version(stable_dep)

    plan = r.plan_children(
        spec,
        owner,
        settings,
        stable=stable,
        canary=canary,
        canary_resolution=canary_res,
        stable_dep=stable_dep,
        canary_dep=canary_dep,
    )
    for obj in plan.apply:
        applied = kube.apply(obj)
        if obj["kind"] != "Deployment":
            continue
        is_stable = obj["metadata"]["name"] == b.predictor_name(name)
        if (stable_dep if is_stable else canary_dep) is None:
            logger.info("Created Deployment %s/%s", namespace, obj["metadata"]["name"])
        if is_stable:
            stable_dep = applied
        else:
            canary_dep = applied
    for ref in plan.delete:
        if kube.delete(ref.api_version, ref.kind, namespace, ref.name):
            logger.info("Deleted %s %s/%s", ref.kind, namespace, ref.name)
        if ref.kind == "Deployment" and ref.name == b.canary_name(name):
            canary_dep = None

    status = r.compute_status(
        spec,
        owner,
        generation=generation,
        old_status=old_status,
        stable=stable,
        canary=canary,
        canary_resolution=canary_res,
        stable_dep=stable_dep,
        canary_dep=canary_dep,
    )
    _write_status(kube, namespace, name, old_status, status)
    _observe_transitions(
        body=body,
        metrics=metrics,
        old=old_status,
        new=status,
        stable=stable,
        before=before,
        logger=logger,
    )
    return None


def _write_status(
    kube: kube_mod.Kube,
    namespace: str,
    name: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
) -> None:
    """Merge-patch the status when something changed (None removes a field)."""
    if all(old.get(k) == v for k, v in new.items()):
        return
    kube.patch_status(api.API_VERSION, KIND, namespace, name, new)


def _observe_transitions(
    *,
    body: Mapping[str, Any],
    metrics: OperatorMetrics,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    stable: r.Resolution,
    before: str | None,
    logger: Logger,
) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    if r.served_version_changed(old, new):
        metrics.rollouts_total.labels(ns, name).inc()
        msg = f"Rolling out ModelVersion {new['servingVersion']}" + (
            f" (was {before})" if before else ""
        )
        logger.info(msg)
        _event(body, "Normal", reason="RollingOut", message=msg)
    transition = r.canary_transition(old, new, stable)
    if transition == "promoted":
        metrics.promotions_total.labels(ns, name).inc()
        _event(body, "Normal", "Promoted", f"Canary {old['canaryVersion']} promoted")
    elif transition == "rolledBack":
        decision = (old.get("analysis") or {}).get("decision")
        reason = "analysis" if decision == "Rollback" else "manual"
        metrics.rollbacks_total.labels(ns, name, reason).inc()
        _event(body, "Normal", "RolledBack", f"Canary {old['canaryVersion']} rolled back")
    was = r.condition_status(old, r.COND_MODEL_RESOLVED)
    if not stable.ok and was != "False":
        _event(body, "Warning", reason=stable.reason, message=stable.message)


def _event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post a Kubernetes Event on the InferenceService (kopf reads only its reference)."""
    kopf.event(as_body(body), type=type_, reason=reason, message=message)


# ----------------------------------------------------------------------------- for the loop


def promote(kube: kube_mod.Kube, namespace: str, name: str) -> bool:
    """Promote the running canary (spec change, as a user would); False if there is none."""
    body = kube.get(api.API_VERSION, KIND, namespace, name)
    if body is None:
        return False
    spec = r.parse_spec(body.get("spec"))
    canary = r.desired_canary(spec, body.get("status"))
    if canary is None:
        return False
    kube.patch(
        api.API_VERSION, KIND, namespace, name, r.promotion_patch(spec, canary.model_version)
    )
    return True


def rollback(kube: kube_mod.Kube, namespace: str, name: str) -> bool:
    """Roll the canary back (remove it from the spec); False if there is none."""
    body = kube.get(api.API_VERSION, KIND, namespace, name)
    if body is None or not (body.get("spec") or {}).get("canary"):
        return False
    kube.patch(api.API_VERSION, KIND, namespace, name, r.rollback_patch())
    return True
