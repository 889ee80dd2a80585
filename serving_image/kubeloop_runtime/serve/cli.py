"""``kubeloop-serve``: the composition root of the model server.

Parse settings once, verify and load the model and bind the ports (any failure, a port
in use included: a clear message on stderr and exit code 2), wire the data plane, metrics
and monitoring, then serve HTTP with uvicorn (one worker, uvloop, httptools) and the Open
Inference Protocol's gRPC service with grpc.aio, both in ONE event loop over ONE data plane
(one micro-batcher: HTTP and gRPC requests share batches). SIGTERM keeps both serving for
``--drain-seconds`` with readiness at 503 and the gRPC health NOT_SERVING, then drains
them: HTTP stops accepting and new gRPC calls are refused; in-flight requests of either
protocol finish (``api.SERVE_GRACEFUL_SECONDS`` at most) before the data plane closes
(``kubeloop_runtime.serve.server``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics

from kubeloop_runtime import api
from kubeloop_runtime.jsonlog import JsonFormatter
from kubeloop_runtime.serve import monitoring
from kubeloop_runtime.serve.app import App, create_app
from kubeloop_runtime.serve.dataplane import DataPlane
from kubeloop_runtime.serve.errors import StartupError
from kubeloop_runtime.serve.metrics import ServingMetrics, class_key
from kubeloop_runtime.serve.model import ServedModel, load
from kubeloop_runtime.serve.settings import ServeSettings, parse_settings
from kubeloop_runtime.train.result import clip, write_termination_log

log = logging.getLogger("kubeloop_runtime.serve")

EXIT_STARTUP = 2


def build(
    settings: ServeSettings,
    registry: CollectorRegistry | None = None,
    model: ServedModel | None = None,
) -> tuple[App, DataPlane, CollectorRegistry]:
    """Load (unless given) the model and wire everything; raises StartupError."""
    registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
    if model is None:
        model = load(
            settings.model_version,
            artifact_root=settings.artifact_root,
            allow_pickle=settings.allow_pickle,
            use_onnx=settings.use_onnx,
        )
    metrics = ServingMetrics(
        registry,
        model=settings.served_name,
        version=settings.version,
        sha256=settings.model_version.artifact.sha256,
        role=settings.role,
        runtime=model.runtime,
        classes=[class_key(c) for c in model.classes] if model.is_classifier else None,
    )
    parts = monitoring.build(settings, model)
    dataplane = DataPlane(
        settings,
        model,
        metrics,
        drift=parts.drift,
        feedback=parts.feedback,
        predlog=parts.predlog,
        request_id=parts.request_id,
        in_thread=settings.predict_in_thread,
    )
    registry.register(monitoring.collector(settings, dataplane))
    return create_app(settings, dataplane, registry), dataplane, registry


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except StartupError as e:
        print(f"kubeloop-serve: {e}", file=sys.stderr)
        report_refusal(e, None)
        return EXIT_STARTUP
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        app, dataplane, _ = build(settings)
    except StartupError as e:
        log.error("Refused to start: %s", e)
        print(f"kubeloop-serve: refused to start: {e}", file=sys.stderr)
        report_refusal(e, settings.termination_log)
        return EXIT_STARTUP
    import uvicorn  # noqa: PLC0415

    from kubeloop_runtime.serve.server import GRACEFUL_SECONDS, DrainingServer  # noqa: PLC0415

    log.info(
        "Serving %s (ModelVersion %s, version %s, runtime %s, role %s) on %s:%d",
        settings.served_name,
        settings.model_version_name,
        settings.version,
        dataplane.model.runtime,
        settings.role,
        settings.host,
        settings.port,
    )
    # Everything loaded so far lives until exit: keep the collector from rescanning it.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
        log_config=None,  # uvicorn's loggers propagate to our JSON handler
    )
    try:
        sock = listen(settings.host, settings.port)
    except OSError as e:
        # Like every startup failure: one line and exit 2 (not uvicorn's own exit 3).
        log.error("Refused to start: cannot listen on %s:%d: %s", settings.host, settings.port, e)
        print(
            f"kubeloop-serve: refused to start: cannot listen on {settings.host}:"
            f"{settings.port}: {e.strerror or e}",
            file=sys.stderr,
        )
        return EXIT_STARTUP
    server = DrainingServer(config, dataplane, settings.drain_seconds)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        return runner.run(_serve(settings, app, dataplane, server, sock))


async def _serve(
    settings: ServeSettings, app: App, dataplane: DataPlane, server: Any, sock: socket.socket
) -> int:
    """HTTP (uvicorn ``server`` on ``sock``) and gRPC in this event loop until SIGTERM."""
    grpc_server = None
    if settings.grpc_port is not None:
        from kubeloop_runtime.serve.grpc_server import GrpcServer  # noqa: PLC0415

        grpc_server = GrpcServer(settings, dataplane, grace_s=api.SERVE_GRACEFUL_SECONDS)
        try:
            port = await grpc_server.start()
        except OSError as e:
            log.error("Refused to start: %s", e)
            print(f"kubeloop-serve: refused to start: {e}", file=sys.stderr)
            sock.close()
            return EXIT_STARTUP
        log.info("Serving the Open Inference Protocol over gRPC on %s:%d", settings.host, port)
        app.before_close.append(grpc_server.stop)
    watcher = asyncio.create_task(_stop_grpc_on_exit(server, grpc_server))
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        if grpc_server is not None:
            await grpc_server.stop()
    return 0


async def _stop_grpc_on_exit(server: Any, grpc_server: Any) -> None:
    """Follow uvicorn's shutdown on the gRPC side (both poll about every 0.1 s): the gRPC
    health turns NOT_SERVING when the drain begins (calls are still answered), and the gRPC
    server stops accepting when uvicorn does."""
    while server.drain_until is None and not server.should_exit:
        await asyncio.sleep(0.05)
    if grpc_server is not None:
        await grpc_server.not_serving()
    while not server.should_exit:
        await asyncio.sleep(0.05)
    if grpc_server is not None:
        grpc_server.begin_stop()


def report_refusal(error: StartupError, path: Path | None) -> None:
    """The refusal as the container's termination message (an :class:`api.StartupFailure`),
    which the kubelet puts in the pod status for the operator."""
    failure = api.StartupFailure(reason=error.reason, message=clip(str(error), 2048))
    write_termination_log(failure.model_dump_json(by_alias=True), path)


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket before uvicorn starts (so a port in use is our error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
