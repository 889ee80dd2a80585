"""InferenceService decisions: observed objects -> children to apply/delete and the status.

Pure: no kopf, no API client, no clock (callers pass ``now`` where conditions need it).
The handler (``kubeloop.handlers.inferenceservice``) reads the world, calls these functions
and writes what they return.

Seams for the closed loop (``handlers/loop.py``):

- :func:`desired_canary` is the ONE place that says which canary should run
  (``spec.canary``, else the loop's ``status.loopCanary``).
- :func:`promotion_patch` and :func:`rollback_patch` are the spec changes that promote or
  roll back a manual canary, as a person makes them; the loop computes its own spec patch
  in its plan. This controller counts every transition (:func:`canary_transition`) once.

Size (~670 lines): resolution, children, rollout state, predictor pods' load failures and
status of one kind, one section each; the rollout state, the load failures and the status
are the next candidates to split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from kubeloop import registry
from kubeloop.builders import predictor
from kubeloop.conditions import Condition, Status, get_condition, set_conditions
from kubeloop.manifest import Manifest
from kubeloop.reconcile.canary import loop_canary
from kubeloop.settings import Settings
from kubeloop_runtime import api
from kubeloop_runtime.train.spec import format_validation_error

# Condition types.
COND_READY = api.COND_READY
COND_MODEL_RESOLVED = "ModelResolved"
COND_ROLLED_OUT = "RolledOut"
COND_CANARY_READY = "CanaryReady"
COND_MODEL_LOADED = "ModelLoaded"

# Reasons.
RESOLVED = "Resolved"
MODEL_VERSION_NOT_FOUND = "ModelVersionNotFound"
MODEL_VERSION_NOT_READY = "ModelVersionNotReady"
ALIAS_NOT_FOUND = "AliasNotFound"
INVALID_SPEC = "InvalidSpec"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
LOADED = "Loaded"
LOADING = "Loading"
PREDICTOR_FAILED = "PredictorFailed"  # a container exit that is not a refusal of ours
# CanaryReady=False reasons that are progress or resolution, not a pod's refusal.
NOT_REFUSALS = frozenset(
    {"Progressing", "DeploymentMissing", MODEL_VERSION_NOT_FOUND, MODEL_VERSION_NOT_READY,
     PROGRESS_DEADLINE_EXCEEDED}
)  # fmt: skip

PHASE_PENDING = "Pending"
PHASE_READY = "Ready"
PHASE_DEGRADED = "Degraded"
PHASE_FAILED = "Failed"


# ----------------------------------------------------------------------------- spec


class InvalidSpecError(ValueError):
    """The InferenceService spec cannot be served as written (message names the field)."""


def parse_spec(raw: Mapping[str, Any] | None) -> api.InferenceServiceSpec:
    """Parse and check what admission cannot express; raises :class:`InvalidSpecError`."""
    try:
        spec = api.InferenceServiceSpec.model_validate(raw or {})
    except ValidationError as e:
        raise InvalidSpecError(format_validation_error(e)) from e
    r = spec.rollout
    if _is_zero(r.max_surge) and _is_zero(r.max_unavailable):
        raise InvalidSpecError(
            "spec.rollout: maxSurge and maxUnavailable cannot both be 0 (the rollout could"
            " never make progress)"
        )
    return spec


def _is_zero(value: str) -> bool:
    return value.rstrip("%").lstrip("0") == ""


def desired_canary(
    spec: api.InferenceServiceSpec, status: Mapping[str, Any] | None
) -> api.CanarySpec | None:
    """The canary that should run now, or None.

    ``spec.canary`` (a person's canary always wins), else the canary the closed loop
    started itself (``status.loopCanary``, see :func:`kubeloop.reconcile.canary.loop_canary`);
    every other function takes the result of this one.
    """
    if spec.canary is not None:
        return spec.canary
    return loop_canary(spec, status)


def promotion_patch(spec: api.InferenceServiceSpec, canary_version: str) -> Manifest:
    """The merge patch that promotes ``canary_version`` to stable and removes the canary.

    The stable Deployment rolls to the canary's version (zero downtime: maxUnavailable 0
    by default) and the canary Deployment is deleted once that rollout completes.
    A service that follows an alias is switched to name the version: to keep following the
    alias, move the alias instead (the registry) and apply :func:`rollback_patch`.
    """
    model: Manifest = {"modelVersion": canary_version}
    if spec.model.model_version is None:
        model.update({"model": None, "alias": None})
    return {"spec": {"model": model, "canary": None}}


def rollback_patch() -> Manifest:
    """The merge patch that rolls the canary back: the canary Deployment goes away."""
    return {"spec": {"canary": None}}


# ----------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Resolution:
    served: predictor.ServedVersion | None
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.served is not None


def check_model_version(mv: Mapping[str, Any] | None, name: str) -> Resolution:
    """Is ModelVersion ``name`` (``mv``, or None when missing) servable?"""
    if mv is None:
        return Resolution(
            None, MODEL_VERSION_NOT_FOUND, f"ModelVersion {name} does not exist in this namespace"
        )
    try:
        mv_spec = api.ModelVersionSpec.model_validate(mv.get("spec") or {})
    except ValidationError as e:
        return Resolution(
            None, MODEL_VERSION_NOT_READY, f"ModelVersion {name} has an invalid spec: {e}"
        )
    if not mv_spec.gate.passed:
        return Resolution(
            None,
            MODEL_VERSION_NOT_READY,
            f"ModelVersion {name} failed its quality gate: {mv_spec.gate.message}".rstrip(": "),
        )
    if mv.get("metadata", {}).get("deletionTimestamp"):
        return Resolution(None, MODEL_VERSION_NOT_READY, f"ModelVersion {name} is being deleted")
    ready = get_condition((mv.get("status") or {}).get("conditions"), api.COND_READY)
    if ready is None or ready.get("status") != "True":
        why = (
            (ready or {}).get("message") or (ready or {}).get("reason") or "no Ready condition yet"
        )
        return Resolution(None, MODEL_VERSION_NOT_READY, f"ModelVersion {name} is not Ready: {why}")
    return Resolution(predictor.ServedVersion(name=name, spec=mv_spec), RESOLVED, f"Serving {name}")


def _by_name(model_versions: Sequence[Manifest], name: str) -> Mapping[str, Any] | None:
    for mv in model_versions:
        if mv.get("metadata", {}).get("name") == name:
            return mv
    return None


def resolve_stable(ref: api.ModelRef, model_versions: Sequence[Manifest]) -> Resolution:
    """The ModelVersion ``spec.model`` names, by name or by model + alias."""
    if ref.model_version is not None:
        return check_model_version(_by_name(model_versions, ref.model_version), ref.model_version)
    assert ref.model is not None and ref.alias is not None  # ModelRef validates this
    candidates = [mv for mv in model_versions if (mv.get("spec") or {}).get("model") == ref.model]
    holder = registry.resolve_alias(candidates, ref.model, ref.alias)
    if holder is None:
        return Resolution(
            None,
            ALIAS_NOT_FOUND,
            f"No single ModelVersion of model {ref.model} holds the alias {ref.alias!r}"
            " (status.aliases)",
        )
    return check_model_version(holder, holder["metadata"]["name"])


def resolve_canary(canary: api.CanarySpec, model_versions: Sequence[Manifest]) -> Resolution:
    return check_model_version(_by_name(model_versions, canary.model_version), canary.model_version)


# ----------------------------------------------------------------------------- rollout


@dataclass(frozen=True)
class RolloutState:
    done: bool
    reason: str
    message: str
    version: str | None  # the ModelVersion the pod template names
    replicas: int  # desired
    ready: int
    available: int


def deployment_version(dep: Mapping[str, Any] | None) -> str | None:
    if dep is None:
        return None
    labels = dep.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
    value = labels.get(api.LABEL_MODELVERSION)
    return str(value) if value is not None else None


def rollout_state(dep: Mapping[str, Any] | None) -> RolloutState:
    """Where the Deployment's rollout stands, from its status (as `kubectl rollout status`)."""
    if dep is None:
        return RolloutState(
            False, "DeploymentMissing", "The Deployment does not exist yet", None, 0, 0, 0
        )
    meta, spec, st = dep.get("metadata", {}), dep.get("spec", {}), dep.get("status") or {}
    version = deployment_version(dep)
    want = int(spec.get("replicas", 1))
    updated = int(st.get("updatedReplicas", 0))
    total = int(st.get("replicas", 0))
    ready = int(st.get("readyReplicas", 0))
    available = int(st.get("availableReplicas", 0))
    name = meta.get("name", "")

    def state(done: bool, reason: str, message: str) -> RolloutState:
        return RolloutState(done, reason, message, version, want, ready, available)

    if int(st.get("observedGeneration", 0)) < int(meta.get("generation", 1)):
        return state(False, "Progressing", f"Waiting for Deployment {name} to be observed")
    progressing = get_condition(st.get("conditions"), "Progressing")
    if progressing is not None and progressing.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        return state(
            False,
            PROGRESS_DEADLINE_EXCEEDED,
            f"Deployment {name} exceeded its progress deadline: {progressing.get('message', '')}",
        )
    if updated < want:
        return state(False, "Progressing", f"{updated} of {want} replicas of {name} updated")
    if total > updated:
        return state(
            False, "Progressing", f"{total - updated} old replicas of {name} pending termination"
        )
    if available < want:
        return state(False, "Progressing", f"{available} of {want} replicas of {name} available")
    return state(True, "RolledOut", f"Deployment {name} serves {version} on {want} replica(s)")


