"""Typed models of Kubeloop's three custom resources: the one definition both sides use.

The operator (``kubeloop``) reconciles these specs and the runtime (``kubeloop_runtime``)
trains and serves from them, so they live here, in a light module that imports only
pydantic. Specs are parsed once at the edge (``TrainingJobSpec.model_validate(body["spec"])``)
and passed around typed. Field names are camelCase on the wire and snake_case in Python.

``crds/`` is generated from these models and ``kubeloop_runtime.resources`` (``make crds``,
``kubeloop_runtime.crdgen``): a field's docstring is its description, and the markers of
``kubeloop_runtime.crd`` (CEL rules, CRD defaults, formats) sit beside the fields they are
about (docs/development.md, "Changing the API"). The module is long because it is the whole
user-facing contract of the three kinds, one section each; it has no logic to split out.

The rest of what crosses the image boundary (the pods' environment variable names, the
``/monitoring`` document, the metric names the loop reads) is in
:mod:`kubeloop_runtime.contracts`, re-exported here; ``KUBELOOP_SERVING`` is
:class:`ServingConfig`, below.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from pydantic.alias_generators import to_camel

from kubeloop_runtime.contracts import *  # noqa: F403  (re-exported: one place to look)
from kubeloop_runtime.contracts import GRPC_PORT, HTTP_PORT
from kubeloop_runtime.crd import IMMUTABLE, INT64, Cel, Default, Untyped, keys_at_most

GROUP = "kubeloop.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Plurals, as the API server knows them.
TRAININGJOBS = "trainingjobs"
MODELVERSIONS = "modelversions"
INFERENCESERVICES = "inferenceservices"

# Label keys, set on every object Kubeloop creates.
LABEL_MODEL = f"{GROUP}/model"
LABEL_VERSION = f"{GROUP}/version"
LABEL_TRAININGJOB = f"{GROUP}/trainingjob"
LABEL_INFERENCESERVICE = f"{GROUP}/inferenceservice"
LABEL_MODELVERSION = f"{GROUP}/modelversion"
LABEL_ROLE = f"{GROUP}/role"  # "stable" or "canary" on predictor Deployments and pods
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "kubeloop"

# Annotations.
ANNOTATION_RETRAIN = f"{GROUP}/retrain"  # `kubectl annotate isvc x kubeloop.io/retrain=now`
# `kubectl annotate isvc x kubeloop.io/rollback=<canary ModelVersion>`: roll the loop's
# canary back (what `kubectl kubeloop rollback` does; an editor may, the status is not theirs).
ANNOTATION_ROLLBACK = f"{GROUP}/rollback"
ANNOTATION_TRIGGER = f"{GROUP}/trigger"  # on a TrainingJob started by the closed loop (JSON)

# Condition types.
COND_READY = "Ready"
COND_SUCCEEDED = "Succeeded"

# The artifact volume is mounted here in training and serving pods.
ARTIFACT_MOUNT_PATH = "/var/lib/kubeloop/artifacts"

# A predictor pod's shutdown (kubeloop_runtime.serve.server): on SIGTERM kubeloop-serve keeps
# answering for SERVE_DRAIN_SECONDS with readiness at 503 (Services drop the pod meanwhile),
# then finishes requests in flight for up to SERVE_GRACEFUL_SECONDS; the pod's
# terminationGracePeriodSeconds covers both.
SERVE_DRAIN_SECONDS = 5
SERVE_GRACEFUL_SECONDS = 30
SERVE_TERMINATION_GRACE_SECONDS = SERVE_DRAIN_SECONDS + SERVE_GRACEFUL_SECONDS + 5
# ConfigMap and PVC dataset sources are mounted under this directory in training pods.
DATA_MOUNT_PATH = "/var/lib/kubeloop/data"

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
COLUMN_NAME = r"^[^\x00-\x1f]{1,128}$"

ModelName = Annotated[str, Field(min_length=1, max_length=40, pattern=DNS1123_LABEL)]
ObjectName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS1123_LABEL)]
ColumnName = Annotated[str, Field(min_length=1, max_length=128)]
MetricName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_]*$")]
Scalar = int | float | str | bool | None


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields are an error, instances are immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )
    # A field's docstring (the string under it) is its description in crds/. crdgen reads it
    # from the source; pydantic's use_attribute_docstrings would do it at every import.

    def wire(self) -> dict[str, Any]:
        """The JSON-ready camelCase form, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Task(enum.StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


# The estimator allowlist: the name users write -> (scikit-learn import path, task).
# The trainer imports only from this table; there is no way to name another class.
ESTIMATORS: dict[str, tuple[str, Task]] = {
    "LogisticRegression": ("sklearn.linear_model.LogisticRegression", Task.CLASSIFICATION),
    "RandomForestClassifier": ("sklearn.ensemble.RandomForestClassifier", Task.CLASSIFICATION),
    "GradientBoostingClassifier": (
        "sklearn.ensemble.GradientBoostingClassifier",
        Task.CLASSIFICATION,
    ),
    "HistGradientBoostingClassifier": (
        "sklearn.ensemble.HistGradientBoostingClassifier",
        Task.CLASSIFICATION,
    ),
    "DecisionTreeClassifier": ("sklearn.tree.DecisionTreeClassifier", Task.CLASSIFICATION),
    "KNeighborsClassifier": ("sklearn.neighbors.KNeighborsClassifier", Task.CLASSIFICATION),
    "SVC": ("sklearn.svm.SVC", Task.CLASSIFICATION),
    "GaussianNB": ("sklearn.naive_bayes.GaussianNB", Task.CLASSIFICATION),
    "LinearRegression": ("sklearn.linear_model.LinearRegression", Task.REGRESSION),
    "Ridge": ("sklearn.linear_model.Ridge", Task.REGRESSION),
    "Lasso": ("sklearn.linear_model.Lasso", Task.REGRESSION),
    "ElasticNet": ("sklearn.linear_model.ElasticNet", Task.REGRESSION),
    "RandomForestRegressor": ("sklearn.ensemble.RandomForestRegressor", Task.REGRESSION),
    "GradientBoostingRegressor": ("sklearn.ensemble.GradientBoostingRegressor", Task.REGRESSION),
    "HistGradientBoostingRegressor": (
        "sklearn.ensemble.HistGradientBoostingRegressor",
        Task.REGRESSION,
    ),
    "DecisionTreeRegressor": ("sklearn.tree.DecisionTreeRegressor", Task.REGRESSION),
    "KNeighborsRegressor": ("sklearn.neighbors.KNeighborsRegressor", Task.REGRESSION),
    "SVR": ("sklearn.svm.SVR", Task.REGRESSION),
    # Gradient-boosting libraries, through their scikit-learn estimators (docs/training.md).
    "XGBClassifier": ("xgboost.XGBClassifier", Task.CLASSIFICATION),
    "XGBRegressor": ("xgboost.XGBRegressor", Task.REGRESSION),
    "LGBMClassifier": ("lightgbm.LGBMClassifier", Task.CLASSIFICATION),
    "LGBMRegressor": ("lightgbm.LGBMRegressor", Task.REGRESSION),
}
EstimatorType = Literal[
    "LogisticRegression",
    "RandomForestClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
    "DecisionTreeClassifier",
    "KNeighborsClassifier",
    "SVC",
    "GaussianNB",
    "LinearRegression",
    "Ridge",
    "Lasso",
    "ElasticNet",
    "RandomForestRegressor",
    "GradientBoostingRegressor",
    "HistGradientBoostingRegressor",
    "DecisionTreeRegressor",
    "KNeighborsRegressor",
    "SVR",
    "XGBClassifier",
    "XGBRegressor",
    "LGBMClassifier",
    "LGBMRegressor",
]

# scikit-learn's bundled datasets that ship inside the wheel (no download).
BuiltinDataset = Literal["iris", "wine", "breast_cancer", "diabetes", "digits", "linnerud"]

CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
# Metrics where lower is better; everything else is higher-is-better.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})

CLASSIFIERS = [name for name, (_, task) in ESTIMATORS.items() if task is Task.CLASSIFICATION]


# A quality gate and a search name only metrics the estimator's task computes (CEL; the
# pydantic check is TrainingJobSpec._gate_metrics_fit_task).
def _metric_fits_task(metric: str) -> str:
    """CEL: the metric (an expression) is one the estimator's task computes, or a cv_* one."""
    return (
        f"{metric}.startsWith('cv_') || (self.estimator.type in {CLASSIFIERS}"
        f" ? {metric} in {list(CLASSIFICATION_METRICS)} : {metric} in {list(REGRESSION_METRICS)})"
    )


_METRICS_OF_TASKS = (
    f"(classification: {', '.join(CLASSIFICATION_METRICS)};"
    f" regression: {', '.join(REGRESSION_METRICS)}; or any cv_* metric)"
)
GATE_METRICS_FIT_TASK = Cel(
    "!has(self.qualityGate) || !has(self.qualityGate.thresholds) ||"
    f" self.qualityGate.thresholds.all(t, {_metric_fits_task('t.metric')})",
    "{path}.qualityGate.thresholds: a metric is not computed for the estimator's task"
    f" {_METRICS_OF_TASKS}",
    field_path=".qualityGate.thresholds",
)
SEARCH_METRIC_FITS_TASK = Cel(
    f"!has(self.search) || !has(self.search.metric) || {_metric_fits_task('self.search.metric')}",
    "{path}.search.metric: the metric is not computed for the estimator's task"
    f" {_METRICS_OF_TASKS}",
    field_path=".search.metric",
)


# --------------------------------------------------------------------------- TrainingJob


class ConfigMapSource(Model):
    name: ObjectName
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class PVCSource(Model):
    claim_name: ObjectName
    path: Annotated[
        str,
        Field(min_length=1, max_length=512, pattern=r"^[^/].*$"),
        Cel("!self.matches('(^|/)[.][.](/|$)')", "{path} must not contain '..'"),
    ]
    """Path of the file inside the volume, relative, without ".."."""

    @model_validator(mode="after")
    def _no_parent(self) -> PVCSource:
        if ".." in self.path.split("/"):
            raise ValueError("spec.dataset.pvc.path must not contain '..'")
        return self


# s3://, gs:// or az:// with a bucket (container) name, then an optional key or prefix.
OBJECT_URI = r"^(s3|gs|az)://[a-z0-9][-a-z0-9._]{1,254}(/\S*)?$"
ObjectUri = Annotated[str, Field(max_length=1024, pattern=OBJECT_URI)]


class ObjectStorage(Model):
    """How pods reach s3://, gs:// and az:// URIs. Unset fields fall back to the operator's
    settings, then to the pod's own environment (web identity, instance roles).
    """

    endpoint: (
        Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s/]+(/\S*)?$")] | None
    ) = None
    """An S3-compatible endpoint (versitygw, Ceph, R2, GCS interoperability); unset means
    AWS."""
    region: Annotated[str, Field(max_length=64, pattern=r"^[a-z0-9-]+$")] | None = None
    # false: virtual-hosted style (https://bucket.endpoint/key).
    path_style: bool | None = None
    """Path-style requests (endpoint/bucket/key), which most S3-compatible servers need."""
    # docs/storage.md. Never read into status.
    secret_name: ObjectName | None = None
    """A Secret in this namespace whose keys become the pods' environment (for example
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). Its values are never copied anywhere."""


