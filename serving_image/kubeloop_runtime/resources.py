"""The three custom resources as whole objects: names, printer columns and status schemas.

``crds/`` is generated from these classes (``make crds``, ``kubeloop_runtime.crdgen``): each
``@custom_resource`` class is one CRD, its docstring the kind's description, its ``spec`` the
model of ``kubeloop_runtime.api`` and its ``status`` the model below, which says what the
operator may write (every field optional: the operator fills them in as it learns them).
They bound what the operator writes (mostly lengths, not enums, for the words it chooses);
the operator builds its status as dicts today, so these models are the schema only.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from kubeloop_runtime.api import (
    DNS1123_LABEL,
    INFERENCESERVICES,
    MODELVERSIONS,
    TRAININGJOBS,
    InferenceServiceSpec,
    Model,
    ModelVersionSpec,
    TrainingJobSpec,
)
from kubeloop_runtime.crd import (
    AGE,
    DATE_TIME,
    INT64,
    Cel,
    PrinterColumn,
    custom_resource,
    list_map,
)

DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


Time = Annotated[str, Field(max_length=64), DATE_TIME]
Generation = Annotated[int, Field(ge=0), INT64]
Count = Annotated[int, Field(ge=0)]
Name = Annotated[str, Field(max_length=63)]
Percent = Annotated[int, Field(ge=0, le=100)]
Signal = Literal["drift", "accuracy", "error", "schedule", "manual", "data"]


# One condition, per the Kubernetes API conventions (no docstring: it would describe every
# kind's conditions the same way; each status says which conditions it has).
class Condition(Model):
    type: Annotated[str, Field(min_length=1, max_length=64)]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(max_length=128)] | None = None
    message: Annotated[str, Field(max_length=2048)] | None = None
    last_transition_time: Time | None = None
    observed_generation: Generation | None = None


Conditions = Annotated[list[Condition], Field(max_length=16), list_map("type")]


# --------------------------------------------------------------------------- TrainingJob


class GateStatus(Model):
    passed: bool | None = None
    message: Annotated[str, Field(max_length=1024)] | None = None


class AnomalyStatus(Model):
    column: Annotated[str, Field(max_length=128)] | None = None
    kind: Annotated[str, Field(max_length=32)] | None = None
    message: Annotated[str, Field(max_length=256)] | None = None


class ValidationStatus(Model):
    reference: Name | None = None
    policy: Annotated[str, Field(max_length=8)] | None = None
    passed: bool | None = None
    total: Count | None = None
    anomalies: Annotated[list[AnomalyStatus], Field(max_length=16)] | None = None


class TrainingJobStatus(Model):
    observed_generation: Generation | None = None
    conditions: Conditions | None = None
    """Succeeded (True, False or Unknown while running)."""
    phase: Annotated[str, Field(max_length=32)] | None = None
    """Pending, Running, Succeeded or Failed; derived from conditions, for display."""
    reason: Annotated[str, Field(max_length=64)] | None = None
    """CamelCase outcome (Trained, QualityGateFailed, InvalidSpec, DataError, TrainingError,
    ...)."""
    message: Annotated[str, Field(max_length=1024)] | None = None
    job_name: Name | None = None
    start_time: Time | None = None
    completion_time: Time | None = None
    metrics: Annotated[dict[str, float], Field(max_length=32)] | None = None
    """Test-set metrics (accuracy, f1, ... or rmse, mae, r2, cv_*)."""
    model_version: Name | None = None
    """Name of the ModelVersion this run registered."""
    version: Count | None = None
    gate: GateStatus | None = None
    validation: ValidationStatus | None = None
    """The outcome of spec.validation (at most 16 anomalies listed, all counted)."""


@custom_resource(
    plural=TRAININGJOBS,
    short_names=("tj", "kltj"),
    name_max_length=52,
    name_pattern=DNS1123_LABEL,
    name_description="""A DNS-1123 label of at most 52 characters: the training Job is named
        <name>-train.""",
    columns=(
        PrinterColumn("Model", "string", ".spec.model"),
        PrinterColumn("Estimator", "string", ".spec.estimator.type"),
        PrinterColumn(
            "Status",
            "string",
            ".status.phase",
            "Derived from the Succeeded condition (Pending, Running, Succeeded, Failed).",
        ),
        PrinterColumn(
            "Version",
            "integer",
            ".status.version",
            "Version number of the ModelVersion this run registered.",
        ),
        PrinterColumn(
            "Accuracy", "number", ".status.metrics.accuracy", "Test-set accuracy (classification)."
        ),
        PrinterColumn(
            "R2",
            "number",
            ".status.metrics.r2",
            "Test-set coefficient of determination (regression).",
        ),
        PrinterColumn("ModelVersion", "string", ".status.modelVersion", priority=1),
        PrinterColumn("Reason", "string", ".status.reason", priority=1),
        AGE,
    ),
    comment="""\
