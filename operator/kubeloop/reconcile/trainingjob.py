"""TrainingJob reconciliation, the pure part: observed Job and pods -> what happened.

The handler reads the TrainingJob, its Job, the Job's pods and the ModelVersion it may
already have registered; :func:`observe` turns the Job and pods into a :class:`RunState`,
and :func:`desired_trainingjob_status` turns that (plus the registration) into the status to write.
Nothing here does I/O, so every decision is unit-tested.

Outcomes (``status.reason`` and the reason of the ``Succeeded`` condition):

* ``Trained`` — the Job completed and the ModelVersion is registered;
* ``QualityGateFailed`` — the model was trained but missed a threshold; it is registered
  with ``gate.passed: false`` ("registered but never served");
* ``InvalidSpec``, ``DataError``, ``DataValidationFailed``, ``TrainingError`` — from the
  container's termination message, when the trainer said why;
* ``DeadlineExceeded``, ``BackoffLimitExceeded``, ``OOMKilled``, ``JobFailed`` — from the
  Job or the container when the trainer could not say;
* ``ResultMissing`` — the Job completed but left no readable result;
* ``JobMissing`` — the Job disappeared before its outcome was read.

Size (~440 lines): one kind's pure decisions, most of it the outcomes above; ``observe``
and the status stay together so that each reason lives beside the condition reporting it.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kubeloop.builders.job import CONTAINER
from kubeloop.conditions import Condition, get_condition, set_conditions
from kubeloop.manifest import Obj
from kubeloop_runtime import api, rfc3339

COND_JOB_CREATED = "JobCreated"
COND_REGISTERED = "Registered"
COND_SUSPENDED = "Suspended"
COND_DATA_VALIDATED = "DataValidated"

REASON_TRAINED = "Trained"
REASON_RESULT_MISSING = "ResultMissing"
REASON_JOB_MISSING = "JobMissing"


class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class Terminated:
    """The training container's last termination, as the kubelet reported it."""

    pod: str
    exit_code: int
    reason: str
    message: str
    finished_at: str | None


@dataclass(frozen=True)
class RunState:
    """What the Job and its pods say about the run."""

    phase: Phase
    reason: str
    message: str
    start_time: str | None = None
    completion_time: str | None = None
    terminated: Terminated | None = None
    result: api.TrainingResult | None = None

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.SUCCEEDED, Phase.FAILED)

    @property
    def registrable(self) -> bool:
        """Whether the run produced a model to register (trained, or trained but gated)."""
        r = self.result
        if r is None or r.artifact is None:
            return False
        if self.phase is Phase.SUCCEEDED:
            return r.succeeded
        return self.phase is Phase.FAILED and r.reason == api.REASON_QUALITY_GATE_FAILED


# ----------------------------------------------------------------------- the result


def parse_result(message: str | None) -> api.TrainingResult | None:
    """The TrainingResult in a termination message; None when there is none to read.

    The trainer writes one JSON line; a message with log lines around it (e.g. with
    ``FallbackToLogsOnError``) is searched from the end for a line that parses.
    """
    if not message or not message.strip():
        return None
    candidates = [message.strip(), *reversed(message.strip().splitlines())]
    for candidate in candidates:
        text = candidate.strip()
        if not text.startswith("{"):
            continue
        try:
            return api.TrainingResult.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            continue
    return None


def _job_condition(job: Obj, type_: str) -> Mapping[str, Any] | None:
    c = get_condition((job.get("status") or {}).get("conditions"), type_)
    return c if c is not None and c.get("status") == "True" else None


def _created(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def last_termination(pods: Sequence[Obj]) -> Terminated | None:
    """The most recent termination of the training container among the Job's pods.

    A succeeded pod wins over failed ones (with retries, the last attempt is the one that
    completed); otherwise the newest pod's termination.
    """
    found: list[tuple[int, str, Terminated]] = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != CONTAINER:
                continue
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
                "terminated"
            )
            if not term:
                continue
            t = Terminated(
                pod=str((pod.get("metadata") or {}).get("name", "")),
                exit_code=int(term.get("exitCode", -1)),
                reason=str(term.get("reason") or ""),
                message=str(term.get("message") or ""),
                finished_at=term.get("finishedAt"),
            )
            found.append((1 if t.exit_code == 0 else 0, _created(pod), t))
    if not found:
        return None
    return max(found, key=lambda x: (x[0], x[1]))[2]


def _running(job: Obj, pods: Sequence[Obj]) -> bool:
    active = ((job.get("status") or {}).get("active") or 0) > 0
    return active and any((p.get("status") or {}).get("phase") == "Running" for p in pods)