@Cel(
    "[has(self.builtin), has(self.url), has(self.uri), has(self.configMap), has(self.pvc),"
    " has(self.path)].filter(x, x).size() == 1",
    "{path}: exactly one of builtin, url, uri, configMap, pvc, path is required",
)
@Cel(
    "has(self.builtin) || has(self.target)",
    "{path}.target is required unless {path}.builtin is set",
    field_path=".target",
    reason="FieldValueRequired",
)
class DatasetSpec(Model):
    """Exactly one of builtin, url, uri, configMap, pvc, path."""

    builtin: BuiltinDataset | None = None
    """A dataset bundled with scikit-learn (no download)."""
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://\S+$")] | None = None
    """An http(s) URL of a CSV or Parquet file."""
    uri: ObjectUri | None = None
    """An object (s3://bucket/data.csv) or a prefix ending in / (every .csv or .parquet object
    under it, concatenated in key order), read through storage."""
    config_map: ConfigMapSource | None = None
    """A key of a ConfigMap in the TrainingJob's namespace."""
    pvc: PVCSource | None = None
    """A file on a PersistentVolumeClaim in the TrainingJob's namespace."""
    # Also what `kubeloop-train` takes on a laptop.
    path: Annotated[str, Field(max_length=1024)] | None = None
    """A file already inside the training container (how configMap and pvc sources arrive
    there)."""
    format: Literal["csv", "parquet"] | None = None
    """File format; default from the file name, else csv."""
    target: ColumnName | None = None
    """The label column. Builtin datasets default to "target"."""
    features: Annotated[list[ColumnName], Field(max_length=256)] | None = None
    """Feature columns to use; default all but the target."""

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        given = [
            n
            for n, v in (
                ("builtin", self.builtin),
                ("url", self.url),
                ("uri", self.uri),
                ("configMap", self.config_map),
                ("pvc", self.pvc),
                ("path", self.path),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "spec.dataset: exactly one of builtin, url, uri, configMap, pvc, path is required"
                f" (got {', '.join(given) or 'none'})"
            )
        if self.builtin is None and self.target is None:
            raise ValueError("spec.dataset.target is required unless spec.dataset.builtin is set")
        return self


class EstimatorSpec(Model):
    type: EstimatorType
    hyperparameters: Annotated[
        dict[str, Annotated[Scalar, Untyped(max_length=256)]], Field(max_length=32)
    ] = Field(default_factory=dict)
    """Constructor arguments of the estimator: scalar values only (string of at most 256
    characters, number, boolean, null)."""

    @property
    def task(self) -> Task:
        return ESTIMATORS[self.type][1]


class ImputeSpec(Model):
    numeric: Literal["none", "mean", "median", "most_frequent"] = "mean"
    categorical: Literal["none", "most_frequent", "constant"] = "most_frequent"


class PreprocessingSpec(Model):
    scaling: Literal["none", "standard", "minmax", "robust"] = "none"
    categorical: Annotated[list[ColumnName], Field(max_length=128)] = Field(default_factory=list)
    """Columns to one-hot encode."""
    impute: Annotated[ImputeSpec, Default({})] = Field(default_factory=ImputeSpec)
    """How missing values are filled."""


class EvaluationSpec(Model):
    test_size: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    """Fraction of rows held out for the test set."""
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 42
    cv_folds: Annotated[int, Field(ge=0, le=20)] = 0
    """Cross-validation folds on the training split; 0 disables."""
    stratify: bool = True
    """Stratify the split by class (classification only)."""


@Cel("has(self.min) || has(self.max)", "a {path} item needs min or max")
class Threshold(Model):
    metric: MetricName
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError(f"spec.qualityGate.thresholds[{self.metric}]: set min or max")
        return self


class QualityGateSpec(Model):
    thresholds: Annotated[list[Threshold], Field(max_length=16)] = Field(default_factory=list)


class ArtifactSpec(Model):
    # joblib (pickle) runs code on load.
    format: Literal["skops", "joblib"] = "skops"
    """skops is safe to load; joblib (pickle) must be asked for."""
    onnx: bool = True
    """Also export an ONNX graph, used only when its predictions match."""
    # Reached through spec.storage.
    uri: ObjectUri | None = None
    """Write the artifacts to an object store (s3://bucket/prefix; each run under
    <namespace>/<name>) instead of the artifact PersistentVolumeClaim."""


class RunPolicy(Model):
    backoff_limit: Annotated[int, Field(ge=0, le=10)] = 0
    active_deadline_seconds: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] | None = None
    ttl_seconds_after_finished: Annotated[int, Field(ge=0, le=30 * 24 * 3600)] | None = None
    suspend: bool = False


