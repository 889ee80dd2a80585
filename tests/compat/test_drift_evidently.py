"""Our drift numbers agree with Evidently's on the same data and the same methods.

Evidently 0.7 imports a pandas internal that pandas 3 removed, so it cannot live in the
project's environment. It runs in its own virtual environment instead, made on first use
by :func:`evidently_python` (``python tests/compat/test_drift_evidently.py`` makes it ahead
of time) under ``~/.cache/kubeloop/venv-evidently`` (``KUBELOOP_EVIDENTLY_VENV`` moves it).
A small worker script runs Evidently's ``ValueDrift`` metric with an explicit ``method``
there and prints the scores as JSON.

What is compared, per scenario (in distribution, and shifted):

* KS p-values of numeric features (our reference sample is the whole reference here);
* chi-squared p-value and PSI of a categorical feature;
* our production numeric PSI, over the reference's quantile bins: Evidently has no way to
  take given bins, so the bin index of each value is handed to it as a categorical column,
  and its categorical PSI must equal ours;
* Evidently's own numeric PSI, which bins on equal-width Sturges edges over reference and
  current together (``np.histogram_bin_edges(..., bins="sturges")``): reproduced here
  with :func:`kubeloop_runtime.drift.psi` to show the formula and epsilon are the same.

Set ``KUBELOOP_SKIP_EVIDENTLY=1`` to skip where the package registry cannot be reached;
otherwise a failure to build the environment fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest

from kubeloop_runtime.drift import (
    DriftMonitor,
    FeatureDrift,
    NumericReference,
    build_reference,
    psi,
)
from kubeloop_runtime.drift import stats as drift_stats

EVIDENTLY_VERSION = "0.7.23"
REQUIREMENTS = (f"evidently=={EVIDENTLY_VERSION}", "pandas<3")
VENV = Path(
    os.environ.get(
        "KUBELOOP_EVIDENTLY_VENV", str(Path.home() / ".cache" / "kubeloop" / "venv-evidently")
    )
)

WORKER = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    results = []
    for job in json.load(sys.stdin):
        definition = DataDefinition(
            numerical_columns=job["numerical"], categorical_columns=job["categorical"]
        )
        ref = Dataset.from_pandas(pd.DataFrame(job["reference"]), data_definition=definition)
        cur = Dataset.from_pandas(pd.DataFrame(job["current"]), data_definition=definition)
        metrics = [ValueDrift(column=c, method=m) for c, m in job["metrics"]]
        snapshot = Report(metrics).run(cur, ref).dict()
        values = {}
        for m in snapshot["metrics"]:
            cfg = m["config"]
            values[cfg["column"] + "/" + cfg["method"]] = float(m["value"])
        results.append(values)
    json.dump({"version": evidently.__version__, "results": results}, sys.stdout)
    """
)


def evidently_python() -> Path:
    """The venv's python with the pinned Evidently, building the venv when needed."""
    python = VENV / "bin" / "python"
    marker = VENV / ".kubeloop-requirements"
    wanted = "\n".join(REQUIREMENTS)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        # The marker says what was installed; the import says it is still there (a build
        # interrupted by another run, or a venv removed around it, leaves the marker behind).
        probe = subprocess.run(
            [str(python), "-c", "import evidently"], capture_output=True, timeout=120, check=False
        )
        if probe.returncode == 0:
            return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *REQUIREMENTS,
        ],
        check=True,
        timeout=1500,
    )
    marker.write_text(wanted)
    return python


class Job(NamedTuple):
    reference: pd.DataFrame
    current: pd.DataFrame
    numerical: list[str]
    categorical: list[str]
    metrics: list[tuple[str, str]]


def run_evidently(python: Path, jobs: list[Job]) -> list[dict[str, float]]:
    """Evidently's ValueDrift scores, keyed "column/method", for each job (one process)."""
    payload = [
        {
            "reference": {c: job.reference[c].tolist() for c in job.reference.columns},
            "current": {c: job.current[c].tolist() for c in job.current.columns},
            "numerical": job.numerical,
            "categorical": job.categorical,
            "metrics": job.metrics,
        }
        for job in jobs
    ]
    env = {**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
    out = subprocess.run(
        [str(python), "-c", WORKER],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout)
    assert result["version"] == EVIDENTLY_VERSION
    values: list[dict[str, float]] = result["results"]
    return values


@pytest.fixture(scope="module")
def evidently() -> Path:
    if os.environ.get("KUBELOOP_SKIP_EVIDENTLY") == "1":
        pytest.skip("KUBELOOP_SKIP_EVIDENTLY=1")
    try:
        return evidently_python()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        pytest.fail(f"could not build the Evidently environment in {VENV}: {e}")


def make_frame(
    rng: np.random.Generator,
    n: int,
    *,
    shift: float = 0.0,
    scale: float = 1.0,
    p: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1),
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, n),
            "y": rng.lognormal(0.0, 0.5, n) * scale,
            "colour": rng.choice(["red", "green", "blue", "grey"], n, p=p),
        }
    )


def close(ours: float | None, theirs: float) -> bool:
    assert ours is not None
    return abs(ours - theirs) <= 1e-9 + 1e-6 * abs(theirs)


