"""Settings of ``kubeloop-serve``, parsed ONCE at startup into a frozen object.

Sources, highest precedence first: command-line flags, then environment variables
(the operator sets these on the predictor container), then defaults.

- The ModelVersion to serve: ``--model-version PATH`` (a ModelVersion manifest, YAML or
  JSON) or ``KUBELOOP_MODEL_VERSION`` (JSON of the ModelVersion object: metadata.name
  and spec). Its spec is parsed with :class:`kubeloop_runtime.api.ModelVersionSpec`.
- ``--artifact-root`` / ``KUBELOOP_ARTIFACT_ROOT``: where ``pvc://`` URIs resolve.
- ``--name`` / ``KUBELOOP_SERVED_NAME``: the name in URL paths (default: the model name).
- ``KUBELOOP_SERVING``: :class:`kubeloop_runtime.api.ServingConfig` as JSON (monitoring,
  batching, role, the InferenceService's name), as the operator's predictor builder
  writes it.
- ``--drain-seconds``: on SIGTERM, how long to keep answering (readiness already 503) before
  the graceful shutdown, so that Services stop sending new connections first (0 by hand;
  the operator's predictor pods pass ``api.SERVE_DRAIN_SECONDS``).

The environment is read by pydantic-settings (:class:`ServeEnvironment`, the variables'
names from ``kubeloop_runtime.contracts``); flags by argparse.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, Json, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubeloop_runtime import api
from kubeloop_runtime.contracts import (
    ENV_ARTIFACT_ROOT,
    ENV_MODEL_VERSION,
    ENV_SERVED_NAME,
    ENV_SERVING,
    GRPC_PORT,
    HTTP_PORT,
)
from kubeloop_runtime.serve.errors import StartupError

DEFAULT_PORT = HTTP_PORT
# The Open Inference Protocol over gRPC, on its own port (KServe's and MLServer's default).
DEFAULT_GRPC_PORT = GRPC_PORT
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_REQUEST_ROWS = 10_000
MAX_DRAIN_SECONDS = 300.0

Role = Literal["stable", "canary"]


@dataclass(frozen=True)
class ServeSettings:
    """Everything the server needs, read once. Hot paths never read the environment."""

    model_version: api.ModelVersionSpec
    model_version_name: str
    served_name: str
    artifact_root: Path | None = None
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    # None: no gRPC server; 0: any free port (tests); the same host as HTTP.
    grpc_port: int | None = DEFAULT_GRPC_PORT
    monitoring: api.MonitoringSpec = field(default_factory=api.MonitoringSpec)
    max_batch_size: int = 64
    max_batch_delay_ms: float = 1.0
    role: Role = "stable"
    inference_service: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_request_rows: int = DEFAULT_MAX_REQUEST_ROWS
    # joblib artifacts are pickles: loading one runs code. Only with explicit consent.
    allow_pickle: bool = False
    # Use the ONNX graph when the ModelVersion records one (False: always scikit-learn).
    use_onnx: bool = True
    # Run model calls in a worker thread (None: the default, yes); off = on the event loop.
    predict_in_thread: bool | None = None
    log_level: str = "info"
    # SIGTERM: keep serving this long with readiness 503, then drain in-flight requests.
    drain_seconds: float = 0.0
    # Where a refusal to start is written for the kubelet (None: /dev/termination-log,
    # where it exists and is writable).
    termination_log: Path | None = None

    @property
    def version(self) -> str:
        """The version label: the ModelVersion's version number."""
        return str(self.model_version.version)


def _parse_manifest(doc: Any, source: str) -> tuple[str, api.ModelVersionSpec]:
    if not isinstance(doc, Mapping):
        raise StartupError(f"{source}: expected a ModelVersion object, got {type(doc).__name__}")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise StartupError(f"{source}: the ModelVersion has no spec object")
    try:
        parsed = api.ModelVersionSpec.model_validate(spec)
    except ValidationError as e:
        raise StartupError(f"{source}: invalid ModelVersion spec: {e}") from e
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not name:
        name = f"{parsed.model}-v{parsed.version}"
    return name, parsed