class Toleration(Model):
    key: Annotated[str, Field(max_length=253)] | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: Annotated[str, Field(max_length=63)] | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


Quantity = Annotated[str, Field(max_length=32, pattern=r"^[0-9.]+[a-zA-Z]*$")]


class Resources(Model):
    requests: Annotated[dict[str, Quantity], Field(max_length=8), keys_at_most(253)] | None = None
    limits: Annotated[dict[str, Quantity], Field(max_length=8), keys_at_most(253)] | None = None


AnomalyKind = Literal[
    "MissingColumn", "ExtraColumn", "TypeChanged", "UnseenCategory", "OutOfRange", "AllNull",
    "Drift",
]  # fmt: skip
ANOMALY_KINDS: tuple[str, ...] = AnomalyKind.__args__  # type: ignore[attr-defined]


class ValidationSpec(Model):
    """Data validation before training (TFX's ExampleValidator idea).

    The new dataset is checked against the training statistics of a reference
    ModelVersion (``reference``, default ``spec.champion``: the version serving now) before
    anything is fitted. ``policy: fail`` stops the run with reason DataValidationFailed;
    ``warn`` trains anyway. Either way the anomalies, per column, are in the result and in
    the TrainingJob's ``DataValidated`` condition.
    """

    policy: Literal["fail", "warn"] = "fail"
    """fail stops the run (DataValidationFailed); warn trains anyway."""
    reference: ObjectName | None = None
    """The ModelVersion whose statistics are the expected schema."""
    max_out_of_range_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    """A numeric column is OutOfRange when more than this share of its values lies outside
    the reference's [min, max]."""
    # 0.25: a major shift.
    max_psi: Annotated[float, Field(gt=0.0, le=10.0)] = 0.25
    """A column has Drift when its PSI reaches this."""