TrainingJob: one bounded training run. The operator runs `kubeloop-train` in a Job named
<name>-train, and on success registers a ModelVersion. The spec is immutable: to train
again, create another TrainingJob.""",
)
class TrainingJob(Model):
    """TrainingJob trains one scikit-learn model on one dataset, checks it against a quality
    gate, and registers the result as a ModelVersion."""

    spec: Annotated[
        TrainingJobSpec,
        Cel(
            "self == oldSelf",
            "spec is immutable; create a new TrainingJob to train again",
            reason="FieldValueForbidden",
        ),
    ]
    """What to train. Immutable once created."""
    status: TrainingJobStatus | None = None
    """Written by the operator."""


# -------------------------------------------------------------------------- ModelVersion


class ModelVersionStatus(Model):
    observed_generation: Generation | None = None
    conditions: Conditions | None = None
    """Ready (the version can be served) and ArtifactVerified (the artifact exists and its
    sha256 matches)."""
    phase: Annotated[str, Field(max_length=32)] | None = None
    """Pending, Ready or Failed; derived from conditions, for display."""
    aliases: Annotated[list[Annotated[str, Field(max_length=40)]], Field(max_length=16)] | None = (
        None
    )
    """The aliases the operator has confirmed (unique per model)."""
    served_by: Annotated[list[Name], Field(max_length=64)] | None = None
    """Names of the InferenceServices serving this version."""


READY = '.status.conditions[?(@.type=="Ready")].status'


@custom_resource(
    plural=MODELVERSIONS,
    short_names=("mv", "klmv"),
    name_max_length=63,
    name_pattern=DNS1123_LABEL,
    name_description="A DNS-1123 label (the operator uses <model>-v<version>).",
    columns=(
        PrinterColumn("Model", "string", ".spec.model"),
        PrinterColumn("Version", "integer", ".spec.version"),
        PrinterColumn("Ready", "string", READY),
        PrinterColumn("Accuracy", "number", ".spec.metrics.accuracy"),
        PrinterColumn("R2", "number", ".spec.metrics.r2"),
        PrinterColumn("Aliases", "string", ".spec.aliases"),
        PrinterColumn("TrainingJob", "string", ".spec.lineage.trainingJob"),
        PrinterColumn("Task", "string", ".spec.task", priority=1),
        PrinterColumn("ServedBy", "string", ".status.servedBy", priority=1),
        AGE,
    ),
    comment="""\