def observe(job: Obj | None, pods: Sequence[Obj]) -> RunState:
    """What the Job (None: not created yet) and its pods say about the run."""
    if job is None:
        return RunState(Phase.PENDING, "JobPending", "the training Job is not created yet")
    status = job.get("status") or {}
    start = status.get("startTime")
    term = last_termination(pods)
    result = parse_result(term.message) if term is not None else None

    complete = _job_condition(job, "Complete")
    if complete is not None:
        completion = status.get("completionTime") or complete.get("lastTransitionTime")
        if result is None:
            return RunState(
                Phase.FAILED,
                REASON_RESULT_MISSING,
                "the training Job completed but its pod left no readable result in the"
                " termination message",
                start,
                completion,
                term,
                None,
            )
        return RunState(
            Phase.SUCCEEDED,
            result.reason or REASON_TRAINED,
            result.message or "trained",
            start,
            completion,
            term,
            result,
        )

    failed = _job_condition(job, "Failed")
    if failed is not None:
        completion = failed.get("lastTransitionTime") or (term.finished_at if term else None)
        job_reason = str(failed.get("reason") or "JobFailed")
        job_message = str(failed.get("message") or "the training Job failed")
        if job_reason == "DeadlineExceeded":
            reason, message = job_reason, job_message
        elif result is not None and not result.succeeded:
            reason, message = result.reason, result.message or job_message
        elif term is not None and term.reason == "OOMKilled":
            reason = "OOMKilled"
            message = f"the training container ran out of memory (pod {term.pod}); {job_message}"
        else:
            reason = job_reason if job_reason != "PodFailurePolicy" else "JobFailed"
            detail = (
                f"; the container exited with code {term.exit_code}"
                f"{' (' + term.reason + ')' if term.reason else ''} in pod {term.pod}"
                if term is not None
                else ""
            )
            message = f"{job_message}{detail}"
        return RunState(Phase.FAILED, reason, message, start, completion, term, result)

    if _job_condition(job, "Suspended") is not None or (job.get("spec") or {}).get("suspend"):
        return RunState(
            Phase.SUSPENDED,
            "Suspended",
            "the training Job is suspended (runPolicy.suspend); no pod runs until it resumes",
            start,
        )
    if _running(job, pods):
        return RunState(Phase.RUNNING, "Running", "the training pod is running", start)
    failed_before = (
        f"; last attempt failed with exit code {term.exit_code}"
        if term is not None and term.exit_code != 0
        else ""
    )
    return RunState(
        Phase.PENDING,
        "PodPending",
        f"waiting for the training pod to start{failed_before}",
        start,
    )


# ------------------------------------------------------------------------ the status


@dataclass(frozen=True)
class Registration:
    """The ModelVersion this run registered (None fields: not registered)."""

    name: str | None = None
    version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    gate: dict[str, Any] | None = None


def registration_of(mv: Obj | None) -> Registration:
    if mv is None:
        return Registration()
    spec = mv.get("spec") or {}
    return Registration(
        name=str((mv.get("metadata") or {}).get("name")),
        version=int(spec.get("version", 0)) or None,
        metrics={k: float(v) for k, v in (spec.get("metrics") or {}).items()},
        gate=dict(spec["gate"]) if isinstance(spec.get("gate"), dict) else None,
    )


def is_finished(status: Obj | None) -> bool:
    """Whether a TrainingJob status already records the end of the run."""
    c = get_condition((status or {}).get("conditions"), api.COND_SUCCEEDED)
    return c is not None and c.get("status") in ("True", "False")


def trainingjob_phase(conditions: Sequence[Mapping[str, Any]] | None) -> str:
    """The printed phase, derived from the conditions (never branched on)."""
    c = get_condition(conditions, api.COND_SUCCEEDED)
    if c is None:
        return Phase.PENDING.value
    if c.get("status") == "True":
        return Phase.SUCCEEDED.value
    if c.get("status") == "False":
        return Phase.FAILED.value
    return Phase.RUNNING.value if c.get("reason") == "Running" else Phase.PENDING.value