# name -> (make_frame arguments for the current window, whether every feature drifts)
SCENARIOS: dict[str, tuple[dict[str, Any], bool]] = {
    "same": ({}, False),
    "shifted": ({"shift": 0.25, "scale": 1.15, "p": (0.3, 0.3, 0.25, 0.15)}, True),
    # Empty bins on both sides: the PSI epsilon and the chi-square's empty cells matter.
    "far": ({"shift": 3.0, "scale": 3.0, "p": (0.5, 0.3, 0.2, 0.0)}, True),
}
METRICS = [
    ("x", "ks"),
    ("y", "ks"),
    ("x", "psi"),
    ("y", "psi"),
    ("x_bin", "psi"),
    ("y_bin", "psi"),
    ("colour", "chisquare"),
    ("colour", "psi"),
]


class Case(NamedTuple):
    reference: pd.DataFrame
    current: pd.DataFrame
    ours: dict[str, FeatureDrift]


def make_case(seed: int, current_args: dict[str, Any]) -> tuple[Case, Job]:
    rng = np.random.default_rng(seed)
    reference = make_frame(rng, 1500)
    current = make_frame(rng, 600, **current_args)
    stats = build_reference(reference, ["colour"], bins=10, sample_size=5000)
    monitor = DriftMonitor(stats, window_size=600)
    monitor.observe(current.to_numpy())
    ours = {f.name: f for f in monitor.compute().features}
    # Numeric features as our quantile-bin codes, for Evidently's categorical PSI.
    ref_cols = dict(reference.items())
    cur_cols = dict(current.items())
    for feature in stats.features:
        if isinstance(feature, NumericReference):
            name = feature.name
            for cols in (ref_cols, cur_cols):
                codes = np.searchsorted(feature.edges, cols[name].to_numpy(), side="right")
                cols[f"{name}_bin"] = pd.Series([f"b{c:02d}" for c in codes])
    job = Job(
        pd.DataFrame(ref_cols),
        pd.DataFrame(cur_cols),
        numerical=["x", "y"],
        categorical=["colour", "x_bin", "y_bin"],
        metrics=METRICS,
    )
    return Case(reference, current, ours), job


@pytest.fixture(scope="module")
def cases(evidently: Path) -> dict[str, tuple[Case, dict[str, float]]]:
    made = {name: make_case(1, args) for name, (args, _) in SCENARIOS.items()}
    scores = run_evidently(evidently, [job for _, job in made.values()])
    return {name: (case, s) for (name, (case, _)), s in zip(made.items(), scores, strict=True)}


def mismatches(case: Case, theirs: dict[str, float]) -> list[str]:
    """Every number of ours that differs from Evidently's, described."""
    out = []
    ours = case.ours

    def check(what: str, mine: float | None, key: str) -> None:
        if not close(mine, theirs[key]):
            out.append(f"{what}: ours {mine!r} != Evidently {theirs[key]!r}")

    check("x KS p-value", ours["x"].p_value, "x/ks")
    check("y KS p-value", ours["y"].p_value, "y/ks")
    check("x PSI (quantile bins)", ours["x"].psi, "x_bin/psi")
    check("y PSI (quantile bins)", ours["y"].psi, "y_bin/psi")
    check("colour chi-square p-value", ours["colour"].p_value, "colour/chisquare")
    check("colour PSI", ours["colour"].psi, "colour/psi")
    for name in ("x", "y"):
        # Evidently's own numeric binning: Sturges equal-width edges over both samples.
        ref, cur = case.reference[name].to_numpy(), case.current[name].to_numpy()
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, edges)[0] / ref.size
        c = np.histogram(cur, edges)[0] / cur.size
        check(f"{name} PSI (Evidently's Sturges bins)", psi(r, c), f"{name}/psi")
    return out


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_agrees_with_evidently(
    cases: dict[str, tuple[Case, dict[str, float]]], scenario: str
) -> None:
    case, theirs = cases[scenario]
    problems = mismatches(case, theirs)
    assert problems == [], "\n".join(problems)
    # The scenarios are what they claim: nothing drifts in one, everything in the others.
    drifts = SCENARIOS[scenario][1]
    flags = {name: f.drifted for name, f in case.ours.items()}
    assert flags == {"x": drifts, "y": drifts, "colour": drifts}, flags


@pytest.mark.timeout(1800)
def test_agreement_check_catches_a_different_epsilon(
    cases: dict[str, tuple[Case, dict[str, float]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison is sharp: a PSI with another empty-bin epsilon disagrees."""
    case, theirs = cases["far"]
    monkeypatch.setattr(drift_stats, "PSI_EPSILON", 1e-3)  # where psi() reads it
    rng = np.random.default_rng(1)
    reference = make_frame(rng, 1500)
    current = make_frame(rng, 600, **SCENARIOS["far"][0])
    monitor = DriftMonitor(build_reference(reference, ["colour"]), window_size=600)
    monitor.observe(current.to_numpy())
    altered = Case(case.reference, case.current, {f.name: f for f in monitor.compute().features})
    problems = mismatches(altered, theirs)
    assert any("PSI" in p for p in problems), problems


if __name__ == "__main__":
    print(evidently_python())
