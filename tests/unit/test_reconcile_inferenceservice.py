"""InferenceService reconcile decisions: observed dicts in, plan and status out."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubeloop.builders import predictor as b
from kubeloop.conditions import get_condition
from kubeloop.reconcile import inferenceservice as r
from kubeloop.settings import Settings
from kubeloop_runtime import api
from tests.unit.test_builders_predictor import mv_spec

SETTINGS = Settings()
OWNER = b.Owner(name="iris", namespace="ml", uid="uid-1")
NOW = "2024-01-01T00:00:00Z"


def mv(
    version: int,
    *,
    ready: bool = True,
    aliases: list[str] | None = None,
    gate: bool = True,
) -> dict[str, Any]:
    spec = mv_spec(version).wire()
    spec["gate"] = {"passed": gate, "message": "" if gate else "accuracy 0.5 < 0.9"}
    return {
        "metadata": {"name": f"iris-v{version}"},
        "spec": spec,
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "reason": "X"}
            ],
            "aliases": aliases or [],
        },
    }


def spec(**kw: Any) -> api.InferenceServiceSpec:
    kw.setdefault("model", {"modelVersion": "iris-v1"})
    return api.InferenceServiceSpec.model_validate(kw)


def observed(dep: dict[str, Any], *, ready: bool = True, generation: int = 1) -> dict[str, Any]:
    """What the API server returns for ``dep`` once the Deployment controller caught up."""
    out = copy.deepcopy(dep)
    n = out["spec"].get("replicas", 1)
    out["metadata"]["generation"] = generation
    out["status"] = {
        "observedGeneration": generation,
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n if ready else 0,
        "availableReplicas": n if ready else 0,
    }
    return out


def stable_dep(version: int = 1, replicas: int = 1, **kw: Any) -> dict[str, Any]:
    s = spec(replicas=replicas)
    served = b.ServedVersion(f"iris-v{version}", mv_spec(version))
    return observed(
        b.build_deployment(s, OWNER, served, b.STABLE, SETTINGS, replicas=replicas), **kw
    )


def canary_dep(version: int = 2, replicas: int = 1, **kw: Any) -> dict[str, Any]:
    s = spec()
    served = b.ServedVersion(f"iris-v{version}", mv_spec(version))
    return observed(
        b.build_deployment(s, OWNER, served, b.CANARY, SETTINGS, replicas=replicas), **kw
    )


# ----------------------------------------------------------------------------- spec


def test_parse_spec_rejects_a_rollout_that_cannot_progress() -> None:
    with pytest.raises(r.InvalidSpecError, match="maxSurge and maxUnavailable"):
        r.parse_spec(
            {"model": {"modelVersion": "a"}, "rollout": {"maxSurge": "0", "maxUnavailable": "0%"}}
        )
    with pytest.raises(r.InvalidSpecError, match=r"spec\.model"):
        r.parse_spec({"model": {"model": "iris"}})
    assert r.parse_spec({"model": {"modelVersion": "a"}}).replicas == 1


def test_desired_canary_comes_from_the_spec() -> None:
    assert r.desired_canary(spec(), {}) is None
    c = r.desired_canary(spec(canary={"modelVersion": "iris-v2", "trafficPercent": 25}), {})
    assert c is not None
    assert c.model_version == "iris-v2"
    assert c.traffic_percent == 25


def test_promotion_and_rollback_patches() -> None:
    assert r.promotion_patch(spec(), "iris-v2") == {
        "spec": {"model": {"modelVersion": "iris-v2"}, "canary": None}
    }
    by_alias = spec(model={"model": "iris", "alias": "production"})
    assert r.promotion_patch(by_alias, "iris-v2") == {
        "spec": {
            "model": {"modelVersion": "iris-v2", "model": None, "alias": None},
            "canary": None,
        }
    }
    assert r.rollback_patch() == {"spec": {"canary": None}}


# ----------------------------------------------------------------------------- resolution


def test_resolve_by_name() -> None:
    ref = spec().model
    assert r.resolve_stable(ref, []).reason == r.MODEL_VERSION_NOT_FOUND
    assert r.resolve_stable(ref, [mv(1, ready=False)]).reason == r.MODEL_VERSION_NOT_READY
    failed = r.resolve_stable(ref, [mv(1, gate=False)])
    assert failed.reason == r.MODEL_VERSION_NOT_READY
    assert "quality gate" in failed.message
    ok = r.resolve_stable(ref, [mv(2), mv(1)])
    assert ok.ok
    assert ok.served is not None
    assert ok.served.name == "iris-v1"
    assert ok.served.spec.version == 1


def test_resolve_by_alias_reads_confirmed_aliases() -> None:
    ref = spec(model={"model": "iris", "alias": "production"}).model
    none = r.resolve_stable(ref, [mv(1), mv(2)])
    assert none.reason == r.ALIAS_NOT_FOUND
    assert "production" in none.message
    # Asked for in spec only: not confirmed yet.
    asked = mv(2)
    asked["spec"]["aliases"] = ["production"]
    assert r.resolve_stable(ref, [mv(1), asked]).reason == r.ALIAS_NOT_FOUND
    res = r.resolve_stable(ref, [mv(1), mv(2, aliases=["production"])])
    assert res.served is not None
    assert res.served.name == "iris-v2"
    # Two holders (mid-move): wait rather than pick one.
    two = [mv(1, aliases=["production"]), mv(2, aliases=["production"])]
    assert r.resolve_stable(ref, two).reason == r.ALIAS_NOT_FOUND
    # The holder must also be Ready.
    not_ready = [mv(2, aliases=["production"], ready=False)]
    assert r.resolve_stable(ref, not_ready).reason == r.MODEL_VERSION_NOT_READY


# ----------------------------------------------------------------------------- rollout


def test_rollout_state_follows_the_deployment() -> None:
    assert not r.rollout_state(None).done
    assert r.rollout_state(stable_dep(replicas=2)).done
    dep = stable_dep(replicas=2)
    dep["metadata"]["generation"] = 2
    assert r.rollout_state(dep).reason == "Progressing"
    dep = stable_dep(replicas=2)
    dep["status"]["updatedReplicas"] = 1
    assert "1 of 2 replicas" in r.rollout_state(dep).message
    dep = stable_dep(replicas=2)
    dep["status"]["replicas"] = 3  # a surge pod of the old ReplicaSet is still there
    assert not r.rollout_state(dep).done
    dep = stable_dep(replicas=2, ready=False)
    assert "0 of 2 replicas" in r.rollout_state(dep).message
    dep = stable_dep(replicas=2)
    dep["status"]["updatedReplicas"] = 1
    dep["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    assert r.rollout_state(dep).reason == r.PROGRESS_DEADLINE_EXCEEDED
    assert r.rollout_state(stable_dep(version=3)).version == "iris-v3"


# ----------------------------------------------------------------------------- plan


def kinds(plan: r.Plan) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in plan.apply]


def deleted(plan: r.Plan) -> list[tuple[str, str]]:
    return [(d.kind, d.name) for d in plan.delete]


def plan(s: api.InferenceServiceSpec, mvs: list[dict[str, Any]], **obs: Any) -> r.Plan:
    canary = r.desired_canary(s, {})
    return r.plan_children(
        s,
        OWNER,
        SETTINGS,
        stable=r.resolve_stable(s.model, mvs),
        canary=canary,
        canary_resolution=r.resolve_canary(canary, mvs) if canary else None,
        stable_dep=obs.get("stable_dep"),
        canary_dep=obs.get("canary_dep"),
    )


def test_plan_simple_service() -> None:
    p = plan(spec(), [mv(1)])
    assert kinds(p) == [("Service", "iris-predictor"), ("Deployment", "iris-predictor")]
    assert ("HorizontalPodAutoscaler", "iris-predictor") in deleted(p)
    assert ("PodDisruptionBudget", "iris-predictor") in deleted(p)
    assert ("Deployment", "iris-predictor-canary") not in deleted(p)


def test_plan_keeps_serving_while_the_model_is_unresolved() -> None:
    p = plan(spec(replicas=2), [], stable_dep=stable_dep())
    assert kinds(p) == [("Service", "iris-predictor"), ("PodDisruptionBudget", "iris-predictor")]
    assert ("Deployment", "iris-predictor") not in deleted(p)
    # Nothing to protect or scale before the first Deployment exists.
    p = plan(spec(replicas=2, autoscaling={"minReplicas": 2}), [])
    assert kinds(p) == [("Service", "iris-predictor")]


def test_plan_hpa_and_pdb() -> None:
    s = spec(autoscaling={"minReplicas": 2, "maxReplicas": 6})
    p = plan(s, [mv(1)])
    assert ("HorizontalPodAutoscaler", "iris-predictor") in kinds(p)
    assert ("PodDisruptionBudget", "iris-predictor") in kinds(p)
    dep = next(o for o in p.apply if o["kind"] == "Deployment")
    assert "replicas" not in dep["spec"]
    p = plan(spec(replicas=3), [mv(1)])
    assert ("PodDisruptionBudget", "iris-predictor") in kinds(p)
    assert ("HorizontalPodAutoscaler", "iris-predictor") in deleted(p)


def test_plan_canary_replicas_follow_the_traffic_share() -> None:
    s = spec(replicas=3, canary={"modelVersion": "iris-v2", "trafficPercent": 25})
    p = plan(s, [mv(1), mv(2)])
    deps = {o["metadata"]["name"]: o for o in p.apply if o["kind"] == "Deployment"}
    assert deps["iris-predictor"]["spec"]["replicas"] == 3
    assert deps["iris-predictor-canary"]["spec"]["replicas"] == 1
    labels = deps["iris-predictor-canary"]["spec"]["template"]["metadata"]["labels"]
    assert labels[api.LABEL_MODELVERSION] == "iris-v2"
    assert labels[api.LABEL_ROLE] == "canary"
    # A canary whose ModelVersion is missing is not deployed (and nothing is deleted).
    p = plan(s, [mv(1)])
    assert ("Deployment", "iris-predictor-canary") not in kinds(p)
    assert ("Deployment", "iris-predictor-canary") not in deleted(p)


def test_plan_full_canary_scales_stable_down_only_once_the_canary_is_ready() -> None:
    s = spec(replicas=2, canary={"modelVersion": "iris-v2", "trafficPercent": 100})

    def replicas(p: r.Plan) -> dict[str, int]:
        return {
            o["metadata"]["name"]: o["spec"]["replicas"]
            for o in p.apply
            if o["kind"] == "Deployment"
        }

    assert replicas(plan(s, [mv(1), mv(2)])) == {"iris-predictor": 2, "iris-predictor-canary": 2}
    waiting = canary_dep(replicas=2, ready=False)
    assert replicas(plan(s, [mv(1), mv(2)], canary_dep=waiting))["iris-predictor"] == 2
    ready = canary_dep(replicas=2)
    assert replicas(plan(s, [mv(1), mv(2)], canary_dep=ready))["iris-predictor"] == 0


def test_plan_rollback_deletes_the_canary_at_once() -> None:
    p = plan(spec(), [mv(1), mv(2)], stable_dep=stable_dep(1), canary_dep=canary_dep(2))
    assert ("Deployment", "iris-predictor-canary") in deleted(p)


def test_plan_promotion_keeps_the_canary_until_stable_rolled_out() -> None:
    promoted = spec(model={"modelVersion": "iris-v2"})
    # The stable Deployment still serves v1: the canary (v2) keeps serving meanwhile.
    p = plan(promoted, [mv(1), mv(2)], stable_dep=stable_dep(1), canary_dep=canary_dep(2))
    assert ("Deployment", "iris-predictor-canary") not in deleted(p)
    rolling = stable_dep(2, ready=False)
    p = plan(promoted, [mv(1), mv(2)], stable_dep=rolling, canary_dep=canary_dep(2))
    assert ("Deployment", "iris-predictor-canary") not in deleted(p)
    p = plan(promoted, [mv(1), mv(2)], stable_dep=stable_dep(2), canary_dep=canary_dep(2))
    assert ("Deployment", "iris-predictor-canary") in deleted(p)


# ----------------------------------------------------------------------------- status


def status(
    s: api.InferenceServiceSpec,
    mvs: list[dict[str, Any]],
    old: dict[str, Any] | None = None,
    **obs: Any,
) -> dict[str, Any]:
    canary = r.desired_canary(s, old)
    return r.compute_status(
        s,
        OWNER,
        generation=4,
        old_status=old,
        stable=r.resolve_stable(s.model, mvs),
        canary=canary,
        canary_resolution=r.resolve_canary(canary, mvs) if canary else None,
        stable_dep=obs.get("stable_dep"),
        canary_dep=obs.get("canary_dep"),
        pods=obs.get("pods", ()),
        now=NOW,
    )


def cond(st: dict[str, Any], type_: str) -> tuple[str, str]:
    c = get_condition(st["conditions"], type_)
    assert c is not None, type_
    return c["status"], c["reason"]


def test_status_ready() -> None:
    st = status(spec(replicas=2), [mv(1)], stable_dep=stable_dep(1, replicas=2))
    assert cond(st, "Ready") == ("True", "Ready")
    assert cond(st, "ModelResolved") == ("True", r.RESOLVED)
    assert cond(st, "RolledOut") == ("True", "RolledOut")
    assert get_condition(st["conditions"], "CanaryReady") is None
    assert st["phase"] == "Ready"
    assert st["observedGeneration"] == 4
    assert st["url"] == "http://iris-predictor.ml.svc.cluster.local"
    assert st["modelName"] == "iris"
    assert st["servingVersion"] == "iris-v1"
    assert st["canaryVersion"] is None
    assert st["replicas"] == 2
    assert st["readyReplicas"] == 2
    assert st["traffic"] == [
        {
            "role": "stable",
            "modelVersion": "iris-v1",
            "percent": 100,
            "replicas": 2,
            "readyReplicas": 2,
        }
    ]
    assert all(c["observedGeneration"] == 4 for c in st["conditions"])


def test_status_not_found_and_not_ready() -> None:
    st = status(spec(), [])
    assert cond(st, "Ready") == ("False", r.MODEL_VERSION_NOT_FOUND)
    assert cond(st, "ModelResolved") == ("False", r.MODEL_VERSION_NOT_FOUND)
    assert st["phase"] == "Pending"
    assert st["servingVersion"] is None
    st = status(spec(), [mv(1, ready=False)])
    assert cond(st, "Ready") == ("False", r.MODEL_VERSION_NOT_READY)
    st = status(spec(model={"model": "iris", "alias": "production"}), [mv(1)])
    assert cond(st, "Ready") == ("False", r.ALIAS_NOT_FOUND)


def test_status_rolling_and_deadline() -> None:
    v2 = spec(model={"modelVersion": "iris-v2"})
    st = status(v2, [mv(2)], stable_dep=stable_dep(2, ready=False))
    assert cond(st, "RolledOut") == ("False", "Progressing")
    assert cond(st, "Ready") == ("False", "Progressing")
    stuck = stable_dep(2, ready=False)
    stuck["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    st = status(v2, [mv(2)], stable_dep=stuck)
    assert cond(st, "RolledOut") == ("False", r.PROGRESS_DEADLINE_EXCEEDED)
    assert st["phase"] == "Degraded"
    # Not yet applied: the Deployment still names the old version.
    st = status(spec(model={"modelVersion": "iris-v2"}), [mv(1), mv(2)], stable_dep=stable_dep(1))
    assert cond(st, "RolledOut") == ("False", "Progressing")
    # Zero replicas: resolved and rolled out, but nothing serves.
    st = status(spec(replicas=0), [mv(1)], stable_dep=stable_dep(1, replicas=0))
    assert cond(st, "Ready") == ("False", "NoAvailableReplicas")


def test_status_canary() -> None:
    s = spec(replicas=3, canary={"modelVersion": "iris-v2", "trafficPercent": 25})
    st = status(
        s,
        [mv(1), mv(2)],
        stable_dep=stable_dep(1, replicas=3),
        canary_dep=canary_dep(2, replicas=1),
    )
    assert cond(st, "CanaryReady") == ("True", "RolledOut")
    assert st["canaryVersion"] == "iris-v2"
    assert {t["role"]: t["percent"] for t in st["traffic"]} == {"stable": 75, "canary": 25}
    assert st["replicas"] == 4
    st = status(s, [mv(1)], stable_dep=stable_dep(1, replicas=3))
    assert cond(st, "CanaryReady") == ("False", r.MODEL_VERSION_NOT_FOUND)
    assert cond(st, "Ready") == ("True", "Ready")  # the stable keeps serving
    # Once the canary is gone from the spec, its condition goes too.
    gone = status(spec(replicas=3), [mv(1)], old=st, stable_dep=stable_dep(1, replicas=3))
    assert get_condition(gone["conditions"], "CanaryReady") is None


def test_status_is_stable_when_nothing_changes() -> None:
    first = status(spec(), [mv(1)], stable_dep=stable_dep(1))
    again = r.compute_status(
        spec(),
        OWNER,
        generation=4,
        old_status=first,
        stable=r.resolve_stable(spec().model, [mv(1)]),
        canary=None,
        canary_resolution=None,
        stable_dep=stable_dep(1),
        canary_dep=None,
        now="2030-01-01T00:00:00Z",
    )
    assert again == first  # lastTransitionTime does not move


def test_invalid_status() -> None:
    st = r.invalid_status({}, 3, "spec.rollout: bad", now=NOW)
    assert cond(st, "Ready") == ("False", r.INVALID_SPEC)
    assert st["phase"] == "Failed"


def test_transitions() -> None:
    assert r.served_version_changed({}, {"servingVersion": "iris-v1"})
    assert r.served_version_changed({"servingVersion": "iris-v1"}, {"servingVersion": "iris-v2"})
    assert not r.served_version_changed(
        {"servingVersion": "iris-v1"}, {"servingVersion": "iris-v1"}
    )
    assert not r.served_version_changed({"servingVersion": "iris-v1"}, {"servingVersion": None})
    v2 = r.resolve_stable(spec(model={"modelVersion": "iris-v2"}).model, [mv(2)])
    v1 = r.resolve_stable(spec().model, [mv(1)])
    old = {"canaryVersion": "iris-v2"}
    assert r.canary_transition(old, {"canaryVersion": None}, v2) == "promoted"
    assert r.canary_transition(old, {"canaryVersion": None}, v1) == "rolledBack"
    assert r.canary_transition(old, {"canaryVersion": "iris-v2"}, v1) is None
    assert r.canary_transition({}, {"canaryVersion": None}, v1) is None


# ----------------------------------------------------------------------------- model loading

REFUSAL = api.StartupFailure(
    reason="ObjectNotFound",
    message="ModelVersion iris v1: spec.artifact.uri: object s3://b/m.skops does not exist",
)


def pod(
    name: str,
    *,
    version: int = 1,
    role: str = "stable",
    ready: bool = False,
    message: str | None = None,
    exit_code: int = 2,
    last: bool = True,
) -> dict[str, Any]:
    """A predictor pod as the kubelet reports it: crash-looping (its refusal in
    ``lastState``) or, with ``last=False``, terminated now."""
    term = {"exitCode": exit_code, "reason": "Error", "message": message or ""}
    cs: dict[str, Any] = {"name": "predictor", "ready": ready, "restartCount": 3}
    if last:
        cs["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
        cs["lastState"] = {"terminated": term}
    else:
        cs["state"] = {"terminated": term}
    return {
        "metadata": {
            "name": name,
            "labels": {api.LABEL_ROLE: role, api.LABEL_MODELVERSION: f"iris-v{version}"},
        },
        "status": {"containerStatuses": [cs]},
    }


def test_a_pods_refusal_is_read_from_its_termination_message() -> None:
    f = r.pod_load_failure(pod("p-1", message=REFUSAL.model_dump_json()))
    assert f == r.LoadFailure("p-1", "ObjectNotFound", REFUSAL.message)
    assert f.text == f"Pod p-1: {REFUSAL.message}"
    now = r.pod_load_failure(pod("p-1", message=REFUSAL.model_dump_json(), last=False))
    assert now is not None and now.reason == "ObjectNotFound"
    # Another exit (an OOM kill, a log tail as message) is told by its code.
    other = r.pod_load_failure(pod("p-2", message="Traceback ...", exit_code=137))
    assert other == r.LoadFailure(
        "p-2", r.PREDICTOR_FAILED, "the predictor container exited with code 137 (Error)"
    )
    # Recovered: ready now, the last termination is history.
    assert r.pod_load_failure(pod("p-3", ready=True, message=REFUSAL.model_dump_json())) is None
    assert r.pod_load_failure(pod("p-4", message="", exit_code=0)) is None
    going = pod("p-5", message=REFUSAL.model_dump_json())
    going["metadata"]["deletionTimestamp"] = NOW
    assert r.pod_load_failure(going) is None


def test_load_failure_looks_at_the_pods_of_the_role_and_version() -> None:
    refused = REFUSAL.model_dump_json()
    pods = [
        pod("b", message=refused),
        pod("a", message=refused),
        pod("old", version=0, message=refused),
        pod("can", role="canary", version=2, message=refused),
    ]
    assert r.load_failure(pods, "stable", "iris-v1") == r.LoadFailure(
        "a", "ObjectNotFound", REFUSAL.message
    )
    assert r.load_failure(pods, "stable", "iris-v2") is None
    assert r.load_failure(pods, "canary", "iris-v2") is not None
    assert r.load_failure(pods, "stable", None) is None


def test_status_model_loaded_and_ready_name_the_refusal_and_clear_on_recovery() -> None:
    refused = REFUSAL.model_dump_json()
    st = status(
        spec(), [mv(1)], stable_dep=stable_dep(1, ready=False), pods=[pod("p", message=refused)]
    )
    c = get_condition(st["conditions"], "ModelLoaded")
    assert c is not None and (c["status"], c["reason"]) == ("False", "ObjectNotFound")
    assert "spec.artifact.uri" in c["message"] and "does not exist" in c["message"]
    assert c["message"].startswith("Pod p: ")
    assert cond(st, "Ready") == ("False", "ObjectNotFound")
    assert get_condition(st["conditions"], "Ready")["message"] == c["message"]
    # The pod loads it after all (the object is back): the conditions clear.
    healed = status(
        spec(),
        [mv(1)],
        old=st,
        stable_dep=stable_dep(1),
        pods=[pod("p", ready=True, message=refused)],
    )
    assert cond(healed, "ModelLoaded") == ("True", r.LOADED)
    assert cond(healed, "Ready") == ("True", "Ready")
    # Before any pod has loaded or refused: Unknown, and Ready says the rollout progresses.
    fresh = status(spec(), [mv(1)], stable_dep=stable_dep(1, ready=False))
    assert cond(fresh, "ModelLoaded") == ("Unknown", r.LOADING)
    assert cond(fresh, "Ready") == ("False", "Progressing")
    assert cond(status(spec(), []), "ModelLoaded") == ("Unknown", r.LOADING)


def test_status_canary_refusal_shows_on_canary_ready() -> None:
    s = spec(replicas=3, canary={"modelVersion": "iris-v2", "trafficPercent": 25})
    st = status(
        s,
        [mv(1), mv(2)],
        stable_dep=stable_dep(1, replicas=3),
        canary_dep=canary_dep(2, replicas=1, ready=False),
        pods=[pod("c", role="canary", version=2, message=REFUSAL.model_dump_json())],
    )
    assert cond(st, "CanaryReady") == ("False", "ObjectNotFound")
    assert cond(st, "ModelLoaded") == ("True", r.LOADED)  # the stable pods are fine
    assert cond(st, "Ready") == ("True", "Ready")


def test_pod_signal_changes_only_with_readiness_or_a_refusal() -> None:
    refused = pod("p", message=REFUSAL.model_dump_json())
    relabelled = copy.deepcopy(refused)
    relabelled["metadata"]["resourceVersion"] = "2"
    relabelled["status"]["containerStatuses"][0]["restartCount"] = 4
    assert r.pod_signal(refused) == r.pod_signal(relabelled)
    assert r.pod_signal(refused) != r.pod_signal(pod("p", ready=True))
    assert r.pod_signal(None) == ()
