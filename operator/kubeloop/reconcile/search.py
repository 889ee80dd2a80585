"""Hyperparameter search, the pure part: an Indexed Job's pods -> trials -> the best one.

A TrainingJob with ``spec.search`` runs one Indexed Job (``builders/job.py``); pod ``i``
trains trial ``i``, whose hyperparameters :func:`kubeloop_runtime.search.trial_parameters`
derives from the spec alone. :func:`observe_trials` reads each index's pods (the
``batch.kubernetes.io/job-completion-index`` annotation), their termination messages and the
Job's ``completedIndexes``/``failedIndexes`` into :class:`Trial` records;
:func:`outcome` turns a finished Job's trials into the :class:`~.trainingjob.RunState` the
TrainingJob reconcile already knows how to register and report:

* the best trial that trained and passed its gate (by ``spec.search_metric``, lower is
  better for rmse, mae and log_loss; ties go to the lower index) is the run's result;
* else the best trial that trained but missed the gate (registered with
  ``gate.passed: false``, as a plain run would be);
* else ``AllTrialsFailed``, with the count of each failure reason.

Trials that fail never fail the search unless all do. A trial once recorded as finished
keeps its record when its pod is gone (a Job's TTL), so ``status.trials`` only grows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubeloop.reconcile.trainingjob import (
    REASON_RESULT_MISSING,
    REASON_TRAINED,
    Phase,
    RunState,
    Terminated,
    last_termination,
    parse_result,
)
from kubeloop_runtime import api, search

Obj = Mapping[str, Any]

ANNOTATION_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
REASON_ALL_FAILED = "AllTrialsFailed"
MAX_TRIAL_METRICS = 16
MAX_TRIAL_MESSAGE = 256

TRIAL_PENDING = "Pending"
TRIAL_RUNNING = "Running"
TRIAL_SUCCEEDED = "Succeeded"
TRIAL_FAILED = "Failed"
FINISHED = (TRIAL_SUCCEEDED, TRIAL_FAILED)


@dataclass(frozen=True)
class Trial:
    """One trial as ``status.trials[]`` records it (``result`` is not written to status)."""

    index: int
    parameters: dict[str, str]
    phase: str = TRIAL_PENDING
    reason: str = ""
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    pod: str | None = None
    result: api.TrainingResult | None = None

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "phase": self.phase,
            "parameters": dict(self.parameters),
        }
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message[:MAX_TRIAL_MESSAGE]
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        if self.pod:
            out["pod"] = self.pod
        return out

    @classmethod
    def from_status(cls, doc: Obj) -> Trial:
        return cls(
            index=int(doc.get("index", 0)),
            parameters={str(k): str(v) for k, v in (doc.get("parameters") or {}).items()},
            phase=str(doc.get("phase") or TRIAL_PENDING),
            reason=str(doc.get("reason") or ""),
            message=str(doc.get("message") or ""),
            metrics={str(k): float(v) for k, v in (doc.get("metrics") or {}).items()},
            pod=doc.get("pod"),
        )


def parse_indexes(text: str | None) -> set[int]:
    """A Job's ``completedIndexes``/``failedIndexes`` ("1,3-5,7") as a set of indexes."""
    out: set[int] = set()
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            continue
        out.update(range(first, last + 1))
    return out


def index_of(pod: Obj) -> int | None:
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(ANNOTATION_COMPLETION_INDEX)
    if value is None:
        value = (meta.get("labels") or {}).get(ANNOTATION_COMPLETION_INDEX)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _metrics(result: api.TrainingResult | None, metric: str) -> dict[str, float]:
    if result is None:
        return {}
    finite = {k: float(v) for k, v in sorted(result.metrics.items()) if math.isfinite(v)}
    keep = [metric] if metric in finite else []
    keep += [k for k in finite if k != metric][: MAX_TRIAL_METRICS - len(keep)]
    return {k: finite[k] for k in sorted(keep)}


def _failed_trial(
    index: int,
    params: dict[str, str],
    term: Terminated | None,
    result: api.TrainingResult | None,
    *,
    metric: str,
    job_reason: str,
) -> Trial:
    if result is not None and not result.succeeded:
        reason, message = result.reason, result.message
    elif term is not None and term.reason == "OOMKilled":
        reason, message = "OOMKilled", "the training container ran out of memory"
    elif term is not None:
        reason = "TrainingError"
        message = f"the container exited with code {term.exit_code}" + (
            f" ({term.reason})" if term.reason else ""
        )
    else:
        reason, message = job_reason, "the Job ended before this trial finished"
    return Trial(
        index,
        params,
        TRIAL_FAILED,
        reason,
        message[:MAX_TRIAL_MESSAGE],
        _metrics(result, metric),
        term.pod if term is not None else None,
        result,
    )