# What kubeloop-train writes next to result.json when a run passed its gate.
TRAINED_MODEL_VERSION = "modelversion.yaml"


def _read_doc(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise StartupError(f"--model-version {path}: cannot read: {e}") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise StartupError(f"--model-version {path}: not YAML or JSON: {e}") from e


def load_model_version_file(path: Path) -> tuple[str, api.ModelVersionSpec]:
    """Read a ModelVersion manifest (YAML or JSON) from a file.

    ``kubeloop-train``'s output serves directly: its ``--output`` directory, or the
    ``result.json`` in it, stand for the ``modelversion.yaml`` the trainer wrote there.
    """
    if path.is_dir():
        path = path / TRAINED_MODEL_VERSION
    doc = _read_doc(path)
    if isinstance(doc, Mapping) and "spec" not in doc and "succeeded" in doc:
        # A TrainingResult (result.json): serve the manifest the trainer wrote beside it.
        beside = path.parent / TRAINED_MODEL_VERSION
        if doc.get("succeeded") is not True or not beside.is_file():
            raise StartupError(
                f"--model-version {path}: a kubeloop-train result of a run that did not"
                f" produce a servable model (reason {doc.get('reason')!r}); there is no"
                f" {beside}"
            )
        path = beside
        doc = _read_doc(path)
    return _parse_manifest(doc, f"--model-version {path}")


def load_model_version_json(text: str) -> tuple[str, api.ModelVersionSpec]:
    """Read the ModelVersion object the operator passes in the environment."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise StartupError(f"{ENV_MODEL_VERSION}: not JSON: {e}") from e
    return _parse_manifest(doc, ENV_MODEL_VERSION)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubeloop-serve",
        description=(
            "Serve one Kubeloop ModelVersion over KServe V1 and Open Inference V2"
            " (HTTP, and gRPC on its own port)."
        ),
    )
    p.add_argument("--model-version", type=Path, help="ModelVersion manifest (YAML/JSON)")
    p.add_argument("--artifact-root", type=Path, help="directory pvc:// URIs resolve under")
    p.add_argument("--name", help="the model name in URL paths (default: the model name)")
    p.add_argument("--host", default=None, help="listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help=f"listen port (default {DEFAULT_PORT})")
    p.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help=f"Open Inference Protocol gRPC port (default {DEFAULT_GRPC_PORT}; 0: any free port)",
    )
    p.add_argument("--no-grpc", action="store_true", help="serve HTTP only")
    p.add_argument("--max-batch-size", type=int, default=None, help="rows per model call")
    p.add_argument("--max-batch-delay-ms", type=float, default=None, help="batch fill wait")
    p.add_argument("--role", choices=["stable", "canary"], default=None)
    p.add_argument("--inference-service", default=None, help="the InferenceService name")
    p.add_argument(
        "--prediction-log-sample-rate", type=float, default=None, help="0..1, JSON lines"
    )
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--max-request-rows", type=int, default=DEFAULT_MAX_REQUEST_ROWS)
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow loading a joblib (pickle) artifact; pickles run code when loaded",
    )
    p.add_argument("--no-onnx", action="store_true", help="serve with scikit-learn only")
    p.add_argument(
        "--predict-thread",
        choices=["auto", "on", "off"],
        default="auto",
        help="model calls in a worker thread (auto = on) or inline on the event loop (off)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="on SIGTERM, keep serving this long (readiness 503) before shutting down",
    )
    p.add_argument(
        "--termination-log",
        type=Path,
        default=None,
        help="where a refusal to start is written (default: /dev/termination-log if writable)",
    )
    return p


class ServeEnvironment(BaseSettings):
    """What the operator passes to a predictor container in its environment.

    ``ServeEnvironment()`` reads the process environment; ``model_validate(mapping)`` an
    explicit one (tests). Empty variables count as unset.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True)

    model_version: str | None = Field(None, validation_alias=ENV_MODEL_VERSION)
    artifact_root: Path | None = Field(None, validation_alias=ENV_ARTIFACT_ROOT)
    served_name: str | None = Field(None, validation_alias=ENV_SERVED_NAME)
    serving: Json[api.ServingConfig] | None = Field(None, validation_alias=ENV_SERVING)