class TriggerRef(Model):
    """Why the closed loop started a TrainingJob (lineage)."""

    inference_service: ObjectName
    signal: Literal["drift", "accuracy", "error", "schedule", "manual", "data"]
    value: Annotated[str, Field(max_length=256)] | None = None
    time: Annotated[str, Field(max_length=64)] | None = None


# Hyperparameter search (docs/training.md#hyperparameter-search): at most this many trials
# and pods at once, so the Indexed Job and status.trials stay small.
MAX_TRIALS = 64
MAX_SEARCH_PARAMETERS = 8
MAX_SEARCH_PARALLELISM = 16
MAX_SEARCH_VALUES = 32
# A hyperparameter name: a map key, so its form is a CEL rule on the map (OpenAPI cannot bound
# keys) and a check in SearchSpec.
HYPERPARAMETER_NAME_MAX = 63
HYPERPARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HYPERPARAMETER_NAMES = Cel(
    f"self.all(k, size(k) <= {HYPERPARAMETER_NAME_MAX} &&"
    f" k.matches('{HYPERPARAMETER_NAME.pattern}'))",
    "{path}: names are hyperparameter names (letters, digits, _; at most"
    f" {HYPERPARAMETER_NAME_MAX} characters)",
)


@Cel(
    "(has(self.min) == has(self.max)) && (!has(self.min) || self.min <= self.max)",
    "{path}: a range needs min <= max",
)
@Cel(
    "!has(self.log) || !self.log || !has(self.min) || self.min > 0.0",
    "{path}: a log range needs min > 0",
)
class SearchSpace(Model):
    """Either values, or min and max (random search). CEL cannot see the untyped values
    list, so "one of the two" is checked by the operator (InvalidSpec)."""

    values: (
        Annotated[
            list[Annotated[Scalar, Untyped(max_length=256)]],
            Field(min_length=1, max_length=MAX_SEARCH_VALUES),
        ]
        | None
    ) = None
    """The values to try: scalars (string of at most 256 characters, number, boolean, null)."""
    min: float | None = None
    max: float | None = None
    log: bool = False
    """Draw uniformly in log space (min > 0)."""
    integer: bool = False
    """Draw a whole number in [min, max]."""

    @property
    def ranged(self) -> bool:
        return self.min is not None or self.max is not None

    # What admission checks too (CEL); "values or a range" is SearchSpec.problem().
    @model_validator(mode="after")
    def _range(self) -> SearchSpace:
        if self.ranged:
            if self.min is None or self.max is None or self.min > self.max:
                raise ValueError("spec.search.parameters: a range needs min <= max")
            if self.log and self.min <= 0:
                raise ValueError("spec.search.parameters: a log range needs min > 0")
        for v in self.values or ():
            if isinstance(v, str) and len(v) > 256:
                raise ValueError("spec.search.parameters: string values are at most 256 characters")
        return self


@Cel(
    "(has(self.algorithm) && self.algorithm != 'grid') ||"
    " self.parameters.all(k, !has(self.parameters[k].min) && !has(self.parameters[k].max))",
    "{path}.parameters: a grid needs values for every parameter (a min/max range is for random"
    " search)",
    field_path=".parameters",
)
class SearchSpec(Model):
    """Hyperparameter search: one Indexed Job whose pod i trains trial i, at most parallelism
    pods at once; each trial's hyperparameters derive from this spec and i alone, so a
    retried pod trains the same trial. The best trial by metric is registered as the
    ModelVersion; failed trials are reported and fail the search only when all fail."""

    # Trial i's hyperparameters are a pure function of this spec and i
    # (kubeloop_runtime.search): grid walks the product of every values list in
    # parameter-name order; random draws each parameter from a hash of seed, i and its name.
    algorithm: Literal["grid", "random"] = "grid"
    """grid: every combination of the values lists (at most maxTrials); random: maxTrials
    draws, seeded."""
    parameters: Annotated[
        dict[str, SearchSpace],
        Field(min_length=1, max_length=MAX_SEARCH_PARAMETERS),
        HYPERPARAMETER_NAMES,
    ]
    """Estimator hyperparameters to search, by name; they override
    spec.estimator.hyperparameters in each trial."""
    max_trials: Annotated[int, Field(ge=1, le=MAX_TRIALS)] = 10
    """random: the number of trials; grid: the most combinations allowed (a larger grid is
    refused)."""
    parallelism: Annotated[int, Field(ge=1, le=MAX_SEARCH_PARALLELISM)] = 2
    """At most this many trial pods run at once."""
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    """Seed of random search."""
    metric: MetricName | None = None
    """The metric that ranks trials (lower is better for rmse, mae, log_loss); default the
    quality gate's first threshold, else accuracy or rmse."""

    @model_validator(mode="after")
    def _grid_has_values(self) -> SearchSpec:
        bad = sorted(
            n
            for n in self.parameters
            if len(n) > HYPERPARAMETER_NAME_MAX or not HYPERPARAMETER_NAME.match(n)
        )
        if bad:
            raise ValueError(
                "spec.search.parameters: names are hyperparameter names (letters, digits, _;"
                f" at most {HYPERPARAMETER_NAME_MAX} characters): {', '.join(bad)}"
            )
        if self.algorithm == "grid":
            ranged = sorted(n for n, sp in self.parameters.items() if sp.ranged)
            if ranged:
                raise ValueError(
                    f"spec.search.parameters: a grid needs values for every parameter"
                    f" (a range: {', '.join(ranged)})"
                )
        return self

    def problem(self) -> str | None:
        """What admission cannot check (CEL cannot see the untyped values lists), so the
        operator refuses it (InvalidSpec) and the trainer too: each parameter has values or
        a range, not both, and a grid has at most maxTrials combinations. A spec that
        admission accepts always parses; this says whether it can run."""
        kinds = sorted(n for n, sp in self.parameters.items() if (sp.values is None) != sp.ranged)
        if kinds:
            return f"spec.search.parameters: set either values, or min and max ({', '.join(kinds)})"
        if self.algorithm == "grid":
            size = 1
            for space in self.parameters.values():
                size *= len(space.values or ())
            if size > self.max_trials:
                return (
                    f"spec.search: the grid has {size} combinations, more than"
                    f" maxTrials {self.max_trials}"
                )
        return None


