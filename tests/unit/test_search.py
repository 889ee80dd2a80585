"""Hyperparameter search: candidate generation, the Indexed Job, trials -> the best one."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from kubeloop import cli
from kubeloop.builders.job import build_job
from kubeloop.builders.modelversion import model_version_spec
from kubeloop.reconcile import search as rec_search
from kubeloop.reconcile import trainingjob as rec
from kubeloop.settings import Settings
from kubeloop_runtime import api, search
from kubeloop_runtime.train.cli import main, trial_output
from tests.unit.test_reconcile_trainingjob import NOW, cond, job, result_doc

SETTINGS = Settings(runtime_image="example/runtime:1", image_pull_policy="Never")
GRID = {
    "parameters": {
        "C": {"values": [0.1, 1.0, 10.0]},
        "solver": {"values": ["lbfgs", "newton-cg"]},
        "max_iter": {"values": [100, 300]},
    },
    "maxTrials": 12,
    "parallelism": 3,
}
RANDOM = {
    "algorithm": "random",
    "parameters": {
        "C": {"min": 0.001, "max": 100.0, "log": True},
        "max_iter": {"min": 50, "max": 500, "integer": True},
        "penalty": {"values": ["l2", None]},
    },
    "maxTrials": 20,
    "seed": 7,
}


def spec(search_: dict[str, Any] | None = None, **overrides: Any) -> api.TrainingJobSpec:
    base: dict[str, Any] = {
        "model": "iris",
        "dataset": {"builtin": "iris"},
        "estimator": {"type": "LogisticRegression", "hyperparameters": {"max_iter": 200}},
        "search": GRID if search_ is None else search_,
    }
    base.update(overrides)
    return api.TrainingJobSpec.model_validate(base)


# ------------------------------------------------------------------ candidates


def test_grid_is_the_product_in_name_order_last_name_fastest() -> None:
    s = spec().search
    assert s is not None
    trials = search.all_trials(s)
    assert search.trial_count(s) == len(trials) == 12
    assert trials[0] == {"C": 0.1, "max_iter": 100, "solver": "lbfgs"}
    assert trials[1] == {"C": 0.1, "max_iter": 100, "solver": "newton-cg"}
    assert trials[2] == {"C": 0.1, "max_iter": 300, "solver": "lbfgs"}
    assert trials[11] == {"C": 10.0, "max_iter": 300, "solver": "newton-cg"}
    # Every combination exactly once.
    assert len({json.dumps(t, sort_keys=True) for t in trials}) == 12


def test_grid_does_not_depend_on_the_order_parameters_are_written_in() -> None:
    reordered = {**GRID, "parameters": dict(reversed(list(GRID["parameters"].items())))}
    a, b = spec().search, spec(reordered).search
    assert a is not None and b is not None
    assert search.all_trials(a) == search.all_trials(b)


def test_random_is_a_function_of_seed_and_index_alone() -> None:
    s = spec(RANDOM).search
    assert s is not None
    trials = search.all_trials(s)
    assert len(trials) == 20
    # The same trial again, alone: what a retried pod computes.
    assert all(search.trial_parameters(s, i) == t for i, t in enumerate(trials))
    # Within their ranges, integers whole, log-uniform spread over the decades.
    for t in trials:
        assert 0.001 <= float(str(t["C"])) <= 100.0
        assert isinstance(t["max_iter"], int) and 50 <= t["max_iter"] <= 500
        assert t["penalty"] in ("l2", None)
    decades = {int(__import__("math").floor(__import__("math").log10(float(str(t["C"])))))
               for t in trials}  # fmt: skip
    assert len(decades) >= 4, decades
    # Another seed, other trials; a longer search keeps the first ones.
    other = spec({**RANDOM, "seed": 8}).search
    longer = spec({**RANDOM, "maxTrials": 30}).search
    assert other is not None and longer is not None
    assert search.all_trials(other) != trials
    assert search.all_trials(longer)[:20] == trials


def test_random_values_are_picked_from_the_list_only() -> None:
    s = spec({"algorithm": "random", "parameters": {"C": {"values": [1, 2, 3]}},
              "maxTrials": 40}).search  # fmt: skip
    assert s is not None
    picked = [t["C"] for t in search.all_trials(s)]
    assert set(picked) == {1, 2, 3}


def test_trial_spec_sets_the_trial_over_the_estimator_and_drops_the_search() -> None:
    hyper = {"max_iter": 200, "tol": 0.001}
    s = spec(estimator={"type": "LogisticRegression", "hyperparameters": hyper})
    t = search.trial_spec(s, 5)
    assert t.search is None
    assert t.estimator.hyperparameters == {"max_iter": 100, "tol": 0.001, "C": 1.0,
                                           "solver": "newton-cg"}  # fmt: skip
    with pytest.raises(ValueError, match="outside"):
        search.trial_parameters(s.search, 12)  # type: ignore[arg-type]


def test_metric_and_direction() -> None:
    assert spec().search_metric == "accuracy"
    gated = spec(qualityGate={"thresholds": [{"metric": "f1", "min": 0.5}]})
    assert gated.search_metric == "f1"
    assert spec({**GRID, "metric": "log_loss"}).search_metric == "log_loss"
    assert search.direction("log_loss") == "minimize" and search.direction("f1") == "maximize"
    assert search.better("rmse", 0.1, 0.2) and not search.better("accuracy", 0.1, 0.2)


@pytest.mark.parametrize(
    ("search_", "message"),
    [
        ({"parameters": {"C": {"min": 0.1, "max": 1}}}, "a grid needs values for every parameter"),
        ({"algorithm": "random", "parameters": {"C": {"min": 2, "max": 1}}}, "min <= max"),
        ({"algorithm": "random", "parameters": {"C": {"min": 0, "max": 1, "log": True}}},
         "a log range needs min > 0"),
        ({"parameters": {"bad-name": {"values": [1]}}}, "names are hyperparameter names"),
        ({"parameters": {}}, "parameters"),
        ({**GRID, "parallelism": 17}, "parallelism"),
        ({**GRID, "maxTrials": 65}, "maxTrials"),
        ({**GRID, "metric": "rmse"}, "spec.search.metric"),
    ],
)  # fmt: skip
def test_invalid_searches_are_refused_naming_the_field(
    search_: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(search_)


@pytest.mark.parametrize(
    ("search_", "message"),
    [
        ({**GRID, "maxTrials": 11}, "the grid has 12 combinations, more than maxTrials 11"),
        ({"parameters": {"C": {"values": [1], "min": 0, "max": 1}}, "algorithm": "random"},
         "set either values, or min and max \\(C\\)"),
        ({"parameters": {"C": {}}}, "set either values, or min and max \\(C\\)"),
    ],
)  # fmt: skip
def test_what_admission_cannot_check_parses_and_is_refused_by_problem(
    search_: dict[str, Any], message: str
) -> None:
    # Admission accepts these (CEL cannot see the values lists): they must parse, and then
    # neither the operator (InvalidSpec) nor the trainer runs them.
    s = spec(search_)
    assert s.search is not None
    problem = s.search.problem()
    assert problem is not None and re.search(message, problem), problem
    with pytest.raises(ValueError, match=message):
        search.trial_parameters(s.search, 0)
    assert spec(GRID).search.problem() is None  # type: ignore[union-attr]


# ------------------------------------------------------------------------- the Job


def test_a_search_is_one_indexed_job_with_bounded_parallelism() -> None:
    s = spec(runPolicy={"backoffLimit": 1})
    j = build_job("iris-search", "ml", "uid-1", s, SETTINGS)
    js = j["spec"]
    assert j["metadata"]["name"] == "iris-search-train"
    assert js["completionMode"] == "Indexed"
    assert (js["completions"], js["parallelism"]) == (12, 3)
    assert js["backoffLimitPerIndex"] == 1 and "backoffLimit" not in js
    rules = js["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailIndex"
    assert rules[0]["onExitCodes"]["values"] == [api.EXIT_INVALID, api.EXIT_GATE_FAILED]
    assert rules[1]["action"] == "Ignore"
    # Every pod gets the whole spec (it derives its own trial from its index) and the
    # same output root (it writes under trials/<index>).
    c = js["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert json.loads(env["KUBELOOP_TRAINING_SPEC"])["search"]["maxTrials"] == 12
    assert c["args"] == ["--output", "pvc://kubeloop-artifacts/ml/iris-search"]


def test_parallelism_never_exceeds_the_trials_and_a_plain_run_is_unchanged() -> None:
    small = spec({"parameters": {"C": {"values": [1, 2]}}, "parallelism": 8})
    js = build_job("s", "ml", "u", small, SETTINGS)["spec"]
    assert (js["completions"], js["parallelism"]) == (2, 2)
    plain = build_job("p", "ml", "u", spec().model_copy(update={"search": None}), SETTINGS)
    ps = plain["spec"]
    assert "completionMode" not in ps and "backoffLimitPerIndex" not in ps
    assert (ps["completions"], ps["parallelism"], ps["backoffLimit"]) == (1, 1, 0)
    assert ps["podFailurePolicy"]["rules"][0]["action"] == "FailJob"


def test_trial_output_is_under_the_run() -> None:
    assert trial_output("pvc://c/ml/run", 3) == "pvc://c/ml/run/trials/3"
    assert trial_output("s3://b/p/", 0) == "s3://b/p/trials/0"


def test_the_trainer_refuses_a_search_without_a_trial(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    f = tmp_path / "spec.json"
    f.write_text(json.dumps(spec().wire()))
    assert main(["--spec", str(f), "--output", str(tmp_path / "out")]) == api.EXIT_INVALID
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "12")
    assert main(["--spec", str(f), "--output", str(tmp_path / "out")]) == api.EXIT_INVALID
    doc = json.loads((tmp_path / "out" / "trials" / "12" / "result.json").read_text())
    assert doc["reason"] == "InvalidSpec" and "outside" in doc["message"] and doc["trial"] == 12


# ------------------------------------------------------------------ trials, the best


def trial_pod(
    index: int, *, exit_code: int | None = None, doc: dict[str, Any] | None = None,
    phase: str = "Running", name: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        message = json.dumps(doc) if doc is not None else ""
        state = {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else
                                "Completed", "message": message, "finishedAt": NOW}}  # fmt: skip
    return {
        "metadata": {
            "name": name or f"s-train-{index}-x",
            "creationTimestamp": NOW,
            "annotations": {rec_search.ANNOTATION_COMPLETION_INDEX: str(index)},
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "train", "state": state}]},
    }


def trained(index: int, accuracy: float) -> dict[str, Any]:
    doc = result_doc(metrics={"accuracy": accuracy, "f1": accuracy}, trial=index)
    return trial_pod(index, exit_code=0, phase="Succeeded", doc=doc)


def invalid(index: int) -> dict[str, Any]:
    doc = {"succeeded": False, "reason": "InvalidSpec", "trial": index,
           "message": "spec.estimator.hyperparameters: C must be > 0"}  # fmt: skip
    return trial_pod(index, exit_code=2, phase="Failed", doc=doc)


def small(**kw: Any) -> api.TrainingJobSpec:
    return spec({"parameters": {"C": {"values": [-1, 0.5, 1, 2]}}, "parallelism": 2}, **kw)


def test_trials_follow_their_pods_by_completion_index() -> None:
    s = small()
    j = job(active=2, completedIndexes="1", failedIndexes="")
    pods = [invalid(0), trained(1, 0.9), trial_pod(2)]
    trials = rec_search.observe_trials(s, j, pods)
    assert [t.phase for t in trials] == ["Pending", "Succeeded", "Running", "Pending"]
    # Index 0 failed but the Job has not failed the index yet: it may be retried.
    assert trials[0].message == "retrying after exit code 2"
    assert trials[1].parameters == {"C": "0.5"} and trials[1].metrics["accuracy"] == 0.9
    st = rec_search.state(s, trials, finished=False)
    assert st.best is None
    run = rec_search.outcome(st, rec.observe(j, pods))
    assert not run.finished and "1 of 4 trials finished" in run.message


def test_the_best_trial_is_registered_and_failed_trials_are_counted() -> None:
    s = small()
    j = job([cond("Failed", "FailedIndexes")], completedIndexes="1-3", failedIndexes="0")
    pods = [invalid(0), trained(1, 0.9), trained(2, 0.97), trained(3, 0.97)]
    trials = rec_search.observe_trials(s, j, pods)
    st = rec_search.state(s, trials, finished=True)
    assert st.best is not None and st.best.index == 2  # ties go to the lower index
    run = rec_search.outcome(st, rec.observe(j, pods))
    assert run.phase is rec.Phase.SUCCEEDED and run.registrable
    assert run.result is not None and run.result.trial == 2
    assert "trial 2 (C=1) accuracy=0.97" in run.message
    assert "1 of 4 trials failed (InvalidSpec: 1)" in run.message
    summary = st.summary()
    assert summary == {"trials": 4, "succeeded": 3, "failed": 1, "running": 0,
                       "metric": "accuracy", "direction": "maximize", "bestTrial": 2,
                       "bestValue": 0.97, "failedReasons": {"InvalidSpec": 1}}  # fmt: skip
    ref = st.trial_ref()
    assert ref is not None and (ref.index, ref.trials, ref.parameters) == (2, 4, {"C": "1"})
    mv = model_version_spec(trainingjob="s", spec=s, result=run.result, version=1, image="i",
                            trial=ref)  # fmt: skip
    assert mv.lineage.trial == ref
    status = rec.desired_trainingjob_status(
        old=None, generation=1, job_name="s-train", job_exists=True, run=run,
        registration=rec.Registration("iris-v1", 1, {"accuracy": 0.97}),
        now=NOW, search=summary, trials=[t.wire() for t in trials],
    )  # fmt: skip
    assert status["reason"] == "Trained" and status["search"]["bestTrial"] == 2
    assert [t["phase"] for t in status["trials"]] == ["Failed", "Succeeded", "Succeeded",
                                                      "Succeeded"]  # fmt: skip
    assert status["trials"][0]["reason"] == "InvalidSpec"
    assert "C must be > 0" in status["trials"][0]["message"]
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert succeeded["status"] == "True" and "best of 4 trials" in succeeded["message"]


def test_lower_is_better_metrics_pick_the_smallest() -> None:
    s = small(search={"parameters": {"C": {"values": [1, 2]}}, "metric": "log_loss"})
    docs = [result_doc(metrics={"log_loss": v}, trial=i) for i, v in enumerate([0.3, 0.2])]
    pods = [trial_pod(i, exit_code=0, phase="Succeeded", doc=d) for i, d in enumerate(docs)]
    j = job([cond("Complete")], completedIndexes="0-1")
    st = rec_search.state(s, rec_search.observe_trials(s, j, pods), finished=True)
    assert st.best is not None and st.best.index == 1
    assert st.summary()["direction"] == "minimize"


def test_all_trials_failing_fails_the_search_with_the_reasons() -> None:
    s = small()
    j = job([cond("Failed", "FailedIndexes")], failedIndexes="0-3")
    pods = [invalid(i) for i in range(4)]
    st = rec_search.state(s, rec_search.observe_trials(s, j, pods), finished=True)
    run = rec_search.outcome(st, rec.observe(j, pods))
    assert run.phase is rec.Phase.FAILED and run.reason == "AllTrialsFailed"
    assert not run.registrable
    assert "every one of the 4 trials failed: 4 of 4 trials failed (InvalidSpec: 4)" in run.message


def test_gate_failed_trials_register_the_best_as_never_served() -> None:
    s = small()
    gated = [
        trial_pod(i, exit_code=3, phase="Failed", doc=result_doc(
            succeeded=False, reason="QualityGateFailed", trial=i,
            metrics={"accuracy": 0.5 + i / 10}, gate={"passed": False, "message": "low"}))
        for i in range(4)
    ]  # fmt: skip
    j = job([cond("Failed", "FailedIndexes")], failedIndexes="0-3")
    st = rec_search.state(s, rec_search.observe_trials(s, j, gated), finished=True)
    run = rec_search.outcome(st, rec.observe(j, gated))
    assert run.reason == "QualityGateFailed" and run.registrable
    assert st.best is not None and st.best.index == 3


def test_a_deadline_fails_unfinished_trials_and_keeps_the_best_finished_one() -> None:
    s = small()
    j = job([cond("Failed", "DeadlineExceeded")], completedIndexes="1")
    pods = [trained(1, 0.9), trial_pod(2)]
    trials = rec_search.observe_trials(s, j, pods)
    assert [t.phase for t in trials] == ["Failed", "Succeeded", "Failed", "Failed"]
    assert trials[0].reason == "DeadlineExceeded"
    run = rec_search.outcome(rec_search.state(s, trials, True), rec.observe(j, pods))
    assert run.phase is rec.Phase.SUCCEEDED and run.result is not None
    assert run.result.trial == 1


def test_a_completed_index_whose_pod_status_lags_is_waited_for() -> None:
    s = small(search={"parameters": {"C": {"values": [1]}}})
    j = job([cond("Complete")], completedIndexes="0")
    pods = [trial_pod(0)]  # still Running in the cache
    st = rec_search.state(s, rec_search.observe_trials(s, j, pods), finished=True)
    run = rec_search.outcome(st, rec.observe(j, pods))
    assert not run.finished and st.best is None


def test_finished_trials_keep_their_record_when_their_pods_are_gone() -> None:
    s = small()
    first = rec_search.observe_trials(s, job(active=1), [invalid(0), trained(1, 0.9)])
    old = [t.wire() for t in first]
    again = rec_search.observe_trials(s, job(active=1, failedIndexes="0"), [], old)
    assert again[1].phase == "Succeeded" and again[1].metrics == {"accuracy": 0.9, "f1": 0.9}
    assert [t.wire() for t in again][1] == old[1]


def test_parse_indexes() -> None:
    assert rec_search.parse_indexes("1,3-5,7") == {1, 3, 4, 5, 7}
    assert rec_search.parse_indexes("") == set() and rec_search.parse_indexes(None) == set()


# ---------------------------------------------------------------- kubectl kubeloop runs


def test_runs_prints_every_trial_and_marks_the_best() -> None:
    s = small()
    j = job([cond("Failed", "FailedIndexes")], completedIndexes="1-3", failedIndexes="0")
    pods = [invalid(0), trained(1, 0.9), trained(2, 0.97), trained(3, 0.95)]
    st = rec_search.state(s, rec_search.observe_trials(s, j, pods), finished=True)
    tj = {
        "metadata": {"name": "iris-search"},
        "spec": s.wire(),
        "status": {"phase": "Succeeded", "modelVersion": "iris-v1", "search": st.summary(),
                   "trials": [t.wire() for t in st.trials]},
    }  # fmt: skip
    rows = cli.runs_rows(tj)
    assert [r[0] for r in rows] == ["0", "1", "2", "3"]
    assert [r[2] for r in rows] == ["", "", "*", ""]
    assert rows[0][1] == "Failed" and rows[0][5].startswith("InvalidSpec: spec.estimator")
    assert rows[2][3] == "accuracy=0.97 f1=0.97" and rows[2][4] == "C=1"
    summary = cli.runs_summary(tj)
    assert summary == (
        "TrainingJob iris-search: 4 trials, 3 succeeded, 1 failed (InvalidSpec: 1), 0 running;"
        " best trial 2 by accuracy (maximize) -> ModelVersion iris-v1\n"
    )
    text = cli.table(cli.RUNS_HEADER, rows)
    assert text.splitlines()[0].split() == cli.RUNS_HEADER
    assert cli.build_parser().parse_args(["runs", "iris-search", "-n", "ml"]).trainingjob == (
        "iris-search"
    )


def test_runs_of_a_plain_run_is_one_row() -> None:
    tj = {"metadata": {"name": "iris"},
          "spec": {"estimator": {"type": "SVC", "hyperparameters": {"C": 2}}},
          "status": {"phase": "Succeeded", "metrics": {"accuracy": 0.9}, "reason": "Trained",
                     "modelVersion": "iris-v3"}}  # fmt: skip
    assert cli.runs_rows(tj) == [["-", "Succeeded", "*", "accuracy=0.9", "C=2", "Trained"]]
    assert cli.runs_summary(tj) == "TrainingJob iris: Succeeded -> ModelVersion iris-v3\n"
