"""TrainingJob controller: run one training Job, then register its model as a ModelVersion.

Thin: parse the spec, read the world (the TrainingJob, its Job, the Job's pods and the
ModelVersion it may already have registered), let :mod:`kubeloop.reconcile.trainingjob`
decide, write. Level-based and idempotent: the Job has a deterministic name (a second
create is a 409), and the ModelVersion is looked up by lineage before a version number is
allocated, so a restart at any point creates neither twice.

What enqueues a TrainingJob (see :mod:`kubeloop.manager`): any change of it, every change
of a Job or pod labelled with ``kubeloop.io/trainingjob`` (the run's progress flows to the
parent through its children), the operator-level resync, and, while the run is unfinished,
a requeue after ``settings.poll_interval`` seconds as a safety net: a delayed key in the
work queue, not a per-object timer, so nothing puts a finalizer on the TrainingJob.

Reads come from the caches. Registration is the exception: the version number is allocated
from a live LIST of the model's versions, because a cache a few milliseconds behind would
only cost retries there, but a stale view of "did this run already register?" must never
create a second version.
"""

from __future__ import annotations

import json
from typing import Any

import kopf
from pydantic import ValidationError

from kubeloop import registry
from kubeloop.builders.job import build_job, job_name, output_uri
from kubeloop.builders.modelversion import (
    IncompleteResultError,
    build_model_version,
    model_version_spec,
)
from kubeloop.client import CachedClient
from kubeloop.conditions import MESSAGE_MAX, Condition, set_conditions
from kubeloop.controller import Result
from kubeloop.handlers import _events
from kubeloop.handlers._common import Logger, object_logger, release_legacy_finalizer, state_of
from kubeloop.metrics import OperatorMetrics
from kubeloop.reconcile.trainingjob import (
    Action,
    Phase,
    RunState,
    desired_trainingjob_status,
    duration_seconds,
    is_finished,
    job_missing_state,
    next_action,
    observe,
    outcome_label,
    registration_of,
    state_from_registration,
    trainingjob_phase,
)
from kubeloop.settings import Settings
from kubeloop_runtime import api
from kubeloop_runtime.train.spec import format_validation_error

KIND = "TrainingJob"
MAX_ALLOCATION_ATTEMPTS = 20


# ------------------------------------------------------------------------ registration


def _full_result(
    result: api.TrainingResult, settings: Settings, namespace: str, name: str, logger: Any
) -> api.TrainingResult:
    """The result from ``result.json`` in the store when the termination message had to
    drop fields to fit in 4 KiB and the operator can see the store; else ``result``."""
    if result.signature is not None or not settings.artifact_root:
        return result
    from kubeloop_runtime import artifacts  # noqa: PLC0415 (stdlib-only, lazily)

    try:
        directory = artifacts.resolve(output_uri(settings, namespace, name), settings.artifact_root)
        full = api.TrainingResult.model_validate(
            json.loads((directory / "result.json").read_text(encoding="utf-8"))
        )
    except (OSError, ValueError, ValidationError, artifacts.ArtifactError) as e:
        logger.warning("Could not read the full result.json of %s: %s", name, e)
        return result
    return full


