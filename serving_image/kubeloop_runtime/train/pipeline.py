"""Building the scikit-learn Pipeline a TrainingJob asks for.

The estimator class comes only from :data:`kubeloop_runtime.api.ESTIMATORS`; there is no
way to name any other import path. Hyperparameters are checked against the estimator's own
``get_params()`` before anything is fitted.
"""

from __future__ import annotations

import importlib
from typing import Any

from sklearn import preprocessing
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from kubeloop_runtime import api
from kubeloop_runtime.train.errors import InvalidSpecError

_SCALERS = {
    "standard": "StandardScaler",
    "minmax": "MinMaxScaler",
    "robust": "RobustScaler",
}
# The categorical imputer's fill value for strategy "constant".
MISSING_CATEGORY = "__missing__"
# Defaults we set unless the spec does: LightGBM logs to stdout (the CLI's result line);
# the boosting libraries use every core unless told, as scikit-learn's ensembles do not.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "LGBMClassifier": {"verbose": -1},
    "LGBMRegressor": {"verbose": -1},
}


def estimator_class(name: str) -> type[Any]:
    """The scikit-learn class for an allowlisted estimator name."""
    try:
        path, _task = api.ESTIMATORS[name]
    except KeyError:
        raise InvalidSpecError(
            f"spec.estimator.type: unknown estimator {name!r};"
            f" allowed: {', '.join(sorted(api.ESTIMATORS))}"
        ) from None
    module, _, cls_name = path.rpartition(".")
    cls: type[Any] = getattr(importlib.import_module(module), cls_name)
    return cls


def make_estimator(spec: api.EstimatorSpec, seed: int) -> Any:
    """An unfitted estimator with the spec's hyperparameters (and our seed by default)."""
    estimator = estimator_class(spec.type)()
    valid = estimator.get_params(deep=False)
    unknown = sorted(set(spec.hyperparameters) - set(valid))
    if unknown:
        raise InvalidSpecError(
            f"spec.estimator.hyperparameters: unknown hyperparameter {unknown[0]!r} for"
            f" {spec.type}; valid: {', '.join(sorted(valid))}"
        )
    params: dict[str, Any] = {**_DEFAULTS.get(spec.type, {}), **spec.hyperparameters}
    if "random_state" in valid and "random_state" not in params:
        params["random_state"] = seed
    estimator.set_params(**params)
    # Values too (types, ranges, choices), with the rules scikit-learn applies at fit time:
    # a bad value is an InvalidSpec before any data is read, never a failure after loading.
    # (XGBoost and LightGBM declare no such rules; they check values when fitting.)
    validate = getattr(estimator, "_validate_params", None)
    if callable(validate) and hasattr(estimator, "_parameter_constraints"):
        try:
            validate()
        except InvalidParameterError as e:
            raise InvalidSpecError(f"spec.estimator.hyperparameters: {e}") from e
    return estimator


def build_pipeline(spec: api.TrainingJobSpec, numeric: list[str], categorical: list[str]) -> Any:
    """ColumnTransformer (impute, scale, one-hot) followed by the estimator.

    The transformer output is always dense (``sparse_threshold=0``) so that every
    allowlisted estimator and the ONNX converter accept it.
    """
    pre = spec.preprocessing
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        steps: list[tuple[str, Any]] = []
        if pre.impute.numeric != "none":
            steps.append(("impute", SimpleImputer(strategy=pre.impute.numeric)))
        if pre.scaling != "none":
            steps.append(("scale", getattr(preprocessing, _SCALERS[pre.scaling])()))
        transformers.append(("numeric", Pipeline(steps) if steps else "passthrough", numeric))
    if categorical:
        cat_steps: list[tuple[str, Any]] = []
        if pre.impute.categorical == "most_frequent":
            cat_steps.append(("impute", SimpleImputer(strategy="most_frequent")))
        elif pre.impute.categorical == "constant":
            cat_steps.append(
                ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY))
            )
        cat_steps.append(("onehot", preprocessing.OneHotEncoder(handle_unknown="ignore")))
        transformers.append(("categorical", Pipeline(cat_steps), categorical))
    columns = ColumnTransformer(transformers, sparse_threshold=0.0, verbose_feature_names_out=False)
    estimator = make_estimator(spec.estimator, spec.evaluation.seed)
    return Pipeline([("preprocess", columns), ("estimator", estimator)])


def scalar_parameters(estimator: Any) -> dict[str, str]:
    """The estimator's scalar hyperparameters as strings (what a ModelVersion records)."""
    out: dict[str, str] = {}
    for name, value in sorted(estimator.get_params(deep=False).items()):
        if value is None or isinstance(value, str | int | float | bool):
            out[name] = str(value)[:256]
    return dict(list(out.items())[:64])