@Cel(
    "!has(self.validation) || has(self.validation.reference) || has(self.champion)",
    "{path}.validation: set {path}.validation.reference (a ModelVersion) or {path}.champion"
    " to validate the dataset against",
    field_path=".validation",
)
@GATE_METRICS_FIT_TASK
@SEARCH_METRIC_FITS_TASK
class TrainingJobSpec(Model):
    model: ModelName
    """Name of the model this run trains a version of (a DNS-1123 label). Every TrainingJob of
    the same model adds the next version number."""
    dataset: DatasetSpec
    """Where the data comes from: exactly one of builtin, url, uri, configMap, pvc, path.
    target is required unless builtin is set."""
    estimator: EstimatorSpec
    """The scikit-learn estimator, from an allowlist, and its parameters."""
    preprocessing: Annotated[PreprocessingSpec, Default({})] = Field(
        default_factory=PreprocessingSpec
    )
    """Feature preprocessing applied inside the fitted pipeline."""
    evaluation: Annotated[EvaluationSpec, Default({})] = Field(default_factory=EvaluationSpec)
    """How the model is evaluated."""
    quality_gate: Annotated[QualityGateSpec, Default({})] = Field(default_factory=QualityGateSpec)
    """Thresholds the test metrics must meet; a run that misses one fails and its model is
    registered with gate.passed=false, never served."""
    artifact: Annotated[ArtifactSpec, Default({})] = Field(default_factory=ArtifactSpec)
    """How the fitted model is saved."""
    run_policy: Annotated[RunPolicy, Default({})] = Field(default_factory=RunPolicy)
    """Settings of the training Job."""
    resources: Resources | None = None
    """Compute requests and limits of the training container."""
    image: Annotated[str, Field(max_length=512)] | None = None
    """Training image; default from the operator's settings."""
    # How to reach spec.dataset.uri and spec.artifact.uri (object storage).
    storage: ObjectStorage | None = None
    node_selector: (
        Annotated[
            dict[str, Annotated[str, Field(max_length=63)]],
            Field(max_length=16),
            keys_at_most(317, "keys"),
        ]
        | None
    ) = None
    tolerations: Annotated[list[Toleration], Field(max_length=16)] | None = None
    service_account_name: ObjectName | None = None
    trigger: TriggerRef | None = None
    """Set by the closed loop on the TrainingJobs it starts (lineage); users leave it empty."""
    # The version serving this InferenceService (closed loop).
    champion: ObjectName | None = None
    """A ModelVersion to compare against (the closed loop sets the one serving)."""
    # Unset: the task's default metric (accuracy / rmse) and no regression allowed.
    champion_gate: ChampionGate | None = None
    """How the challenger is compared with spec.champion on the same held-out data (the
    closed loop copies spec.retraining.championGate)."""
    validation: ValidationSpec | None = None
    """Data validation before training: the dataset against the training statistics of a
    reference ModelVersion (default spec.champion). Anomalies per column in
    status.validation and the DataValidated condition."""
    # Described by SearchSpec's docstring.
    search: SearchSpec | None = None

    @property
    def search_metric(self) -> str:
        """The metric that ranks search trials: spec.search.metric, else the quality gate's
        first threshold, else the task's default (accuracy, rmse)."""
        if self.search is not None and self.search.metric is not None:
            return self.search.metric
        if self.quality_gate.thresholds:
            return self.quality_gate.thresholds[0].metric
        return "accuracy" if self.estimator.task is Task.CLASSIFICATION else "rmse"

    @property
    def validation_reference(self) -> str | None:
        """The ModelVersion whose statistics the dataset is validated against (None: no check)."""
        if self.validation is None:
            return None
        return self.validation.reference or self.champion

    @model_validator(mode="after")
    def _validation_has_reference(self) -> TrainingJobSpec:
        if self.validation is not None and self.validation_reference is None:
            raise ValueError(
                "spec.validation: set spec.validation.reference (a ModelVersion) or"
                " spec.champion to validate the dataset against"
            )
        return self

    @model_validator(mode="after")
    def _gate_metrics_fit_task(self) -> TrainingJobSpec:
        allowed = (
            CLASSIFICATION_METRICS
            if self.estimator.task is Task.CLASSIFICATION
            else REGRESSION_METRICS
        )
        for t in self.quality_gate.thresholds:
            if t.metric not in allowed and not t.metric.startswith("cv_"):
                raise ValueError(
                    f"spec.qualityGate.thresholds: metric {t.metric!r} is not computed for"
                    f" {self.estimator.task.value}; use one of {', '.join(allowed)}"
                )
        metric = self.search.metric if self.search is not None else None
        if metric is not None and metric not in allowed and not metric.startswith("cv_"):
            raise ValueError(
                f"spec.search.metric: {metric!r} is not computed for"
                f" {self.estimator.task.value}; use one of {', '.join(allowed)}"
            )
        return self


# -------------------------------------------------------------------------- ModelVersion


Sha256 = Annotated[str, Field(max_length=64, pattern=r"^[a-f0-9]{64}$")]


class ArtifactRef(Model):
    uri: Annotated[str, Field(min_length=1, max_length=1024)]
    sha256: Sha256
    format: Literal["skops", "joblib"]
    size_bytes: Annotated[int, Field(ge=0), INT64]
    onnx_uri: Annotated[str, Field(max_length=1024)] | None = None
    onnx_sha256: Sha256 | None = None
    reference_stats_uri: Annotated[str, Field(max_length=1024)] | None = None
    """Training-data statistics that drift detection compares with."""
    reference_stats_sha256: Sha256 | None = None
    # How serving pods reach an object-store URI (copied from the TrainingJob).
    storage: ObjectStorage | None = None


