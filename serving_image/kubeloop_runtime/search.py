"""Hyperparameter search trials: a pure function of ``spec.search`` and the trial index.

The operator and the trainer both call :func:`trial_parameters`: the operator to record
what each trial tries, the training pod (completion index ``i`` of the Indexed Job) to know
what to fit. Nothing here depends on process state, the clock or Python's ``random``:

* ``grid``: the product of every parameter's ``values``, parameters in name order, the last
  name varying fastest (as ``itertools.product`` over the sorted names);
* ``random``: each parameter of trial ``i`` from its own uniform number, the first 8 bytes
  of ``sha256("<seed>:<i>:<name>")``; a ``values`` list is picked from, a range is drawn
  uniformly (``log``: uniformly in log space; ``integer``: a whole number in
  ``[min, max]``). Floats are rounded to 6 significant digits so they read well in status.

So a retried pod trains the same trial, and trial ``i`` does not depend on any other.
Light: imports only the standard library and :mod:`kubeloop_runtime.api`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math

from kubeloop_runtime import api


def trial_count(search: api.SearchSpec) -> int:
    """How many trials the search runs (the Indexed Job's completions)."""
    if search.algorithm == "grid":
        return math.prod(len(s.values or ()) for s in search.parameters.values())
    return search.max_trials


def _uniform(seed: int, index: int, name: str) -> float:
    """A number in [0, 1) from (seed, index, name) alone."""
    digest = hashlib.sha256(f"{seed}:{index}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _draw(space: api.SearchSpace, u: float) -> api.Scalar:
    if space.values is not None:
        return space.values[min(int(u * len(space.values)), len(space.values) - 1)]
    assert space.min is not None and space.max is not None
    lo, hi = space.min, space.max
    if space.integer:
        low, high = math.ceil(lo), math.floor(hi)
        if space.log:
            value = math.exp(math.log(low) + u * (math.log(high + 1) - math.log(low)))
            return min(max(int(value), low), high)
        return min(low + int(u * (high - low + 1)), high)
    if space.log:
        return _round(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
    return _round(lo + u * (hi - lo))


def trial_parameters(search: api.SearchSpec, index: int) -> dict[str, api.Scalar]:
    """The hyperparameters trial ``index`` sets (on top of ``spec.estimator``'s)."""
    problem = search.problem()
    if problem is not None:
        raise ValueError(problem)
    count = trial_count(search)
    if not 0 <= index < count:
        raise ValueError(f"trial index {index} is outside the search's {count} trials")
    names = sorted(search.parameters)
    if search.algorithm == "grid":
        grid = itertools.product(*(search.parameters[n].values or () for n in names))
        combination = next(itertools.islice(grid, index, None))
        return dict(zip(names, combination, strict=True))
    return {n: _draw(search.parameters[n], _uniform(search.seed, index, n)) for n in names}


def all_trials(search: api.SearchSpec) -> list[dict[str, api.Scalar]]:
    """Every trial's hyperparameters, by index."""
    return [trial_parameters(search, i) for i in range(trial_count(search))]


def trial_spec(spec: api.TrainingJobSpec, index: int) -> api.TrainingJobSpec:
    """The plain (search-free) spec that trial ``index`` trains: the estimator's
    hyperparameters with the trial's on top."""
    if spec.search is None:
        raise ValueError("the spec has no spec.search")
    chosen = trial_parameters(spec.search, index)
    estimator = spec.estimator.model_copy(
        update={"hyperparameters": {**spec.estimator.hyperparameters, **chosen}}
    )
    return spec.model_copy(update={"estimator": estimator, "search": None})


def as_text(value: api.Scalar) -> str:
    """How a hyperparameter value is shown (status, lineage, ``kubectl kubeloop runs``)."""
    if isinstance(value, str):
        return value[:256]
    return json.dumps(value)


def text_parameters(parameters: dict[str, api.Scalar]) -> dict[str, str]:
    return {k: as_text(v) for k, v in sorted(parameters.items())}


def better(metric: str, a: float, b: float) -> bool:
    """Whether ``a`` beats ``b`` on ``metric`` (lower is better for losses and errors)."""
    return a < b if metric in api.LOWER_IS_BETTER else a > b


def direction(metric: str) -> str:
    return "minimize" if metric in api.LOWER_IS_BETTER else "maximize"
