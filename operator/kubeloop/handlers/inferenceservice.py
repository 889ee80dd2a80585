"""InferenceService controller: one level-based reconcile per InferenceService key.

What enqueues an InferenceService (see :mod:`kubeloop.manager`, which wires the informers):

- any change of the InferenceService itself;
- changes of its children (predictor Deployments, the Service, HPA and PDB, all labelled
  ``kubeloop.io/inferenceservice``), so ``RolledOut``/``Ready`` follow the real rollout and
  a child deleted by hand comes back;
- changes of ModelVersions it refers to (by name, canary name, or model for an alias),
  found through :class:`RefIndex`, so a ModelVersion that appears, turns Ready or gains an
  alias is picked up within a watch event;
- the operator-level resync (rare and jittered), a backstop like controller-runtime's.

The reconcile reads only the caches (the InferenceService, the ModelVersions, its
Deployments), decides (``kubeloop.reconcile.inferenceservice``), applies the children that
differ from what is observed and writes the status when it changed.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import kopf

from kubeloop.builders.predictor import (
    Owner,
    canary_name,
    predictor_name,
)
from kubeloop.client import CachedClient
from kubeloop.conditions import get_condition
from kubeloop.controller import Result
from kubeloop.handlers import _events
from kubeloop.handlers._common import Logger, object_logger, release_legacy_finalizer, state_of
from kubeloop.handlers._instrument import reconciling
from kubeloop.metrics import (
    INFERENCESERVICE,
    OperatorMetrics,
)
from kubeloop.reconcile.inferenceservice import (
    COND_CANARY_READY,
    COND_MODEL_LOADED,
    COND_MODEL_RESOLVED,
    INVALID_SPEC,
    LOADED,
    NOT_REFUSALS,
    InvalidSpecError,
    Resolution,
    canary_transition,
    compute_status,
    condition_status,
    deployment_version,
    desired_canary,
    invalid_status,
    parse_spec,
    plan_children,
    resolve_canary,
    resolve_stable,
    served_version_changed,
)
from kubeloop.settings import Settings
from kubeloop_runtime import api

KIND = "InferenceService"

# Serialises every writer of one InferenceService in this process: this controller's
# reconcile and the closed loop's tick (both write status.conditions).

RefKey = tuple[str, str, str]  # (namespace, "mv" | "model", value)


def refs_of(namespace: str, body: Mapping[str, Any]) -> set[RefKey]:
    """What an InferenceService refers to: ModelVersions by name (stable, canary, the closed
    loop's canary in its status), and models by name (for aliases)."""
    spec = body.get("spec") or {}
    keys: set[RefKey] = set()
    model = spec.get("model") or {}
    if model.get("modelVersion"):
        keys.add((namespace, "mv", str(model["modelVersion"])))
    if model.get("model"):
        keys.add((namespace, "model", str(model["model"])))
    canary = spec.get("canary") or {}
    if canary.get("modelVersion"):
        keys.add((namespace, "mv", str(canary["modelVersion"])))
    loop_canary = (body.get("status") or {}).get("loopCanary") or {}
    if loop_canary.get("modelVersion"):
        keys.add((namespace, "mv", str(loop_canary["modelVersion"])))
    return keys


class RefIndex:
    """(namespace, "mv"|"model", value) -> names of the InferenceServices that refer to it,
    kept from InferenceService events (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_ref: dict[RefKey, set[str]] = {}
        self._refs: dict[tuple[str, str], set[RefKey]] = {}

    def update(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        new = refs_of(namespace, body) if body is not None else set()
        with self._lock:
            old = self._refs.pop((namespace, name), set())
            for k in old - new:
                names = self._by_ref.get(k)
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self._by_ref[k]
            for k in new:
                self._by_ref.setdefault(k, set()).add(name)
            if new:
                self._refs[(namespace, name)] = new

    def referring(self, namespace: str, mv_name: str, model: str | None) -> set[str]:
        keys = [(namespace, "mv", mv_name)]
        if model:
            keys.append((namespace, "model", model))
        with self._lock:
            out: set[str] = set()
            for k in keys:
                out |= self._by_ref.get(k, set())
            return out


# ----------------------------------------------------------------------------- reconcile


def reconcile_key(memo: Any, namespace: str, name: str) -> Result:
    """The controller's entry point (the work queue calls it; it counts and times it)."""
    invalid = reconcile(memo, namespace, name, object_logger(KIND, namespace, name), count=False)
    if invalid is not None:
        raise kopf.PermanentError(invalid)
    return Result()


def reconcile(
    memo: Any, namespace: str, name: str, logger: Logger, *, count: bool = True
) -> str | None:
    """Reconcile one InferenceService; returns the message when its spec is invalid."""
    metrics: OperatorMetrics = memo.metrics
    locks = state_of(memo).isvc_locks
    with locks(namespace, name), reconciling(metrics if count else None, INFERENCESERVICE):
        return _reconcile(
            kube=memo.client,
            settings=memo.settings,
            metrics=metrics,
            namespace=namespace,
            name=name,
            logger=logger,
        )


def _reconcile(
    *,
    kube: CachedClient,
    settings: Settings,
    metrics: OperatorMetrics,
    namespace: str,
    name: str,
    logger: Logger,
) -> str | None:
    body = kube.get(api.API_VERSION, KIND, namespace, name)
    if body is None:
        return None
    body = release_legacy_finalizer(kube, body) or body
    if body["metadata"].get("deletionTimestamp"):
        return None  # going: owner references clean up the children
    generation = body["metadata"].get("generation")
    old_status: dict[str, Any] = body.get("status") or {}

    try:
        spec = parse_spec(body.get("spec"))
    except InvalidSpecError as e:
        status = invalid_status(old_status, generation, str(e))
        if _write_status(kube, namespace, name, old_status, status):
            _event(body, "Warning", reason=INVALID_SPEC, message=str(e))
        return str(e)

    metrics.saw_inferenceservice(namespace, name)  # its counters exist at 0 from now on
    owner = Owner.from_body(body)
    canary = desired_canary(spec, old_status)
    mvs = relevant_versions(kube, namespace, spec, canary)
    stable = resolve_stable(spec.model, mvs)
    canary_res = resolve_canary(canary, mvs) if canary is not None else None
    stable_dep = kube.get("apps/v1", "Deployment", namespace, predictor_name(name))
    canary_dep = kube.get("apps/v1", "Deployment", namespace, canary_name(name))
    before = deployment_version(stable_dep)

    plan = plan_children(
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
        is_stable = obj["metadata"]["name"] == predictor_name(name)
        if (stable_dep if is_stable else canary_dep) is None:
            logger.info("Created Deployment %s/%s", namespace, obj["metadata"]["name"])
        if is_stable:
            stable_dep = applied
        else:
            canary_dep = applied
    for ref in plan.delete:
        if kube.delete(ref.api_version, ref.kind, namespace, ref.name):
            logger.info("Deleted %s %s/%s", ref.kind, namespace, ref.name)
        if ref.kind == "Deployment" and ref.name == canary_name(name):
            canary_dep = None

    status = compute_status(
        spec,
        owner,
        generation=generation,
        old_status=old_status,
        stable=stable,
        canary=canary,
        canary_resolution=canary_res,
        stable_dep=stable_dep,
        canary_dep=canary_dep,
        pods=kube.list("v1", "Pod", namespace, labels={api.LABEL_INFERENCESERVICE: name}),
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


def relevant_versions(
    kube: CachedClient,
    namespace: str,
    spec: api.InferenceServiceSpec,
    canary: api.CanarySpec | None,
) -> list[dict[str, Any]]:
    """The ModelVersions ``spec`` can resolve to, from the cache: those it names, and those
    of the model whose alias it follows (by the ``kubeloop.io/model`` label the registry
    puts on every version before it confirms an alias)."""
    names = [spec.model.model_version, canary.model_version if canary else None]
    found = {
        n: mv
        for n in names
        if n and (mv := kube.get(api.API_VERSION, "ModelVersion", namespace, n)) is not None
    }
    if spec.model.model:
        for mv in kube.list(
            api.API_VERSION, "ModelVersion", namespace, labels={api.LABEL_MODEL: spec.model.model}
        ):
            found.setdefault(mv["metadata"]["name"], mv)
    return list(found.values())


def _write_status(
    kube: CachedClient,
    namespace: str,
    name: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
) -> bool:
    """Merge-patch the status when something changed (None removes a field)."""
    if all(old.get(k) == v for k, v in new.items()):
        return False
    kube.patch_status(api.API_VERSION, KIND, namespace, name, new)
    return True


def _observe_transitions(
    *,
    body: Mapping[str, Any],
    metrics: OperatorMetrics,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    stable: Resolution,
    before: str | None,
    logger: Logger,
) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    if served_version_changed(old, new):
        metrics.rollouts_total.labels(ns, name).inc()
        msg = f"Rolling out ModelVersion {new['servingVersion']}" + (
            f" (was {before})" if before else ""
        )
        logger.info(msg)
        if old.get("servingVersion"):
            # A change of version; the first rollout is told by the Ready condition alone
            # (one write fewer per new InferenceService).
            _event(body, "Normal", reason="RollingOut", message=msg)
    transition = canary_transition(old, new, stable)
    if transition == "promoted":
        metrics.promotions_total.labels(ns, name).inc()
        _event(body, "Normal", "Promoted", f"Canary {old['canaryVersion']} promoted")
    elif transition == "rolledBack":
        analysis = old.get("analysis") or {}
        by_analysis = analysis.get("decision") == "Rollback" and analysis.get("source") != "manual"
        reason = "analysis" if by_analysis else "manual"
        metrics.rollbacks_total.labels(ns, name, reason).inc()
        _event(body, "Normal", "RolledBack", f"Canary {old['canaryVersion']} rolled back")
    was = condition_status(old, COND_MODEL_RESOLVED)
    if not stable.ok and was != "False":
        _event(body, "Warning", reason=stable.reason, message=stable.message)
    for type_ in (COND_MODEL_LOADED, COND_CANARY_READY):
        _loading_event(body, type_, old, new)


def _loading_event(
    body: Mapping[str, Any], type_: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> None:
    """A Warning when predictor pods refuse their model (a new cause, once), a Normal
    event when they load it again."""
    before = get_condition(old.get("conditions"), type_) or {}
    after = get_condition(new.get("conditions"), type_) or {}
    refused = after.get("status") == "False" and after.get("reason") not in NOT_REFUSALS
    if refused and (before.get("status"), before.get("reason")) != ("False", after["reason"]):
        _event(body, "Warning", reason=str(after["reason"]), message=str(after.get("message")))
    elif (
        type_ == COND_MODEL_LOADED
        and after.get("status") == "True"
        and before.get("status") == "False"
    ):
        _event(body, "Normal", reason=LOADED, message=str(after.get("message")))


def _event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post a Kubernetes Event on the InferenceService."""
    _events.event(body, type_, reason, message)