ModelVersion: one registered, immutable model artifact with its metrics, signature and
lineage. The operator creates it when a TrainingJob passes its quality gate (named
<model>-v<version>); only spec.aliases may change afterwards.""",
)
class ModelVersion(Model):
    """ModelVersion is one registered model artifact: where it is, its checksum, the library
    versions that made it, its input signature, metrics and lineage. Everything but
    spec.aliases is immutable."""

    spec: ModelVersionSpec
    status: ModelVersionStatus | None = None
    """Written by the operator."""


# ---------------------------------------------------------------------- InferenceService


class TrafficStatus(Model):
    model_version: Name
    role: Literal["stable", "canary"]
    percent: Percent
    replicas: Count | None = None
    ready_replicas: Count | None = None


class LastRetrain(Model):
    time: Time | None = None
    training_job: Name | None = None
    signal: Signal | None = None
    value: Annotated[str, Field(max_length=256)] | None = None
    """The observed value that fired the trigger, as text."""


class LoopCanary(Model):
    model_version: Name | None = None
    traffic_percent: Percent | None = None
    training_job: Name | None = None


class AnalysisStatus(Model):
    decision: Annotated[str, Field(max_length=32)] | None = None
    """Pending, Promote, Rollback or Superseded."""
    model_version: Name | None = None
    """The canary ModelVersion this analysis judged."""
    message: Annotated[str, Field(max_length=1024)] | None = None
    time: Time | None = None
    source: Literal["analysis", "manual"] | None = None
    """Who decided: analysis (the canary's metrics against its rules) or manual (a person:
    spec.canary, kubectl kubeloop promote, the kubeloop.io/rollback annotation)."""
    metrics: Annotated[dict[str, float], Field(max_length=16)] | None = None
    """Observed values (requests, errorRate, p99LatencySeconds, accuracy)."""


class InferenceServiceStatus(Model):
    observed_generation: Generation | None = None
    conditions: Conditions | None = None
    """Ready, with finer conditions under it (for example ModelResolved, PredictorReady,
    CanaryReady, Drifted)."""
    phase: Annotated[str, Field(max_length=32)] | None = None
    """Pending, Ready, Degraded or Failed; derived from conditions, for display."""
    url: Annotated[str, Field(max_length=512)] | None = None
    """In-cluster base URL of the service."""
    model_name: Annotated[str, Field(max_length=40)] | None = None
    serving_version: Name | None = None
    """Name of the stable ModelVersion."""
    canary_version: Name | None = None
    """Name of the canary ModelVersion, if any."""
    traffic: Annotated[list[TrafficStatus], Field(max_length=2), list_map("role")] | None = None
    """One entry per predictor (stable, canary)."""
    replicas: Count | None = None
    ready_replicas: Count | None = None
    last_retrain: LastRetrain | None = None
    """The last retraining the closed loop started."""
    active_retrains: Annotated[list[Name], Field(max_length=16)] | None = None
    """Names of the TrainingJobs of this service still running."""
    canary_start_time: Time | None = None
    loop_canary: LoopCanary | None = None
    """The canary the closed loop runs for a challenger it trained (spec.canary, when set,
    wins over it)."""
    retrain_request_handled: Annotated[str, Field(max_length=256)] | None = None
    """The last kubeloop.io/retrain annotation value the loop acted on."""
    dataset_version: Annotated[str, Field(max_length=256)] | None = None
    """The version (sha256 of ETags, keys and sizes, or of a ConfigMap key) of the retraining
    template's dataset the service was last retrained on, or first saw;
    spec.retraining.triggers.dataChanged fires when it changes."""
    analysis: AnalysisStatus | None = None
    """The latest canary analysis."""


@custom_resource(
    plural=INFERENCESERVICES,
    # `klis`: KServe's InferenceService already owns `isvc`.
    short_names=("klis",),
    name_max_length=45,
    name_pattern=DNS1035_LABEL,
    name_description="""A DNS-1035 label of at most 45 characters: it names a Service and
        Deployments such as <name>-predictor-canary.""",
    columns=(
        PrinterColumn("URL", "string", ".status.url"),
        PrinterColumn("Model", "string", ".status.modelName"),
        PrinterColumn("Serving", "string", ".status.servingVersion", "The stable ModelVersion."),
        PrinterColumn("Canary", "string", ".status.canaryVersion"),
        PrinterColumn(
            "Traffic",
            "integer",
            '.status.traffic[?(@.role=="canary")].percent',
            "Percent of requests the canary receives.",
        ),
        PrinterColumn("Ready", "string", READY),
        PrinterColumn(
            "Replicas",
            "integer",
            ".status.readyReplicas",
            "Ready predictor replicas (stable and canary).",
        ),
        PrinterColumn("LastRetrain", "date", ".status.lastRetrain.time", priority=1),
        AGE,
    ),
    comment="""\
InferenceService: serves a ModelVersion over HTTP (KServe V1 and Open Inference Protocol
V2), optionally with a canary, monitors it for drift, and retrains it in a closed loop.
Short name `klis`: KServe's InferenceService already owns `isvc`.""",
)
class InferenceService(Model):
    """InferenceService serves a ModelVersion (by name, or by model and alias), with optional
    canary, autoscaling, drift monitoring and closed-loop retraining."""

    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None
    """Written by the operator."""


RESOURCES = (TrainingJob, ModelVersion, InferenceService)
