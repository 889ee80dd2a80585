"""Typed models of Kubeloop's three custom resources: the one definition both sides use.

The operator (``kubeloop``) reconciles these specs and the runtime (``kubeloop_runtime``)
trains and serves from them, so they live here, in a light module that imports only
pydantic. Specs are parsed once at the edge (``TrainingJobSpec.model_validate(body["spec"])``)
and passed around typed. Field names are camelCase on the wire and snake_case in Python.

``crds/`` holds the matching OpenAPI schemas; ``tests/unit/test_crd_schema_agreement.py``
keeps the two in step.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

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
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

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


# --------------------------------------------------------------------------- TrainingJob


class ConfigMapSource(Model):
    name: ObjectName
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class PVCSource(Model):
    claim_name: ObjectName
    # Path of the file inside the volume, relative, without "..".
    path: Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^/].*$")]

    @model_validator(mode="after")
    def _no_parent(self) -> PVCSource:
        if ".." in self.path.split("/"):
            raise ValueError("spec.dataset.pvc.path must not contain '..'")
        return self


# s3://, gs:// or az:// with a bucket (container) name, then an optional key or prefix.
OBJECT_URI = r"^(s3|gs|az)://[a-z0-9][-a-z0-9._]{1,254}(/\S*)?$"
ObjectUri = Annotated[str, Field(max_length=1024, pattern=OBJECT_URI)]


class ObjectStorage(Model):
    """How pods reach ``s3://`` (``gs://``, ``az://``) URIs; unset fields fall back to the
    operator's settings, then to the pod's own environment (web identity, instance roles).
    """

    # An S3-compatible endpoint (versitygw, Ceph, R2, GCS interoperability); unset: AWS.
    endpoint: (
        Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s/]+(/\S*)?$")] | None
    ) = None
    region: Annotated[str, Field(max_length=64, pattern=r"^[a-z0-9-]+$")] | None = None
    # Path-style requests (https://endpoint/bucket/key), which most S3-compatible servers
    # need; false: virtual-hosted style (https://bucket.endpoint/key).
    path_style: bool | None = None
    # A Secret in the same namespace whose keys become the pods' environment, e.g.
    # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (docs/storage.md). Never read into status.
    secret_name: ObjectName | None = None


class DatasetSpec(Model):
    """Exactly one of builtin, url, uri, configMap, pvc, path."""

    builtin: BuiltinDataset | None = None
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://\S+$")] | None = None
    # An object (s3://bucket/data.csv) or a prefix ending in "/" (every .csv or .parquet
    # object under it, concatenated in key order); reached through spec.storage.
    uri: ObjectUri | None = None
    config_map: ConfigMapSource | None = None
    pvc: PVCSource | None = None
    # A local file; how ConfigMap and PVC sources arrive inside the training pod, and
    # what `kubeloop-train` takes on a laptop.
    path: Annotated[str, Field(max_length=1024)] | None = None
    format: Literal["csv", "parquet"] | None = None  # default: from the file name, else csv
    target: ColumnName | None = None  # builtin datasets have a default target: "target"
    features: Annotated[list[ColumnName], Field(max_length=256)] | None = None

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
    hyperparameters: Annotated[dict[str, Scalar], Field(max_length=32)] = Field(
        default_factory=dict
    )

    @property
    def task(self) -> Task:
        return ESTIMATORS[self.type][1]


class ImputeSpec(Model):
    numeric: Literal["none", "mean", "median", "most_frequent"] = "mean"
    categorical: Literal["none", "most_frequent", "constant"] = "most_frequent"


class PreprocessingSpec(Model):
    scaling: Literal["none", "standard", "minmax", "robust"] = "none"
    categorical: Annotated[list[ColumnName], Field(max_length=128)] = Field(default_factory=list)
    impute: ImputeSpec = Field(default_factory=ImputeSpec)


class EvaluationSpec(Model):
    test_size: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 42
    cv_folds: Annotated[int, Field(ge=0, le=20)] = 0  # 0 = no cross-validation
    stratify: bool = True  # classification only


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
    # skops is safe to load. joblib (pickle) runs code on load and must be asked for.
    format: Literal["skops", "joblib"] = "skops"
    # Also export an ONNX graph for fast serving (used only when its predictions match).
    onnx: bool = True
    # Write to an object store (s3://bucket/prefix; each run under <namespace>/<name>)
    # instead of the artifact PersistentVolumeClaim; reached through spec.storage.
    uri: ObjectUri | None = None


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
    requests: Annotated[dict[str, Quantity], Field(max_length=8)] | None = None
    limits: Annotated[dict[str, Quantity], Field(max_length=8)] | None = None


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
    reference: ObjectName | None = None
    # A numeric column is out of range when more than this share of its values lies
    # outside the reference's [min, max].
    max_out_of_range_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    # A column has drifted when its PSI against the reference reaches this (0.25: major).
    max_psi: Annotated[float, Field(gt=0.0, le=10.0)] = 0.25


class TriggerRef(Model):
    """Why the closed loop started a TrainingJob (lineage)."""

    inference_service: ObjectName
    signal: Literal["drift", "accuracy", "error", "schedule", "manual", "data"]
    value: Annotated[str, Field(max_length=256)] | None = None
    time: Annotated[str, Field(max_length=64)] | None = None


class TrainingJobSpec(Model):
    model: ModelName
    dataset: DatasetSpec
    estimator: EstimatorSpec
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    quality_gate: QualityGateSpec = Field(default_factory=QualityGateSpec)
    artifact: ArtifactSpec = Field(default_factory=ArtifactSpec)
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    resources: Resources | None = None
    image: Annotated[str, Field(max_length=512)] | None = None
    # How to reach spec.dataset.uri and spec.artifact.uri (object storage).
    storage: ObjectStorage | None = None
    node_selector: (
        Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=16)] | None
    ) = None
    tolerations: Annotated[list[Toleration], Field(max_length=16)] | None = None
    service_account_name: ObjectName | None = None
    # Set by the closed loop on TrainingJobs it starts; users leave it empty.
    trigger: TriggerRef | None = None
    # Compare with the version serving this InferenceService (closed loop); optional.
    champion: ObjectName | None = None
    # How to compare with the champion (the closed loop copies spec.retraining.championGate);
    # unset: the task's default metric (accuracy / rmse) and no regression allowed.
    champion_gate: ChampionGate | None = None
    # Check the dataset against a reference version's statistics before training.
    validation: ValidationSpec | None = None

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
        return self


# -------------------------------------------------------------------------- ModelVersion


Sha256 = Annotated[str, Field(max_length=64, pattern=r"^[a-f0-9]{64}$")]


class ArtifactRef(Model):
    uri: Annotated[str, Field(min_length=1, max_length=1024)]
    sha256: Sha256
    format: Literal["skops", "joblib"]
    size_bytes: Annotated[int, Field(ge=0)]
    onnx_uri: Annotated[str, Field(max_length=1024)] | None = None
    onnx_sha256: Sha256 | None = None
    reference_stats_uri: Annotated[str, Field(max_length=1024)] | None = None
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


class OutputSpec(Model):
    name: Annotated[str, Field(max_length=128)] = "predict"
    dtype: Literal["float64", "int64", "string", "bool"]
    classes: Annotated[list[Scalar], Field(max_length=256)] | None = None


# All inputs' categories together; keeps the largest ModelVersion well under 256 KiB.
MAX_SIGNATURE_CATEGORIES = 512


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


class Lineage(Model):
    training_job: ObjectName | None = None
    image: Annotated[str, Field(max_length=512)] | None = None
    trigger: TriggerRef | None = None


class GateResult(Model):
    passed: bool
    message: Annotated[str, Field(max_length=1024)] = ""


class ModelVersionSpec(Model):
    model: ModelName
    version: Annotated[int, Field(ge=1)]
    task: Task
    artifact: ArtifactRef
    framework: FrameworkInfo
    signature: Signature
    metrics: Annotated[dict[str, float], Field(max_length=32)] = Field(default_factory=dict)
    parameters: Annotated[
        dict[str, Annotated[str, Field(max_length=256)]], Field(max_length=64)
    ] = Field(default_factory=dict)
    dataset: DatasetInfo
    lineage: Lineage = Field(default_factory=Lineage)
    gate: GateResult = Field(default_factory=lambda: GateResult(passed=True))
    # Mutable: MLflow-style aliases such as "production". One holder per model.
    aliases: Annotated[list[ModelName], Field(max_length=16)] = Field(default_factory=list)


# ---------------------------------------------------------------------- InferenceService


class ModelRef(Model):
    """Either modelVersion (an object name) or model + alias."""

    model_version: ObjectName | None = None
    model: ModelName | None = None
    alias: ModelName | None = None

    @model_validator(mode="after")
    def _one(self) -> ModelRef:
        by_name = self.model_version is not None
        by_alias = self.model is not None or self.alias is not None
        if by_name == by_alias or (by_alias and (self.model is None or self.alias is None)):
            raise ValueError("spec.model: set either modelVersion, or both model and alias")
        return self


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
    max_unavailable: IntOrPercent = "0"
    progress_deadline_seconds: Annotated[int, Field(ge=10, le=3600)] = 600


class AnalysisSpec(Model):
    """Rules for automatic canary promotion or rollback."""

    window_seconds: Annotated[int, Field(ge=10, le=86400)] = 300
    min_requests: Annotated[int, Field(ge=0, le=1_000_000)] = 100
    max_error_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    max_p99_latency_seconds: Annotated[float, Field(gt=0.0, le=60.0)] | None = None
    min_accuracy: Annotated[float, Field(ge=0.0, le=1.0)] | None = None


class CanarySpec(Model):
    model_version: ObjectName
    traffic_percent: Annotated[int, Field(ge=0, le=100)] = 10
    # When set, the operator promotes or rolls back on these rules after the window.
    analysis: AnalysisSpec | None = None


class DriftSpec(Model):
    enabled: bool = True
    window_size: Annotated[int, Field(ge=50, le=100_000)] = 1000
    psi_threshold: Annotated[float, Field(gt=0.0, le=10.0)] = 0.1
    p_value: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.05
    dataset_drift_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5


class MonitoringSpec(Model):
    drift: DriftSpec = Field(default_factory=DriftSpec)
    prediction_log_sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # Predictions remembered for feedback (ground truth by request id); oldest dropped first.
    feedback_capacity: Annotated[int, Field(ge=0, le=1_000_000)] = 10_000
    feedback_window: Annotated[int, Field(ge=10, le=100_000)] = 500


class RetrainTriggers(Model):
    drift: bool = True
    accuracy_below: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    error_above: Annotated[float, Field(ge=0.0)] | None = None
    schedule: Annotated[str, Field(max_length=64, pattern=r"^(\S+\s+){4}\S+$")] | None = None
    # Retrain when the template's dataset changes: a new ETag or object under
    # spec.dataset.uri, a new ETag or Last-Modified of spec.dataset.url, new content of
    # the spec.dataset.configMap key. The operator looks every dataPollSeconds.
    data_changed: bool = False
    data_poll_seconds: Annotated[int, Field(ge=10, le=86400)] = 60


class ChampionGate(Model):
    enabled: bool = True
    metric: MetricName | None = None  # default: accuracy or rmse by task
    # How far the challenger may fall below the champion and still pass (absolute).
    max_regression: Annotated[float, Field(ge=0.0)] = 0.0


class TrainingTemplate(Model):
    """A TrainingJob spec without the model (taken from what the service serves)."""

    dataset: DatasetSpec
    estimator: EstimatorSpec
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    quality_gate: QualityGateSpec = Field(default_factory=QualityGateSpec)
    artifact: ArtifactSpec = Field(default_factory=ArtifactSpec)
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    resources: Resources | None = None
    image: Annotated[str, Field(max_length=512)] | None = None
    storage: ObjectStorage | None = None
    # Validate each retraining's dataset (default reference: the version serving now).
    validation: ValidationSpec | None = None


class RetrainingSpec(Model):
    enabled: bool = True
    triggers: RetrainTriggers = Field(default_factory=RetrainTriggers)
    template: TrainingTemplate
    cooldown_seconds: Annotated[int, Field(ge=0, le=30 * 86400)] = 3600
    max_concurrent: Annotated[int, Field(ge=1, le=10)] = 1
    champion_gate: ChampionGate = Field(default_factory=ChampionGate)
    canary_traffic_percent: Annotated[int, Field(ge=1, le=100)] = 25
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)


class InferenceServiceSpec(Model):
    model: ModelRef
    replicas: Annotated[int, Field(ge=0, le=100)] = 1
    autoscaling: Autoscaling | None = None
    resources: Resources | None = None
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    canary: CanarySpec | None = None
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    retraining: RetrainingSpec | None = None
    image: Annotated[str, Field(max_length=512)] | None = None
    # Micro-batching: wait at most this long to fill a batch (0 disables batching).
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 64
    max_batch_delay_ms: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0


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


EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_INVALID = 2
EXIT_GATE_FAILED = 3
TERMINATION_MESSAGE_LIMIT = 4096