VersionString = Annotated[str, Field(max_length=32)]


class FrameworkInfo(Model):
    name: Literal["scikit-learn"] = "scikit-learn"
    python: VersionString
    sklearn: VersionString
    numpy: VersionString
    pandas: VersionString


class FeatureSpec(Model):
    name: ColumnName
    dtype: Literal["float64", "int64", "string", "bool"]
    categories: (
        Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=256)] | None
    ) = None
    """Known categories of a categorical input."""


class OutputSpec(Model):
    name: Annotated[str, Field(max_length=128)] = "predict"
    dtype: Literal["float64", "int64", "string", "bool"]
    classes: (
        Annotated[list[Annotated[Scalar, Untyped(max_length=128)]], Field(max_length=256)] | None
    ) = None
    """Class labels of a classifier, in the order of predict_proba columns: scalars (string of
    at most 128 characters, number, boolean)."""


# All inputs' categories together; keeps the largest ModelVersion well under 256 KiB.
MAX_SIGNATURE_CATEGORIES = 512


@Cel(
    "self.inputs.map(f, has(f.categories) ? size(f.categories) : 0).sum()"
    f" <= {MAX_SIGNATURE_CATEGORIES}",
    f"{{path}}.inputs: at most {MAX_SIGNATURE_CATEGORIES} categories in total over all inputs",
    field_path=".inputs",
)
class Signature(Model):
    inputs: Annotated[list[FeatureSpec], Field(min_length=1, max_length=256)]
    output: OutputSpec

    @model_validator(mode="after")
    def _bounded_categories(self) -> Signature:
        total = sum(len(f.categories or ()) for f in self.inputs)
        if total > MAX_SIGNATURE_CATEGORIES:
            raise ValueError(
                f"spec.signature.inputs: at most {MAX_SIGNATURE_CATEGORIES} categories in total"
                f" over all inputs (got {total})"
            )
        return self


class DatasetInfo(Model):
    sha256: Sha256
    rows: Annotated[int, Field(ge=0)]
    columns: Annotated[int, Field(ge=0)]
    source: Annotated[str, Field(max_length=2048)]


class TrialRef(Model):
    """The trial of a hyperparameter search a ModelVersion came from (lineage)."""

    index: Annotated[int, Field(ge=0, le=MAX_TRIALS - 1)]
    trials: Annotated[int, Field(ge=1, le=MAX_TRIALS)]
    metric: MetricName
    # The trial's own hyperparameters (the search's choice), as text.
    parameters: Annotated[
        dict[str, Annotated[str, Field(max_length=256)]],
        Field(max_length=MAX_SEARCH_PARAMETERS),
        keys_at_most(HYPERPARAMETER_NAME_MAX),
    ] = Field(default_factory=dict)


class Lineage(Model):
    training_job: ObjectName | None = None
    image: Annotated[str, Field(max_length=512)] | None = None
    trigger: TriggerRef | None = None
    """Why the closed loop retrained, when it did."""
    trial: TrialRef | None = None
    """The trial of the TrainingJob's hyperparameter search this version is (the best by
    metric), with the hyperparameters it chose."""


class GateResult(Model):
    passed: bool
    message: Annotated[str, Field(max_length=1024)] = ""


class ModelVersionSpec(Model):
    model: Annotated[ModelName, IMMUTABLE]
    version: Annotated[int, Field(ge=1), IMMUTABLE]
    """1, 2, 3, ... per model."""
    task: Annotated[Task, IMMUTABLE]
    artifact: Annotated[ArtifactRef, IMMUTABLE]
    """The fitted pipeline file and its companions, with checksums."""
    framework: Annotated[FrameworkInfo, IMMUTABLE]
    """Library versions the artifact was made with; serving checks them."""
    signature: Annotated[Signature, IMMUTABLE]
    """The model's inputs (in order) and output."""
    metrics: Annotated[
        dict[str, float], Field(max_length=32), Default({}), IMMUTABLE, keys_at_most(63)
    ] = Field(default_factory=dict)
    """Test-set metrics of this version."""
    parameters: Annotated[
        dict[str, Annotated[str, Field(max_length=256)]],
        Field(max_length=64),
        Default({}),
        IMMUTABLE,
        keys_at_most(128),
    ] = Field(default_factory=dict)
    """Effective estimator parameters, as strings."""
    dataset: Annotated[DatasetInfo, IMMUTABLE]
    """Fingerprint of the data this version was trained on."""
    lineage: Annotated[Lineage, Default({}), IMMUTABLE] = Field(default_factory=Lineage)
    """What produced this version."""
    gate: Annotated[GateResult, Default({"passed": True}), IMMUTABLE] = Field(
        default_factory=lambda: GateResult(passed=True)
    )
    """The quality-gate result of the training run."""
    # MLflow-style aliases.
    aliases: Annotated[
        list[ModelName],
        Field(max_length=16),
        Cel("self.all(a, self.exists_one(b, b == a))", "{path} must be unique"),
    ] = Field(default_factory=list)
    """Mutable names such as "production" that InferenceServices can serve by (model +
    alias). One holder per model: the operator moves an alias."""


# ---------------------------------------------------------------------- InferenceService


@Cel(
    "has(self.modelVersion) ? !has(self.model) && !has(self.alias) :"
    " has(self.model) && has(self.alias)",
    "{path}: set either modelVersion, or both model and alias",
)
class ModelRef(Model):
    """Either modelVersion (an object name) or model + alias."""

    model_version: ObjectName | None = None
    """Name of a ModelVersion in the same namespace."""
    model: ModelName | None = None
    alias: ModelName | None = None
    """Serve the ModelVersion of this model holding this alias."""

    @model_validator(mode="after")
    def _one(self) -> ModelRef:
        by_name = self.model_version is not None
        by_alias = self.model is not None or self.alias is not None
        if by_name == by_alias or (by_alias and (self.model is None or self.alias is None)):
            raise ValueError("spec.model: set either modelVersion, or both model and alias")
        return self