def _job_finished(job: Obj) -> str | None:
    """The reason a Job finished with ("Complete", or the Failed condition's), or None."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            return "Complete"
        if c.get("type") == "Failed":
            return str(c.get("reason") or "JobFailed")
    return None


def observe_trials(
    spec: api.TrainingJobSpec,
    job: Obj | None,
    pods: Sequence[Obj],
    old: Sequence[Obj] | None = None,
) -> list[Trial]:
    """Every trial of ``spec.search``, by index, from the Job, its pods and the old status."""
    assert spec.search is not None
    metric = spec.search_metric
    recorded = {t.index: t for t in (Trial.from_status(d) for d in old or ()) if t.finished}
    status = (job or {}).get("status") or {}
    completed = parse_indexes(status.get("completedIndexes"))
    failed = parse_indexes(status.get("failedIndexes"))
    ended = _job_finished(job) if job is not None else None
    by_index: dict[int, list[Obj]] = {}
    for p in pods:
        i = index_of(p)
        if i is not None:
            by_index.setdefault(i, []).append(p)

    trials = []
    for i, chosen in enumerate(search.all_trials(spec.search)):
        params = search.text_parameters(chosen)
        mine = by_index.get(i, [])
        term = last_termination(mine)
        result = parse_result(term.message) if term is not None else None
        if result is not None and result.trial not in (None, i):
            result = None  # not this index's document
        if term is not None and term.exit_code == 0 and result is not None and result.succeeded:
            trials.append(
                Trial(
                    i,
                    params,
                    TRIAL_SUCCEEDED,
                    REASON_TRAINED,
                    "",
                    _metrics(result, metric),
                    term.pod,
                    result,
                )
            )
        elif not mine and i in recorded:
            trials.append(recorded[i])  # finished earlier; its pod is gone
        elif i in failed or (i not in completed and ended is not None):
            trials.append(
                _failed_trial(
                    i, params, term, result, metric=metric, job_reason=ended or "JobFailed"
                )
            )
        elif i in completed and term is None and mine:
            # The Job counted the pod before the pod's final status reached the cache.
            trials.append(Trial(i, params, TRIAL_RUNNING, "Completing", "", {}, _newest(mine)))
        elif i in completed:
            # Completed, but its pod left no readable result.
            trials.append(
                Trial(i, params, TRIAL_FAILED, REASON_RESULT_MISSING,
                      "the trial's pod completed but left no readable result",
                      {}, term.pod if term is not None else None)
            )  # fmt: skip
        elif any((p.get("status") or {}).get("phase") == "Running" for p in mine):
            trials.append(Trial(i, params, TRIAL_RUNNING, "Running", "", {}, _newest(mine)))
        else:
            retry = (
                f"retrying after exit code {term.exit_code}"
                if term is not None and term.exit_code != 0
                else ""
            )
            trials.append(Trial(i, params, TRIAL_PENDING, "Pending", retry, {}, _newest(mine)))
    return trials


def _newest(pods: Sequence[Obj]) -> str | None:
    if not pods:
        return None
    newest = max(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp", "")))
    return str((newest.get("metadata") or {}).get("name") or "") or None


def best(trials: Sequence[Trial], metric: str, *, passed: bool = True) -> Trial | None:
    """The best trial with a model: trained (``passed``) or trained but gated; a trial
    without ``metric`` ranks after every trial with it; ties go to the lower index."""

    def eligible(t: Trial) -> bool:
        if t.result is None or t.result.artifact is None:
            return False
        if passed:
            return t.phase == TRIAL_SUCCEEDED
        return t.phase == TRIAL_FAILED and t.reason == api.REASON_QUALITY_GATE_FAILED

    found: Trial | None = None
    for t in sorted((t for t in trials if eligible(t)), key=lambda t: t.index):
        if found is None:
            found = t
            continue
        value, incumbent = t.metrics.get(metric), found.metrics.get(metric)
        if value is not None and (incumbent is None or search.better(metric, value, incumbent)):
            found = t
    return found


@dataclass(frozen=True)
class SearchState:
    """What ``status.search`` and ``status.trials`` say, and the trial to register."""

    metric: str
    trials: list[Trial]
    best: Trial | None = None

    def counts(self) -> Counter[str]:
        return Counter(t.phase for t in self.trials)

    def failure_reasons(self) -> dict[str, int]:
        failed = Counter(t.reason for t in self.trials if t.phase == TRIAL_FAILED)
        return dict(sorted(failed.items()))

    def summary(self) -> dict[str, Any]:
        counts = self.counts()
        out: dict[str, Any] = {
            "trials": len(self.trials),
            "succeeded": counts[TRIAL_SUCCEEDED],
            "failed": counts[TRIAL_FAILED],
            "running": counts[TRIAL_RUNNING],
            "metric": self.metric,
            "direction": search.direction(self.metric),
        }
        if self.failure_reasons():
            out["failedReasons"] = self.failure_reasons()
        if self.best is not None:
            out["bestTrial"] = self.best.index
            value = self.best.metrics.get(self.metric)
            if value is not None:
                out["bestValue"] = value
        return out

    def progress(self) -> str:
        counts = self.counts()
        done = counts[TRIAL_SUCCEEDED] + counts[TRIAL_FAILED]
        return (
            f"{done} of {len(self.trials)} trials finished ({counts[TRIAL_SUCCEEDED]} trained,"
            f" {counts[TRIAL_FAILED]} failed), {counts[TRIAL_RUNNING]} running"
        )

    def failures_text(self) -> str:
        reasons = self.failure_reasons()
        if not reasons:
            return ""
        listed = ", ".join(f"{r}: {n}" for r, n in reasons.items())
        return f"{sum(reasons.values())} of {len(self.trials)} trials failed ({listed})"

    def trial_ref(self) -> api.TrialRef | None:
        """The registered trial, for the ModelVersion's lineage."""
        if self.best is None:
            return None
        return api.TrialRef(
            index=self.best.index,
            trials=len(self.trials),
            metric=self.metric,
            parameters=dict(self.best.parameters),
        )