def _register(
    kube: CachedClient,
    *,
    tj: dict[str, Any],
    spec: api.TrainingJobSpec,
    result: api.TrainingResult,
    image: str,
    logger: Any,
) -> dict[str, Any]:
    """Create the run's ModelVersion ``<model>-v<N>``, or find the one it already made.

    Allocation without a lock: list the model's versions, take max+1 and *create* under
    the deterministic name; the API server refuses a second object of that name (409), and
    then the holder is either ours (adopt it: a restart after a crash) or someone else's
    (try the next number).
    """
    meta = tj["metadata"]
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    floor = 1
    for _ in range(MAX_ALLOCATION_ATTEMPTS):
        existing = kube.kube.list(  # live: see the module docstring
            api.API_VERSION, "ModelVersion", ns, labels={api.LABEL_MODEL: spec.model}
        )
        mine = registry.find_registered(existing, name, uid)
        if mine is not None:
            return dict(mine)
        version = max(registry.next_version(existing, spec.model), floor)
        mv_spec = model_version_spec(
            trainingjob=name, spec=spec, result=result, version=version, image=image
        )
        obj = build_model_version(ns, mv_spec, trainingjob_uid=uid)
        created = kube.create(obj)
        if created is not None:
            mv_name = obj["metadata"]["name"]
            logger.info("Created ModelVersion %s/%s", ns, mv_name)
            _events.info(
                tj,
                reason="Registered",
                message=f"Registered ModelVersion {mv_name} (version {version})",
            )
            return created
        other = kube.kube.get(api.API_VERSION, "ModelVersion", ns, obj["metadata"]["name"])
        if other is not None and registry.registered_by(other, name, uid):
            return other
        floor = version + 1
    raise kopf.TemporaryError(
        f"could not allocate a version of model {spec.model} after"
        f" {MAX_ALLOCATION_ATTEMPTS} attempts (too many concurrent registrations)",
        delay=1,
    )


# --------------------------------------------------------------------------- reconcile


def _invalid(kube: CachedClient, tj: dict[str, Any], error: ValidationError) -> None:
    meta, old = tj["metadata"], tj.get("status") or {}
    message = format_validation_error(error)[:MESSAGE_MAX]
    conditions = set_conditions(
        old.get("conditions"),
        [Condition(api.COND_SUCCEEDED, "False", "InvalidSpec", message)],
        generation=meta.get("generation"),
    )
    status = {
        "conditions": conditions,
        "phase": trainingjob_phase(conditions),
        "reason": "InvalidSpec",
        "message": message,
        "observedGeneration": meta.get("generation"),
    }
    if any(old.get(k) != v for k, v in status.items()):
        kube.patch_status(api.API_VERSION, KIND, meta["namespace"], meta["name"], status)
    raise kopf.PermanentError(f"invalid TrainingJob spec: {message}")


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or [])


def reconcile_key(memo: Any, namespace: str, name: str) -> Result:
    """The controller's entry point (the work queue calls it; it counts and times it)."""
    return reconcile(namespace, name, memo, object_logger(KIND, namespace, name))


def reconcile(namespace: str, name: str, memo: Any, logger: Logger) -> Result:
    """Reconcile TrainingJob ``namespace/name`` (serialised per object in this process)."""
    with state_of(memo).trainingjob_locks(namespace, name):
        kube: CachedClient = memo.client
        tj = kube.get(api.API_VERSION, KIND, namespace, name)
        if tj is None:
            return Result()
        tj = release_legacy_finalizer(kube, tj) or tj
        if tj["metadata"].get("deletionTimestamp"):
            return Result()
        status = _reconcile(kube, memo.settings, memo.metrics, tj, logger)
        if status is not None and not is_finished(status):
            return Result(requeue_after=memo.settings.poll_interval)
        return Result()