@Cel(
    "self.minReplicas <= self.maxReplicas",
    "{path}.minReplicas must be <= maxReplicas",
    field_path=".minReplicas",
)
class Autoscaling(Model):
    min_replicas: Annotated[int, Field(ge=1, le=100)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=100)] = 3
    target_cpu_utilization_percentage: Annotated[int, Field(ge=1, le=100)] = 80

    @model_validator(mode="after")
    def _order(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("spec.autoscaling.minReplicas must be <= maxReplicas")
        return self


IntOrPercent = Annotated[str, Field(max_length=8, pattern=r"^([0-9]+|[0-9]{1,3}%)$")]


class RolloutSpec(Model):
    max_surge: IntOrPercent = "25%"
    """A count ("1") or a percentage ("25%")."""
    max_unavailable: IntOrPercent = "0"
    progress_deadline_seconds: Annotated[int, Field(ge=10, le=3600)] = 600


class AnalysisSpec(Model):
    """Rules for automatic canary promotion or rollback."""

    window_seconds: Annotated[int, Field(ge=10, le=86400)] = 300
    min_requests: Annotated[int, Field(ge=0, le=1_000_000)] = 100
    """Requests the canary must have served before a decision."""
    max_error_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    max_p99_latency_seconds: Annotated[float, Field(gt=0.0, le=60.0)] | None = None
    min_accuracy: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    """Minimum accuracy on feedback (ground truth) received."""


class CanarySpec(Model):
    model_version: ObjectName
    traffic_percent: Annotated[int, Field(ge=0, le=100)] = 10
    analysis: AnalysisSpec | None = None
    """When set, the operator promotes or rolls back the canary on these rules after the
    window."""


class DriftSpec(Model):
    enabled: bool = True
    window_size: Annotated[int, Field(ge=50, le=100_000)] = 1000
    """Recent requests compared with the training data."""
    psi_threshold: Annotated[float, Field(gt=0.0, le=10.0)] = 0.1
    """Population stability index above which a feature drifted."""
    p_value: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    """Kolmogorov-Smirnov / chi-squared p-value below which a feature drifted."""
    dataset_drift_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    """Share of drifted features at which the dataset drifted."""


class MonitoringSpec(Model):
    drift: Annotated[DriftSpec, Default({})] = Field(default_factory=DriftSpec)
    prediction_log_sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # Ground truth arrives by request id; the oldest prediction is dropped first.
    feedback_capacity: Annotated[int, Field(ge=0, le=1_000_000)] = 10_000
    """Predictions remembered for feedback by request id."""
    feedback_window: Annotated[int, Field(ge=10, le=100_000)] = 500
    """Most recent feedback used for the live accuracy."""


class RetrainTriggers(Model):
    drift: bool = True
    accuracy_below: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    error_above: Annotated[float, Field(ge=0.0)] | None = None
    """Error rate (5xx share) above which to retrain."""
    schedule: Annotated[str, Field(max_length=64, pattern=r"^(\S+\s+){4}\S+$")] | None = None
    """A cron expression with five fields."""
    # The operator looks every dataPollSeconds.
    data_changed: bool = False
    """Retrain when the template's dataset changes (a new ETag or object under dataset.uri, a
    new ETag or Last-Modified of dataset.url, new content of the dataset.configMap key)."""
    data_poll_seconds: Annotated[int, Field(ge=10, le=86400)] = 60
    """How often the operator looks at the dataset's version."""


class ChampionGate(Model):
    enabled: bool = True
    metric: MetricName | None = None
    """Default accuracy (classification) or rmse (regression)."""
    # And still pass.
    max_regression: Annotated[float, Field(ge=0.0)] = 0.0
    """How far below the champion the challenger may be (absolute)."""


@GATE_METRICS_FIT_TASK
class TrainingTemplate(Model):
    """A TrainingJob spec without the model (taken from what the service serves)."""

    dataset: DatasetSpec
    """As TrainingJob spec.dataset."""
    estimator: EstimatorSpec
    """As TrainingJob spec.estimator."""
    preprocessing: Annotated[PreprocessingSpec, Default({})] = Field(
        default_factory=PreprocessingSpec
    )
    evaluation: Annotated[EvaluationSpec, Default({})] = Field(default_factory=EvaluationSpec)
    quality_gate: Annotated[QualityGateSpec, Default({})] = Field(default_factory=QualityGateSpec)
    artifact: Annotated[ArtifactSpec, Default({})] = Field(default_factory=ArtifactSpec)
    run_policy: Annotated[RunPolicy, Default({})] = Field(default_factory=RunPolicy)
    resources: Resources | None = None
    image: Annotated[str, Field(max_length=512)] | None = None
    storage: ObjectStorage | None = None
    validation: ValidationSpec | None = None
    """Data validation before training: the dataset against the training statistics of a
    reference ModelVersion (default: the version serving now). Anomalies per column in
    status.validation and the DataValidated condition."""


class RetrainingSpec(Model):
    enabled: bool = True
    triggers: Annotated[RetrainTriggers, Default({})] = Field(default_factory=RetrainTriggers)
    template: TrainingTemplate
    """A TrainingJob spec without model (the served model is used)."""
    cooldown_seconds: Annotated[int, Field(ge=0, le=30 * 86400)] = 3600
    """Minimum time between two retrains of this service."""
    max_concurrent: Annotated[int, Field(ge=1, le=10)] = 1
    champion_gate: Annotated[ChampionGate, Default({})] = Field(default_factory=ChampionGate)
    """The challenger must not fall below the serving version."""
    canary_traffic_percent: Annotated[int, Field(ge=1, le=100)] = 25
    analysis: Annotated[AnalysisSpec, Default({})] = Field(default_factory=AnalysisSpec)
    """Promotion rules for the retrained canary."""


MaxBatchSize = Annotated[int, Field(ge=1, le=1024)]
MaxBatchDelayMs = Annotated[float, Field(ge=0.0, le=100.0)]


class InferenceServiceSpec(Model):
    model: ModelRef
    """What to serve. Either modelVersion, or both model and alias."""
    replicas: Annotated[int, Field(ge=0, le=100)] = 1
    """Predictor replicas when autoscaling is not set."""
    autoscaling: Autoscaling | None = None
    """A HorizontalPodAutoscaler on CPU; replaces replicas."""
    resources: Resources | None = None
    """Compute requests and limits of the predictor container."""
    rollout: Annotated[RolloutSpec, Default({})] = Field(default_factory=RolloutSpec)
    """Rolling-update settings of the predictor Deployments."""
    canary: CanarySpec | None = None
    """A second ModelVersion receiving a share of the traffic."""
    monitoring: Annotated[MonitoringSpec, Default({})] = Field(default_factory=MonitoringSpec)
    """Drift detection and prediction logging."""
    retraining: RetrainingSpec | None = None
    """The closed loop: when a trigger fires, start a TrainingJob from the template, gate it
    against the serving version, then canary it."""
    image: Annotated[str, Field(max_length=512)] | None = None
    """Serving image; default from the operator's settings."""
    # Micro-batching.
    max_batch_size: MaxBatchSize = 64
    max_batch_delay_ms: MaxBatchDelayMs = 1.0
    """How long a request may wait to fill a batch; 0 disables batching."""
    grpc_port: Annotated[
        int,
        Field(ge=1024, le=65535),
        Cel(
            f"self != {HTTP_PORT}",
            f"{{path}}: {HTTP_PORT} is the predictor's HTTP port; choose another",
        ),
    ] = GRPC_PORT
    """The Open Inference Protocol over gRPC: the predictor's container port and Service port
    (named grpc, appProtocol grpc). HTTP stays on 8080 (Service 80)."""

    @model_validator(mode="after")
    def _grpc_port_is_not_http(self) -> InferenceServiceSpec:
        if self.grpc_port == HTTP_PORT:
            raise ValueError(
                f"spec.grpcPort: {HTTP_PORT} is the predictor's HTTP port; choose another"
            )
        return self


class ServingConfig(Model):
    """``KUBELOOP_SERVING``: what a predictor pod takes from its InferenceService.

    The operator writes it (``builders/predictor.py``), ``kubeloop-serve`` reads it
    (``serve/settings.py``); its bounds are the spec's.
    """

    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    # Strict: the JSON's true is not the number 1.
    max_batch_size: Annotated[MaxBatchSize, Strict()] = 64
    max_batch_delay_ms: Annotated[MaxBatchDelayMs, Strict()] = 1.0
    role: Literal["stable", "canary"] = "stable"
    inference_service: ObjectName | None = None


# ------------------------------------------------------------------- training result


class Anomaly(Model):
    """One column's departure from the reference statistics."""

    column: ColumnName
    kind: AnomalyKind
    message: Annotated[str, Field(max_length=256)]


MAX_ANOMALIES = 16


class DataValidation(Model):
    """The outcome of spec.validation: anomalies per column (at most 16 listed, all counted)."""

    reference: ObjectName
    policy: Literal["fail", "warn"]
    passed: bool
    total: Annotated[int, Field(ge=0)] = 0
    anomalies: Annotated[list[Anomaly], Field(max_length=MAX_ANOMALIES)] = Field(
        default_factory=list
    )

    def summary(self) -> str:
        """One line per the conventions' condition messages: every listed anomaly by column."""
        if self.passed:
            return f"no anomalies against the statistics of ModelVersion {self.reference}"
        listed = "; ".join(f"{a.column}: {a.kind} ({a.message})" for a in self.anomalies)
        more = (
            f"; and {self.total - len(self.anomalies)} more"
            if self.total > len(self.anomalies)
            else ""
        )
        return (
            f"{self.total} anomal{'y' if self.total == 1 else 'ies'} against the statistics of"
            f" ModelVersion {self.reference}: {listed}{more}"
        )


class TrainingResult(Model):
    """What `kubeloop-train` prints and writes to the termination message (< 4 KiB).

    The operator reads it from the pod status and builds the ModelVersion from it.
    ``reason`` is CamelCase: Trained, QualityGateFailed, InvalidSpec, DataError,
    DataValidationFailed, TrainingError. Exit codes: 0 Trained, 2 InvalidSpec, DataError or
    DataValidationFailed, 3 QualityGateFailed, 1 anything unexpected.
    """

    succeeded: bool
    reason: Annotated[str, Field(max_length=64)]
    message: Annotated[str, Field(max_length=1024)] = ""
    task: Task | None = None
    artifact: ArtifactRef | None = None
    framework: FrameworkInfo | None = None
    signature: Signature | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    parameters: dict[str, str] = Field(default_factory=dict)
    dataset: DatasetInfo | None = None
    gate: GateResult | None = None
    validation: DataValidation | None = None
    # The search trial this run trained (spec.search; the pod's completion index).
    trial: Annotated[int, Field(ge=0, le=MAX_TRIALS - 1)] | None = None


EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_INVALID = 2
EXIT_GATE_FAILED = 3
TERMINATION_MESSAGE_LIMIT = 4096


class StartupFailure(Model):
    """What `kubeloop-serve` writes to its termination message when it refuses to start.

    The operator reads it from the predictor pod's status (``lastState.terminated.message``)
    and shows it on the InferenceService (condition ``ModelLoaded``). ``reason`` is
    CamelCase: the object store's (``BucketNotFound``, ``ObjectNotFound``,
    ``StorageAccessDenied``, ``StorageUnreachable``, ``StorageError``), or
    ``ArtifactIntegrityFailed``, ``LibraryVersionMismatch``, ``ArtifactRefused``,
    ``StartupFailed``. ``message`` names the ModelVersion's field and the cause, never a
    credential.
    """

    kind: Literal["StartupFailure"] = "StartupFailure"
    reason: Annotated[str, Field(max_length=64, pattern=r"^[A-Z][A-Za-z0-9]*$")]
    message: Annotated[str, Field(max_length=2048)] = ""