def _describe(t: Trial, metric: str) -> str:
    params = ", ".join(f"{k}={v}" for k, v in t.parameters.items())
    value = t.metrics.get(metric)
    score = f" {metric}={value:.4g}" if value is not None else ""
    return f"trial {t.index} ({params}){score}"


def state(spec: api.TrainingJobSpec, trials: list[Trial], finished: bool) -> SearchState:
    """The search's state; the best trial is chosen only once the Job has finished."""
    metric = spec.search_metric
    finished = finished and all(t.finished for t in trials)
    chosen = (best(trials, metric) or best(trials, metric, passed=False)) if finished else None
    return SearchState(metric, trials, chosen)


def outcome(s: SearchState, run: RunState) -> RunState:
    """The run's state for a search: ``run`` (from :func:`~.trainingjob.observe` on the Job)
    while it runs; once the Job finished, the best trial's result, or AllTrialsFailed."""
    if not run.finished:
        return RunState(run.phase, run.reason, f"{run.message}; {s.progress()}", run.start_time)
    if not all(t.finished for t in s.trials):
        return RunState(
            Phase.RUNNING,
            "Running",
            f"the Job finished; reading the last trials' results; {s.progress()}",
            run.start_time,
        )
    failures = s.failures_text()
    tail = f"; {failures}" if failures else ""
    if s.best is None:
        return RunState(
            Phase.FAILED,
            REASON_ALL_FAILED,
            f"every one of the {len(s.trials)} trials failed{tail.replace('; ', ': ', 1)}"[:1024],
            run.start_time,
            run.completion_time,
        )
    assert s.best.result is not None
    what = f"best of {len(s.trials)} trials by {s.metric}: {_describe(s.best, s.metric)}"
    if s.best.phase == TRIAL_SUCCEEDED:
        return RunState(
            Phase.SUCCEEDED,
            REASON_TRAINED,
            f"{what}{tail}"[:1024],
            run.start_time,
            run.completion_time,
            None,
            s.best.result,
        )
    return RunState(
        Phase.FAILED,
        api.REASON_QUALITY_GATE_FAILED,
        f"no trial passed the quality gate; {what}{tail}"[:1024],
        run.start_time,
        run.completion_time,
        None,
        s.best.result,
    )