def _validation_message(e: ValidationError) -> str:
    """Every error of ``e`` with where it is (``KUBELOOP_SERVING.maxBatchSize``)."""
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"])
        what = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {what}")
    return "; ".join(parts)


def read_environment(environ: Mapping[str, str] | None = None) -> ServeEnvironment:
    """The environment part of the settings (raises StartupError naming the variable)."""
    try:
        if environ is None:
            return ServeEnvironment()
        return ServeEnvironment.model_validate({k: v for k, v in environ.items() if v})
    except ValidationError as e:
        raise StartupError(_validation_message(e)) from e


def _serving(args: argparse.Namespace, env: ServeEnvironment) -> api.ServingConfig:
    """``KUBELOOP_SERVING``, with the flags given on the command line winning."""
    config = env.serving or api.ServingConfig()
    flags = {
        "max_batch_size": args.max_batch_size,
        "max_batch_delay_ms": args.max_batch_delay_ms,
        "role": args.role,
        "inference_service": args.inference_service,
    }
    updates: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if args.prediction_log_sample_rate is not None:
        if not 0.0 <= args.prediction_log_sample_rate <= 1.0:
            raise StartupError("--prediction-log-sample-rate must be within 0..1")
        updates["monitoring"] = config.monitoring.model_copy(
            update={"prediction_log_sample_rate": args.prediction_log_sample_rate}
        )
    if not updates:
        return config
    try:
        return api.ServingConfig.model_validate({**dict(config), **updates})
    except ValidationError as e:
        raise StartupError(_validation_message(e)) from e


def parse_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ServeSettings:
    """Parse flags and environment into :class:`ServeSettings` (raises StartupError)."""
    env = read_environment(environ)
    args = build_parser().parse_args(argv)

    if args.model_version is not None:
        mv_name, spec = load_model_version_file(args.model_version)
    elif env.model_version:
        mv_name, spec = load_model_version_json(env.model_version)
    else:
        raise StartupError(
            f"no model to serve: pass --model-version PATH or set {ENV_MODEL_VERSION}"
        )
    serving = _serving(args, env)

    root_flag = args.artifact_root
    root = root_flag if root_flag is not None else env.artifact_root
    port = args.port if args.port is not None else DEFAULT_PORT
    if not 0 <= port <= 65535:
        raise StartupError(f"--port must be within 0..65535, got {port}")
    grpc_port: int | None = None
    if not args.no_grpc:
        grpc_port = args.grpc_port if args.grpc_port is not None else DEFAULT_GRPC_PORT
        if not 0 <= grpc_port <= 65535:
            raise StartupError(f"--grpc-port must be within 0..65535, got {grpc_port}")
        if grpc_port == port and port != 0:
            raise StartupError(f"--grpc-port {grpc_port} is the HTTP port; choose another")
    if args.max_body_bytes < 1024:
        raise StartupError("--max-body-bytes must be at least 1024")
    if args.max_request_rows < 1:
        raise StartupError("--max-request-rows must be at least 1")
    if not 0.0 <= args.drain_seconds <= MAX_DRAIN_SECONDS:
        raise StartupError(f"--drain-seconds must be within 0..{MAX_DRAIN_SECONDS:g}")

    return ServeSettings(
        model_version=spec,
        model_version_name=mv_name,
        served_name=args.name or env.served_name or spec.model,
        artifact_root=root,
        host=args.host or "0.0.0.0",
        port=port,
        grpc_port=grpc_port,
        monitoring=serving.monitoring,
        max_batch_size=serving.max_batch_size,
        max_batch_delay_ms=serving.max_batch_delay_ms,
        role=serving.role,
        inference_service=serving.inference_service,
        max_body_bytes=args.max_body_bytes,
        max_request_rows=args.max_request_rows,
        allow_pickle=bool(args.allow_pickle),
        use_onnx=not args.no_onnx,
        predict_in_thread={"auto": None, "on": True, "off": False}[args.predict_thread],
        log_level=args.log_level,
        drain_seconds=float(args.drain_seconds),
        termination_log=args.termination_log,
    )