def _reconcile(
    kube: CachedClient,
    settings: Settings,
    metrics: OperatorMetrics,
    tj: dict[str, Any],
    logger: Any,
) -> dict[str, Any] | None:
    """Returns the status the TrainingJob has now (None: its spec is invalid)."""
    meta = tj["metadata"]
    ns, name, uid, generation = meta["namespace"], meta["name"], meta["uid"], meta.get("generation")
    old = tj.get("status") or {}
    try:
        spec = api.TrainingJobSpec.model_validate(tj.get("spec") or {})
    except ValidationError as e:
        _invalid(kube, tj, e)
        return None
    metrics.saw_trainingjob(ns, spec.model)  # its run counters exist at 0 before it ends
    if is_finished(old) and old.get("observedGeneration") == generation:
        return old  # the run is over; its Job may be gone (TTL), never start another

    jname = job_name(name)
    registered = registry.find_registered(
        kube.list(api.API_VERSION, "ModelVersion", ns, labels={api.LABEL_TRAININGJOB: name}),
        name,
        uid,
    )
    job = kube.get("batch/v1", "Job", ns, jname)
    if job is not None and not _owned_by(job, uid):
        raise kopf.TemporaryError(
            f"Job {jname} exists but does not belong to this TrainingJob (uid {uid});"
            " waiting for it to be deleted",
            delay=max(settings.backoff, 1.0),
        )
    action = next_action(old, job_exists=job is not None, registered=registered is not None)
    if action is Action.DONE:
        return old
    if action is Action.CREATE_JOB:
        # The champion gate (closed loop): hand the champion ModelVersion to the trainer.
        champion = (
            kube.get(api.API_VERSION, "ModelVersion", ns, spec.champion) if spec.champion else None
        )
        # Data validation's reference version, when it is another one than the champion.
        ref_name = spec.validation_reference
        reference = (
            kube.get(api.API_VERSION, "ModelVersion", ns, ref_name)
            if ref_name is not None and ref_name != spec.champion
            else None
        )
        created = kube.create(
            build_job(name, ns, uid, spec, settings, champion=champion, reference=reference)
        )
        if created is not None:
            logger.info("Created Job %s/%s", ns, jname)
            _events.info(tj, reason="JobCreated", message=f"Created Job {jname}")
            job = created
        else:  # 409: there already, and not in the cache yet (or not labelled as ours)
            job = kube.kube.get("batch/v1", "Job", ns, jname)
        run = observe(job, [])
    elif action is Action.OBSERVE:
        assert job is not None
        job_uid = job["metadata"]["uid"]
        pods = [
            p
            for p in kube.list("v1", "Pod", ns, labels={api.LABEL_TRAININGJOB: name})
            if _owned_by(p, job_uid)
        ]
        run = observe(job, pods)
        if run.result is not None and run.finished:
            run = _with_full_result(run, settings, ns, name, logger)
        if run.registrable and registered is None:
            assert run.result is not None
            image = job["spec"]["template"]["spec"]["containers"][0].get("image", "")
            try:
                registered = _register(
                    kube, tj=tj, spec=spec, result=run.result, image=image, logger=logger
                )
            except (IncompleteResultError, ValidationError) as e:
                run = RunState(
                    Phase.FAILED,
                    "InvalidResult",
                    f"the training result cannot be registered: {e}"[:1024],
                    run.start_time,
                    run.completion_time,
                    run.terminated,
                    None,
                )
    elif action is Action.FROM_REGISTRATION:
        run = state_from_registration(registration_of(registered))
    else:
        run = job_missing_state(jname)

    status = desired_trainingjob_status(
        old=old,
        generation=generation,
        job_name=jname,
        job_exists=job is not None or action is not Action.CREATE_JOB,
        run=run,
        registration=registration_of(registered),
    )
    if any(old.get(k) != v for k, v in status.items()):
        kube.patch_status(api.API_VERSION, KIND, ns, name, status)
    if is_finished(status) and not is_finished(old):
        _finished(tj, spec, status, metrics, logger)
    return status


def _with_full_result(
    run: RunState, settings: Settings, ns: str, name: str, logger: Any
) -> RunState:
    assert run.result is not None
    full = _full_result(run.result, settings, ns, name, logger)
    if full is run.result:
        return run
    return RunState(
        run.phase,
        run.reason,
        run.message,
        run.start_time,
        run.completion_time,
        run.terminated,
        full,
    )


def _finished(
    tj: dict[str, Any],
    spec: api.TrainingJobSpec,
    status: dict[str, Any],
    metrics: OperatorMetrics,
    logger: Any,
) -> None:
    ns = tj["metadata"]["namespace"]
    outcome = outcome_label(status)
    metrics.training_runs_total.labels(ns, spec.model, outcome).inc()
    seconds = duration_seconds(status.get("startTime"), status.get("completionTime"))
    if seconds is not None:
        metrics.training_duration_seconds.labels(ns, spec.model).observe(seconds)
    reason, message = str(status.get("reason", "")), str(status.get("message", ""))
    if outcome == "succeeded":
        logger.info("TrainingJob succeeded: %s", message)
        _events.info(tj, reason=reason, message=message)
    else:
        logger.warning("TrainingJob failed (%s): %s", reason, message)
        _events.warn(tj, reason=reason, message=message)
