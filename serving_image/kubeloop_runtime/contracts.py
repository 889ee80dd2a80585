"""What crosses the image boundary besides the specs: the pods' environment and answers.

The operator starts pods from the runtime image and reads what they say back; both sides
import these definitions (``kubeloop_runtime.api`` re-exports them), so a name or a field
cannot drift apart:

- the environment variables the operator sets on training and serving containers;
- the reason a training run reports when the champion gate rejected it;
- the port kubeloop-serve listens on, and the names of the metrics the loop reads;
- the ``GET /v2/models/<name>/monitoring`` document: the server writes it
  (``serve/dataplane.py``), the closed loop reads it (``kubeloop/signals.py``).

The serving configuration in ``KUBELOOP_SERVING`` is :class:`kubeloop_runtime.api.ServingConfig`:
it is made of spec fields, so it lives beside them.

Light: pydantic only, as ``api``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat
from pydantic.alias_generators import to_camel

__all__ = [
    "ENV_ARTIFACT_ROOT",
    "ENV_CHAMPION",
    "ENV_DATA_ROOT",
    "ENV_MODEL_VERSION",
    "ENV_OUTPUT",
    "ENV_SERVED_NAME",
    "ENV_SERVING",
    "ENV_TRAINING_SPEC",
    "ENV_VALIDATION_REFERENCE",
    "HTTP_PORT",
    "REASON_QUALITY_GATE_FAILED",
    "REQUESTS_TOTAL",
    "REQUEST_DURATION_SECONDS",
    "DriftSummary",
    "FeedbackErrors",
    "FeedbackStats",
    "MonitoringDocument",
    "SkewSummary",
]

# ----------------------------------------------------------------------------- environment

# Serving containers (kubeloop-serve).
ENV_MODEL_VERSION = "KUBELOOP_MODEL_VERSION"  # the ModelVersion object (JSON) to serve
ENV_SERVED_NAME = "KUBELOOP_SERVED_NAME"  # the model name in URL paths
ENV_SERVING = "KUBELOOP_SERVING"  # api.ServingConfig as JSON
# Training containers (kubeloop-train).
ENV_TRAINING_SPEC = "KUBELOOP_TRAINING_SPEC"  # the TrainingJob spec (JSON)
ENV_OUTPUT = "KUBELOOP_OUTPUT"  # where the run writes its artifacts
ENV_DATA_ROOT = "KUBELOOP_DATA_ROOT"  # where a mounted dataset is
ENV_CHAMPION = "KUBELOOP_CHAMPION"  # the serving ModelVersion the gate compares with
ENV_VALIDATION_REFERENCE = "KUBELOOP_VALIDATION_REFERENCE"  # the version data is checked against
# Both.
ENV_ARTIFACT_ROOT = "KUBELOOP_ARTIFACT_ROOT"  # where pvc:// URIs resolve

# The port kubeloop-serve listens on for HTTP (V1, V2, /metrics, /monitoring).
HTTP_PORT = 8080

# Serving metrics the closed loop reads from a canary's /metrics (serve/metrics.py has the
# rest): requests by status code, and their latency.
REQUESTS_TOTAL = "kubeloop_serving_requests_total"  # {model,version,protocol,code}
REQUEST_DURATION_SECONDS = "kubeloop_serving_request_duration_seconds"  # {model,version,protocol}

# ----------------------------------------------------------------------------- training

# TrainingResult.reason (and the TrainingJob's) when the challenger lost to the champion.
REASON_QUALITY_GATE_FAILED = "QualityGateFailed"

# ----------------------------------------------------------------------------- /monitoring


class _Doc(BaseModel):
    """A document a pod answers with. Readers ignore fields they do not know (a newer
    server may say more); the writer sets every field it has."""

    model_config = ConfigDict(extra="ignore", frozen=True)


Count = Annotated[int, Field(ge=0)]


class DriftSummary(_Doc):
    """The drift window in short (the full report is ``/drift``). Only ``enabled`` when
    drift is off (no reference statistics, or ``monitoring.drift.enabled: false``)."""

    enabled: bool
    enough_data: bool = False
    dataset_drift: bool = False
    share_drifted: FiniteFloat | None = None
    drifted_features: list[str] = Field(default_factory=list)
    window_count: Count = 0
    window_size: Count = 0


class SkewSummary(_Doc):
    """Training-serving skew: data validation's checks on the drift window."""

    enough_data: bool
    total: Count
    anomalies: list[dict[str, Any]] = Field(default_factory=list)


class FeedbackErrors(_Doc):
    mae: FiniteFloat | None = None
    rmse: FiniteFloat | None = None


class FeedbackStats(_Doc):
    """Live quality from feedback: rolling over the last ``window_count`` labelled
    predictions of this pod's version (``accuracy`` for classifiers, ``errors`` for
    regressors), and how many feedback requests were labelled, refused or unknown."""

    accuracy: FiniteFloat | None = None
    errors: FeedbackErrors = Field(default_factory=FeedbackErrors)
    window_count: Count = 0
    labelled_requests: Count = 0
    recorded: Count = 0
    remembered: Count = 0
    counts: dict[str, int] = Field(default_factory=dict)


class MonitoringDocument(_Doc):
    """``GET /v2/models/<name>/monitoring``: what the closed loop reads from each pod."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    model: str
    name: str
    version: str
    model_version: str
    role: Literal["stable", "canary"]
    inference_service: str | None = None
    runtime: str
    drift: DriftSummary
    skew: SkewSummary | None = None
    feedback: FeedbackStats | None = None

    def wire(self) -> dict[str, Any]:
        """The JSON body (camelCase at the top, as the server has always written it)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