def desired_trainingjob_status(
    *,
    old: Obj | None,
    generation: int | None,
    job_name: str,
    job_exists: bool,
    run: RunState,
    registration: Registration,
    now: str | None = None,
) -> dict[str, Any]:
    """The status to write for what was observed (a full replacement of our fields)."""
    old = old or {}
    conds: list[Condition] = [
        Condition(COND_JOB_CREATED, "True", "JobCreated", f"created Job {job_name}")
        if job_exists
        else Condition(COND_JOB_CREATED, "False", "JobPending", "the Job is not created yet")
    ]
    if run.phase is Phase.SUSPENDED:
        conds.append(Condition(COND_SUSPENDED, "True", "Suspended", run.message))
    elif get_condition(old.get("conditions"), COND_SUSPENDED) is not None:
        conds.append(Condition(COND_SUSPENDED, "False", "Resumed", "the Job is not suspended"))

    checked = run.result.validation if run.result is not None else None
    if checked is not None:
        conds.append(
            Condition(COND_DATA_VALIDATED, "True", "NoAnomalies", checked.summary())
            if checked.passed
            else Condition(COND_DATA_VALIDATED, "False", "AnomaliesFound", checked.summary())
        )

    if registration.name is not None:
        conds.append(
            Condition(
                COND_REGISTERED,
                "True",
                "ModelVersionCreated",
                f"registered ModelVersion {registration.name}",
            )
        )
    elif run.finished:
        conds.append(
            Condition(COND_REGISTERED, "False", run.reason, "the run produced no model to register")
        )
    else:
        conds.append(Condition(COND_REGISTERED, "Unknown", "Training", "waiting for the run"))

    status: dict[str, Any] = {"jobName": job_name}
    gated = registration.gate is not None and registration.gate.get("passed") is False
    if run.phase is Phase.SUCCEEDED and registration.name is not None and not gated:
        succeeded = Condition(
            api.COND_SUCCEEDED,
            "True",
            REASON_TRAINED,
            f"trained and registered ModelVersion {registration.name}",
        )
        status.update(reason=REASON_TRAINED, message=run.message)
    elif run.finished and (gated or run.reason == api.REASON_QUALITY_GATE_FAILED):
        message = (registration.gate or {}).get("message") or run.message
        where = f" (registered as {registration.name}, never served)" if registration.name else ""
        succeeded = Condition(
            api.COND_SUCCEEDED, "False", api.REASON_QUALITY_GATE_FAILED, f"{message}{where}"
        )
        status.update(reason=api.REASON_QUALITY_GATE_FAILED, message=f"{message}{where}")
    elif run.phase is Phase.FAILED:
        succeeded = Condition(api.COND_SUCCEEDED, "False", run.reason, run.message)
        status.update(reason=run.reason, message=run.message)
    elif run.phase is Phase.SUCCEEDED:
        # Trained, not yet registered: the handler registers next.
        succeeded = Condition(api.COND_SUCCEEDED, "Unknown", "Registering", run.message)
        status.update(reason="Registering", message=run.message)
    else:
        succeeded = Condition(api.COND_SUCCEEDED, "Unknown", run.phase.value, run.message)
        status.update(reason=run.phase.value, message=run.message)
    conds.append(succeeded)

    conditions = set_conditions(old.get("conditions"), conds, generation=generation, now=now)
    status["conditions"] = conditions
    status["phase"] = trainingjob_phase(conditions)
    if generation is not None:
        status["observedGeneration"] = generation
    if run.start_time:
        status["startTime"] = run.start_time
    if run.finished and run.completion_time:
        status["completionTime"] = run.completion_time
    metrics = registration.metrics or (run.result.metrics if run.result else {})
    if metrics:
        status["metrics"] = {k: v for k, v in metrics.items() if _finite(v)}
    if registration.name is not None:
        status["modelVersion"] = registration.name
        status["version"] = registration.version
    gate = registration.gate or (
        run.result.gate.wire() if run.result is not None and run.result.gate else None
    )
    if gate is not None:
        status["gate"] = {"passed": bool(gate.get("passed")), "message": gate.get("message", "")}
    if checked is not None:
        status["validation"] = checked.wire()
    status["message"] = str(status.get("message", ""))[:1024]
    return status


class Action(enum.StrEnum):
    DONE = "done"  # the status records the end of the run: touch nothing
    CREATE_JOB = "create-job"
    OBSERVE = "observe"  # the Job exists: follow it
    FROM_REGISTRATION = "from-registration"  # the Job is gone but the version is registered
    JOB_MISSING = "job-missing"  # the Job is gone and nothing was registered


def next_action(status: Obj | None, *, job_exists: bool, registered: bool) -> Action:
    """What the handler does next, from the recorded status and what exists."""
    if is_finished(status):
        return Action.DONE
    if job_exists:
        return Action.OBSERVE
    if registered:
        return Action.FROM_REGISTRATION
    created = get_condition((status or {}).get("conditions"), COND_JOB_CREATED)
    if created is not None and created.get("status") == "True":
        return Action.JOB_MISSING
    return Action.CREATE_JOB


def state_from_registration(registration: Registration) -> RunState:
    """The end of a run whose Job is gone (e.g. its TTL) but whose version is registered."""
    gate = registration.gate or {}
    if gate.get("passed") is False:
        return RunState(
            Phase.FAILED, api.REASON_QUALITY_GATE_FAILED, str(gate.get("message") or "")
        )
    return RunState(Phase.SUCCEEDED, REASON_TRAINED, f"registered {registration.name}")


def job_missing_state(job_name: str) -> RunState:
    return RunState(
        Phase.FAILED,
        REASON_JOB_MISSING,
        f"the training Job {job_name} was deleted before its outcome was recorded",
    )


def _finite(v: float) -> bool:
    return math.isfinite(v)


def duration_seconds(start: str | None, end: str | None) -> float | None:
    """Seconds between two RFC 3339 timestamps (None when either is missing)."""
    a, b = rfc3339.parse_time(start), rfc3339.parse_time(end)
    if a is None or b is None:
        return None
    return max(0.0, (b - a).total_seconds())


def outcome_label(status: Obj) -> str:
    """The ``outcome`` label of kubeloop_training_runs_total for a finished status."""
    c = get_condition(status.get("conditions"), api.COND_SUCCEEDED) or {}
    if c.get("status") == "True":
        return "succeeded"
    return "gate_failed" if c.get("reason") == api.REASON_QUALITY_GATE_FAILED else "failed"