# ----------------------------------------------------------------------------- model loading


@dataclass(frozen=True)
class LoadFailure:
    """Why a predictor pod does not serve: its server's refusal to start, from the pod."""

    pod: str
    reason: str
    message: str

    @property
    def text(self) -> str:
        return f"Pod {self.pod}: {self.message}"


def _termination(cs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The container's current termination, else its last one."""
    state = (cs.get("state") or {}).get("terminated")
    return state or (cs.get("lastState") or {}).get("terminated") or None


def pod_load_failure(pod: Mapping[str, Any]) -> LoadFailure | None:
    """The refusal of a predictor pod that is not ready, as the kubelet reported it.

    ``kubeloop-serve`` writes an :class:`api.StartupFailure` to its termination message
    when it cannot load its model (a missing object, refused credentials, a changed
    sha256...); any other exit is told by its code. A ready container has recovered:
    its last termination is history, not a cause.
    """
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        if cs.get("ready"):
            continue
        term = _termination(cs)
        if term is None:
            continue
        text = str(term.get("message") or "")
        try:
            failure = api.StartupFailure.model_validate_json(text)
        except ValidationError:
            code = term.get("exitCode")
            if code in (None, 0):
                continue
            why = term.get("reason") or "Error"
            return LoadFailure(
                str(meta.get("name", "")),
                PREDICTOR_FAILED,
                f"the predictor container exited with code {code} ({why})",
            )
        return LoadFailure(str(meta.get("name", "")), failure.reason, failure.message)
    return None


def load_failure(pods: Sequence[Manifest], role: str, version: str | None) -> LoadFailure | None:
    """The first refusal (by pod name) among the pods of ``role`` that serve ``version``."""
    if version is None:
        return None
    want = {api.LABEL_ROLE: role, api.LABEL_MODELVERSION: version}
    found = [
        f
        for p in pods
        if all(((p.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in want.items())
        for f in [pod_load_failure(p)]
        if f is not None
    ]
    return min(found, key=lambda f: f.pod) if found else None


def pod_signal(pod: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """What of a predictor pod the InferenceService's status depends on: a pod event
    that changes none of it enqueues nothing."""
    if pod is None:
        return ()
    statuses = (pod.get("status") or {}).get("containerStatuses") or ()
    return (
        tuple(bool(cs.get("ready")) for cs in statuses),
        pod_load_failure(pod),
        bool((pod.get("metadata") or {}).get("deletionTimestamp")),
    )


def model_loaded(stable: Resolution, st: RolloutState, failure: LoadFailure | None) -> Condition:
    """``ModelLoaded``: whether the stable pods loaded the version they serve."""
    if failure is not None:
        return Condition(COND_MODEL_LOADED, "False", failure.reason, failure.text)
    if stable.served is None or st.version is None:
        return Condition(COND_MODEL_LOADED, "Unknown", LOADING, "No predictor serves a model yet")
    if st.version == stable.served.name and st.done:
        return Condition(
            COND_MODEL_LOADED, "True", LOADED, f"{st.ready} replica(s) loaded {st.version}"
        )
    return Condition(
        COND_MODEL_LOADED,
        "Unknown",
        LOADING,
        f"Waiting for the predictor pods to load {st.version}",
    )


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Ref:
    api_version: str
    kind: str
    name: str


@dataclass
class Plan:
    apply: list[Manifest] = field(default_factory=list)
    delete: list[Ref] = field(default_factory=list)


def stable_replicas(
    spec: api.InferenceServiceSpec,
    canary: api.CanarySpec | None,
    canary_dep: Mapping[str, Any] | None,
) -> int | None:
    """The stable Deployment's replicas; None when the HPA owns the count.

    At 100 % canary traffic the stable Deployment scales to 0, but only once the canary's
    pods are all available, so there is never a moment with no ready predictor.
    """
    if spec.autoscaling is not None:
        return None
    if canary is not None and canary.traffic_percent >= 100 and spec.replicas > 0:
        st = rollout_state(canary_dep)
        if st.done and st.version == canary.model_version and st.available >= 1:
            return 0
    return spec.replicas


def plan_children(
    spec: api.InferenceServiceSpec,
    owner: predictor.Owner,
    settings: Settings,
    *,
    stable: Resolution,
    canary: api.CanarySpec | None,
    canary_resolution: Resolution | None,
    stable_dep: Mapping[str, Any] | None,
    canary_dep: Mapping[str, Any] | None,
) -> Plan:
    """Which children to apply and which to delete.

    - The Service is always applied.
    - The stable Deployment is applied when the model resolves; while it does not, an
      existing Deployment keeps serving what it serves (a ModelVersion briefly not Ready
      must not take a service down).
    - The canary Deployment is applied when a canary is wanted and resolves; it is deleted
      on rollback at once, and after a promotion only when the stable Deployment has rolled
      out to the canary's version.
    - HPA when spec.autoscaling (and a stable Deployment exists); PDB when more than one
      stable replica. Otherwise deleted.
    """
    plan = Plan(apply=[predictor.build_service(owner)])
    stable_exists = stable_dep is not None
    if stable.served is not None:
        plan.apply.append(
            predictor.build_deployment(
                spec,
                owner,
                stable.served,
                predictor.STABLE,
                settings,
                replicas=stable_replicas(spec, canary, canary_dep),
            )
        )
        stable_exists = True

    canary_ref = Ref("apps/v1", "Deployment", predictor.canary_name(owner.name))
    if canary is not None:
        if canary_resolution is not None and canary_resolution.served is not None:
            plan.apply.append(
                predictor.build_deployment(
                    spec,
                    owner,
                    canary_resolution.served,
                    predictor.CANARY,
                    settings,
                    replicas=predictor.canary_replicas(
                        predictor.stable_base_replicas(spec), canary.traffic_percent
                    ),
                )
            )
    elif canary_dep is not None and not promotion_in_progress(stable, stable_dep, canary_dep):
        plan.delete.append(canary_ref)

    hpa_ref = Ref("autoscaling/v2", "HorizontalPodAutoscaler", predictor.predictor_name(owner.name))
    if spec.autoscaling is not None and stable_exists:
        plan.apply.append(predictor.build_hpa(spec.autoscaling, owner))
    elif spec.autoscaling is None:
        plan.delete.append(hpa_ref)

    pdb_ref = Ref("policy/v1", "PodDisruptionBudget", predictor.predictor_name(owner.name))
    if predictor.wants_pdb(spec) and stable_exists:
        plan.apply.append(predictor.build_pdb(owner))
    elif not predictor.wants_pdb(spec):
        plan.delete.append(pdb_ref)
    return plan


def promotion_in_progress(
    stable: Resolution,
    stable_dep: Mapping[str, Any] | None,
    canary_dep: Mapping[str, Any] | None,
) -> bool:
    """The canary was promoted and the stable Deployment is still rolling to its version."""
    if stable.served is None or canary_dep is None:
        return False
    if deployment_version(canary_dep) != stable.served.name:
        return False  # a rollback: the canary serves something the stable will not
    st = rollout_state(stable_dep)
    return not (st.done and st.version == stable.served.name)


# ----------------------------------------------------------------------------- status


def _traffic(stable: RolloutState | None, canary: RolloutState | None) -> list[Manifest]:
    present = [
        (r, s) for r, s in ((predictor.STABLE, stable), (predictor.CANARY, canary)) if s is not None
    ]
    ready_total = sum(s.ready for _, s in present)
    want_total = sum(s.replicas for _, s in present)
    out = []
    for role, s in present:
        # Requests spread over ready endpoints; before any is ready, show the plan.
        pct = (
            predictor.traffic_percent(s.ready, ready_total)
            if ready_total > 0
            else predictor.traffic_percent(s.replicas, want_total)
        )
        out.append(
            {
                "role": role,
                "modelVersion": s.version or "",
                "percent": pct,
                "replicas": s.replicas,
                "readyReplicas": s.ready,
            }
        )
    return out


def compute_status(
    spec: api.InferenceServiceSpec,
    owner: predictor.Owner,
    *,
    generation: int | None,
    old_status: Mapping[str, Any] | None,
    stable: Resolution,
    canary: api.CanarySpec | None,
    canary_resolution: Resolution | None,
    stable_dep: Mapping[str, Any] | None,
    canary_dep: Mapping[str, Any] | None,
    pods: Sequence[Manifest] = (),
    now: str | None = None,
) -> Manifest:
    """The whole status object (absent fields as None, so a merge patch removes them).

    ``pods`` are the InferenceService's predictor pods: a server's refusal to load its
    model shows in ``ModelLoaded`` (stable) or ``CanaryReady``, and in ``Ready``.
    """
    old = old_status or {}
    st = rollout_state(stable_dep)
    conds: list[Condition] = []

    if stable.ok:
        conds.append(Condition(COND_MODEL_RESOLVED, "True", RESOLVED, stable.message))
    else:
        conds.append(Condition(COND_MODEL_RESOLVED, "False", stable.reason, stable.message))

    if stable.served is not None and st.version != stable.served.name and stable_dep is not None:
        rolled = Condition(
            COND_ROLLED_OUT,
            "False",
            "Progressing",
            f"Rolling out {stable.served.name} (was {st.version})",
        )
    else:
        rolled = Condition(COND_ROLLED_OUT, "True" if st.done else "False", st.reason, st.message)
    conds.append(rolled)
    failure = load_failure(pods, predictor.STABLE, st.version) if stable_dep is not None else None
    conds.append(model_loaded(stable, st, failure))

    cst = rollout_state(canary_dep) if canary_dep is not None else None
    canary_failure = load_failure(pods, predictor.CANARY, cst.version) if cst is not None else None
    if canary is not None:
        if canary_resolution is None or not canary_resolution.ok:
            reason = canary_resolution.reason if canary_resolution else MODEL_VERSION_NOT_FOUND
            msg = canary_resolution.message if canary_resolution else ""
            conds.append(Condition(COND_CANARY_READY, "False", reason, msg))
        elif cst is not None and cst.version == canary.model_version and canary_failure:
            conds.append(
                Condition(COND_CANARY_READY, "False", canary_failure.reason, canary_failure.text)
            )
        elif cst is None or cst.version != canary.model_version:
            conds.append(
                Condition(
                    COND_CANARY_READY,
                    "False",
                    "Progressing",
                    f"Rolling out canary {canary.model_version}",
                )
            )
        else:
            conds.append(
                Condition(
                    COND_CANARY_READY, "True" if cst.done else "False", cst.reason, cst.message
                )
            )

    ready: Condition
    if not stable.ok:
        ready = Condition(COND_READY, "False", stable.reason, stable.message)
    elif rolled.status != "True" and failure is not None:
        ready = Condition(COND_READY, "False", failure.reason, failure.text)
    elif rolled.status != "True":
        ready = Condition(COND_READY, "False", rolled.reason, rolled.message)
    elif st.available + (cst.available if cst else 0) < 1:
        ready = Condition(
            COND_READY, "False", "NoAvailableReplicas", "No predictor replica is available"
        )
    else:
        ready = Condition(
            COND_READY, "True", "Ready", f"Serving {stable.served.name if stable.served else ''}"
        )
    conds.append(ready)

    existing = [
        c
        for c in old.get("conditions") or ()
        if not (canary is None and c.get("type") == COND_CANARY_READY)
    ]
    conditions = set_conditions(existing, conds, generation=generation, now=now)

    traffic = _traffic(st if stable_dep is not None else None, cst)
    model_name = (
        stable.served.spec.model
        if stable.served is not None
        else (spec.model.model or old.get("modelName"))
    )
    return {
        "observedGeneration": generation,
        "url": predictor.service_url(owner.name, owner.namespace),
        "modelName": model_name,
        "servingVersion": st.version,
        "canaryVersion": canary.model_version if canary is not None else None,
        "traffic": traffic or None,
        "replicas": sum(t["replicas"] for t in traffic),
        "readyReplicas": sum(t["readyReplicas"] for t in traffic),
        "conditions": conditions,
        "phase": derive_phase(conditions),
    }


def invalid_status(
    old_status: Mapping[str, Any] | None,
    generation: int | None,
    message: str,
    now: str | None = None,
) -> Manifest:
    conds = [
        Condition(COND_READY, "False", INVALID_SPEC, message),
        Condition(COND_MODEL_RESOLVED, "Unknown", INVALID_SPEC, message),
    ]
    conditions = set_conditions(
        (old_status or {}).get("conditions"), conds, generation=generation, now=now
    )
    return {"observedGeneration": generation, "conditions": conditions, "phase": PHASE_FAILED}


def derive_phase(conditions: Sequence[Mapping[str, Any]]) -> str:
    """For printing only: Ready, Degraded, Failed or Pending."""
    ready = get_condition(conditions, COND_READY)
    if ready is not None and ready.get("status") == "True":
        return PHASE_READY
    if ready is not None and ready.get("reason") == INVALID_SPEC:
        return PHASE_FAILED
    rolled = get_condition(conditions, COND_ROLLED_OUT)
    if rolled is not None and rolled.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        return PHASE_DEGRADED
    return PHASE_PENDING


Transition = Literal["promoted", "rolledBack"]


def canary_transition(
    old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any], stable: Resolution
) -> Transition | None:
    """A canary that was running and no longer is: promoted (the stable now targets its
    version) or rolled back (it does not)."""
    was = (old_status or {}).get("canaryVersion")
    if not was or new_status.get("canaryVersion"):
        return None
    if stable.served is not None and stable.served.name == was:
        return "promoted"
    return "rolledBack"


def served_version_changed(
    old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any]
) -> bool:
    """A rollout started: the stable Deployment now names a different ModelVersion."""
    new = new_status.get("servingVersion")
    return bool(new) and new != (old_status or {}).get("servingVersion")


def condition_status(status: Mapping[str, Any], type_: str) -> Status | None:
    c = get_condition(status.get("conditions"), type_)
    return None if c is None else c.get("status")
