"""The protocol-agnostic data plane: validated rows in, predictions out.

The app (routes) decodes a V1 or V2 request with :class:`~.protocol.Codec`, calls
:meth:`DataPlane.infer`, and encodes the result. The data plane owns the micro-batcher,
the request-path metrics and the monitoring hooks (drift window, feedback store,
prediction log); none of it knows about HTTP.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kubeloop_runtime.contracts import (
    DriftSummary,
    FeedbackStats,
    MonitoringDocument,
    SkewSummary,
)
from kubeloop_runtime.serve.batching import MicroBatcher
from kubeloop_runtime.serve.errors import (
    InvalidInputError,
    NonFiniteOutputError,
    NotReadyError,
)
from kubeloop_runtime.serve.metrics import ServingMetrics
from kubeloop_runtime.serve.model import ServedModel
from kubeloop_runtime.serve.protocol import V2_DATATYPE, Codec, Decoded
from kubeloop_runtime.serve.settings import ServeSettings

log = logging.getLogger(__name__)


# The monitoring parts are optional collaborators; these are the calls the data plane makes.
class DriftWindow(Protocol):
    def observe(self, rows: Any) -> None: ...

    def report(self) -> dict[str, Any]: ...

    def skew(self) -> dict[str, Any]: ...


class FeedbackSink(Protocol):
    def check_id(self, request_id: str, x: np.ndarray) -> None: ...

    def record(self, request_id: str, predictions: list[Any], x: np.ndarray) -> None: ...

    def invalid(self) -> None: ...

    def feedback(self, request_id: str, labels: list[Any]) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...


class PredictionLog(Protocol):
    def maybe_log(
        self, request_id: str, x: np.ndarray, predictions: list[Any], protocol: str
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class InferResult:
    request_id: str
    labels: list[Any]
    proba: np.ndarray | None


def _input_parameters(f: Any, nullable: bool) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if f.categories:
        params["categories"] = f.categories
    if nullable:
        params["nullable"] = True  # the pipeline imputes it: null is a missing value
    return {"parameters": params} if params else {}


def new_request_id() -> str:
    """A random 128-bit request id (hex); unique enough to join feedback across replicas."""
    return os.urandom(16).hex()


class DataPlane:
    """Everything between a validated request and its predictions."""

    def __init__(
        self,
        settings: ServeSettings,
        model: ServedModel,
        metrics: ServingMetrics,
        *,
        drift: DriftWindow | None = None,
        feedback: FeedbackSink | None = None,
        predlog: PredictionLog | None = None,
        request_id: Callable[[], str] = new_request_id,
        in_thread: bool | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.name = settings.served_name
        self.version = settings.version
        self.codec = Codec(
            model.signature,
            model.task,
            max_rows=settings.max_request_rows,
            n_classes=len(model.classes),
            imputed=model.imputed,
            classes=model.classes,
        )
        self.drift = drift
        self.feedback_sink = feedback
        self.predlog = predlog
        self._new_id = request_id
        self.ready = True
        # SIGTERM arrived: still answering, but readiness says 503 so that Services stop
        # sending new connections here before the server stops accepting them.
        self.draining = False
        if in_thread is None:
            # Measured (docs/serving.md): a worker thread is faster for ONNX too. While the
            # thread predicts, the event loop keeps reading requests, which then form the
            # next batch; predicting inline starves the loop and makes batches small.
            in_thread = True
        self.batcher = MicroBatcher(
            model.predict,
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_batch_delay_ms / 1000.0,
            in_thread=in_thread,
            on_batch=self._on_batch,
        )
        self._classification = model.is_classifier

    def _on_batch(self, rows: int, seconds: float) -> None:
        self.metrics.batch_size.observe(rows)

    # ------------------------------------------------------------------ hot path
    def begin(self) -> None:
        """An inference request arrived (lets the batcher know more rows are coming)."""
        self.batcher.arriving()

    def end(self) -> None:
        self.batcher.arrived()

    async def infer(self, req: Decoded, protocol: str, request_id: str | None) -> InferResult:
        """Predict for validated rows. ``end()`` must have been called already."""
        if not self.ready:
            raise NotReadyError("the model server is shutting down")
        rid = req.request_id or request_id
        sink = self.feedback_sink
        if rid is not None and sink is not None:
            sink.check_id(rid, req.x)  # a reused id for other rows: 409 before predicting
        pred = await self.batcher.submit(req.x, req.want_proba)
        if pred.bad is not None:
            row = int(np.flatnonzero(pred.bad)[0])
            raise NonFiniteOutputError(
                f"row {row}: the model's output for this row is not finite (an intermediate"
                " value overflowed); it is not answered. Check the row's magnitudes"
            )
        if rid is None:
            rid = self._new_id()
        labels = self.model.labels_to_json(pred.labels)
        m = self.metrics
        if self._classification:
            m.count_classes(labels)
        else:
            m.observe_values(labels)
        if self.drift is not None:
            self.drift.observe(req.x)
        if sink is not None:
            sink.record(rid, labels, req.x)
        if self.predlog is not None:
            self.predlog.maybe_log(rid, req.x, labels, protocol)
        # Probabilities only for a request that asked (its batch-mates may have).
        return InferResult(rid, labels, pred.proba if req.want_proba else None)

    def observe_predict_seconds(self, seconds: float) -> None:
        self.metrics.observe_predict(seconds)

    # ------------------------------------------------------------------ metadata
    def metadata_v2(self) -> dict[str, Any]:
        sig = self.model.signature
        out_meta: list[dict[str, Any]] = [
            {"name": "predict", "datatype": self.codec.output_datatype, "shape": [-1]}
        ]
        if self._classification:
            out_meta.append(
                {
                    "name": "predict_proba",
                    "datatype": "FP64",
                    "shape": [-1, len(self.model.classes)],
                    "parameters": {"classes": self.model.classes},
                }
            )
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": f"kubeloop-{self.model.runtime}",
            "inputs": [
                {
                    "name": f.name,
                    "datatype": V2_DATATYPE[f.dtype],
                    "shape": [-1, 1],
                    **_input_parameters(f, f.name in self.model.imputed),
                }
                for f in sig.inputs
            ],
            "outputs": out_meta,
            "parameters": {
                "model": self.model.spec.model,
                "modelVersion": self.settings.model_version_name,
                "task": self.model.task.value,
                "runtime": self.model.runtime,
                "sha256": self.model.spec.artifact.sha256,
                "role": self.settings.role,
            },
        }

    @property
    def accepting(self) -> bool:
        """What readiness reports: loaded, and not draining towards a shutdown."""
        return self.ready and not self.draining

    def metadata_v1(self) -> dict[str, Any]:
        return {"name": self.name, "ready": self.accepting}

    # ------------------------------------------------------------------ monitoring
    def record_feedback(self, request_id: str, labels: list[Any]) -> dict[str, Any]:
        """Score checked true labels (see ``Codec.decode_feedback``) of an earlier request."""
        if self.feedback_sink is None:
            raise InvalidInputError(
                "feedback is disabled for this model (monitoring.feedbackCapacity=0)"
            )
        return self.feedback_sink.feedback(request_id, labels)

    def feedback_refused(self) -> None:
        """A feedback request refused before scoring (malformed body or labels)."""
        if self.feedback_sink is not None:
            self.feedback_sink.invalid()

    def drift_report(self) -> dict[str, Any]:
        if self.drift is None:
            return {"enabled": False, "reason": "no reference statistics or drift disabled"}
        return {"enabled": True, **self.drift.report()}

    def feedback_stats(self) -> dict[str, Any] | None:
        return None if self.feedback_sink is None else self.feedback_sink.stats()

    def monitoring(self) -> dict[str, Any]:
        """What the operator's closed loop reads: drift summary, live accuracy, counts
        (the :class:`~kubeloop_runtime.contracts.MonitoringDocument`)."""
        drift = self.drift_report()
        stats = self.feedback_stats()
        return MonitoringDocument(
            model=self.model.spec.model,
            name=self.name,
            version=self.version,
            model_version=self.settings.model_version_name,
            role=self.settings.role,
            inference_service=self.settings.inference_service,
            runtime=self.model.runtime,
            drift=DriftSummary.model_validate(
                {k: v for k, v in drift.items() if k in DriftSummary.model_fields}
            ),
            skew=None if self.drift is None else SkewSummary.model_validate(self.drift.skew()),
            feedback=None if stats is None else FeedbackStats.model_validate(stats),
        ).wire()

    async def close(self) -> None:
        self.ready = False
        await self.batcher.close()
