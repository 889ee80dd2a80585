"""The Open Inference Protocol's gRPC service: RPCs in, data plane calls, messages out.

The gRPC counterpart of :mod:`~.app`, on the SAME :class:`~.dataplane.DataPlane` (one
model, one micro-batcher, one drift window, one set of metrics) and in the same event loop
as the HTTP server: ``inference.GRPCInferenceService`` (ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata, ModelInfer) and the standard health service
``grpc.health.v1.Health``, whose status follows readiness (SERVING once the model is loaded
and checked, NOT_SERVING from the start of a graceful shutdown).

Every :class:`~.errors.ServeError` aborts the call with its ``grpc_code`` and the same
message the HTTP path answers; anything else is a bug, logged, INTERNAL. Requests count in
``kubeloop_serving_requests_total{protocol="grpc"}`` with ``code`` the HTTP status the same
error has on the HTTP path (200, 400, 404, 500...), so error-rate queries and alerts cover
both protocols unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kubeloop_runtime.serve import grpc_codec
from kubeloop_runtime.serve.app import SERVER_NAME, server_version
from kubeloop_runtime.serve.dataplane import DataPlane
from kubeloop_runtime.serve.errors import MalformedBodyError, ServeError
from kubeloop_runtime.serve.oip import grpc_predict_v2_pb2 as pb
from kubeloop_runtime.serve.settings import ServeSettings

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]

PROTOCOL = "grpc"  # the ``protocol`` label of the request metrics
HEALTH_SERVICES = ("", grpc_codec.SERVICE)  # the server as a whole, and the inference service


def _request_id_metadata(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The ``x-request-id`` metadata, checked as the HTTP header is."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            rid = value if isinstance(value, str) else value.decode("ascii", "replace")
            if not 1 <= len(rid) <= 128 or not rid.isprintable():
                raise MalformedBodyError("x-request-id: expected 1..128 printable characters")
            return rid
    return None


class InferenceService:
    """The RPC handlers of ``inference.GRPCInferenceService`` over one data plane."""

    def __init__(self, settings: ServeSettings, dataplane: DataPlane) -> None:
        self.dp = dataplane
        self.name = settings.served_name
        self.version = settings.version

    # ------------------------------------------------------------------ health, metadata
    async def server_live(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dp.accepting)

    async def _served(
        self, name: str, version: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Abort with NOT_FOUND unless ``name`` (and ``version``, when given) is served."""
        try:
            grpc_codec.check_model(name, version, self.name, self.version)
        except ServeError as e:
            await _abort(context, e)

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        await self._served(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self.dp.accepting)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=server_version())

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        await self._served(request.name, request.version, context)
        return grpc_codec.metadata_response(self.dp.metadata_v2())

    # ------------------------------------------------------------------ inference
    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        t0 = time.perf_counter()
        dp = self.dp
        dp.begin()
        ended = False
        code = 200
        try:
            header_id = _request_id_metadata(context)
            req = grpc_codec.decode_infer(dp.codec, request, self.name, self.version)
            dp.end()
            ended = True
            t_pred = time.perf_counter()
            result = await dp.infer(req, PROTOCOL, header_id)
            dp.observe_predict_seconds(time.perf_counter() - t_pred)
            return grpc_codec.infer_response(
                dp.codec.v2_outputs(req.outputs, result.labels, result.proba),
                name=self.name,
                version=self.version,
                request_id=result.request_id,
                raw=bool(request.raw_input_contents),
            )
        except ServeError as e:
            code = e.status
            await _abort(context, e)
            raise  # not reached: abort raises
        except asyncio.CancelledError:
            code = 499  # the client went away (nginx's code; no HTTP status exists)
            raise
        except Exception:
            code = 500
            log.exception("Inference failed on %s/ModelInfer", grpc_codec.SERVICE)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            raise  # not reached
        finally:
            if not ended:
                dp.end()
            dp.metrics.observe_request(PROTOCOL, code, time.perf_counter() - t0)

    # ------------------------------------------------------------------ registration
    def handler(self) -> grpc.GenericRpcHandler:
        def unary(fn: Handler, req: Any, resp: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            grpc_codec.SERVICE,
            {
                "ServerLive": unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
                "ServerReady": unary(
                    self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse
                ),
                "ModelReady": unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
                "ServerMetadata": unary(
                    self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse
                ),
                "ModelMetadata": unary(
                    self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse
                ),
                "ModelInfer": unary(self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
            },
        )


async def _abort(context: grpc.aio.ServicerContext[Any, Any], e: ServeError) -> None:
    await context.abort(grpc.StatusCode[e.grpc_code], e.message)


class GrpcServer:
    """A grpc.aio server on the running event loop: bind, start, drain and stop."""

    def __init__(self, settings: ServeSettings, dataplane: DataPlane, *, grace_s: float) -> None:
        self.settings = settings
        self.dp = dataplane
        self.grace_s = grace_s
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind ``settings.grpc_host:grpc_port`` and serve; returns the port (0 picks one).

        Raises OSError when the address cannot be bound (the caller reports it).
        """
        s = self.settings
        limit = s.max_body_bytes  # one limit for a request, whichever the protocol
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
            ]
        )
        server.add_generic_rpc_handlers((InferenceService(s, self.dp).handler(),))
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"[{s.host}]:{s.grpc_port}" if ":" in s.host else f"{s.host}:{s.grpc_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as e:  # grpcio reports a failed bind as RuntimeError
            raise OSError(f"cannot listen on {address} (gRPC): {e}") from e
        if port == 0:
            raise OSError(f"cannot listen on {address} (gRPC)")
        await server.start()
        status = health_pb2.HealthCheckResponse.SERVING
        if not self.dp.ready:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for service in HEALTH_SERVICES:
            await self._health.set(service, status)
        self._server = server
        self.port = port
        return port

    async def not_serving(self) -> None:
        """The drain before a shutdown: health NOT_SERVING while calls are still answered."""
        if self._health is not None:
            for service in HEALTH_SERVICES:
                await self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    def begin_stop(self) -> None:
        """Start the graceful stop (idempotent): health NOT_SERVING, refuse new calls,
        let in-flight calls finish within the grace period."""
        if self._stopping is None and self._server is not None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(self._server))

    async def stop(self) -> None:
        """Stop gracefully and wait until every in-flight call has finished (or the grace
        period ran out)."""
        self.begin_stop()
        if self._stopping is not None:
            await self._stopping

    async def _stop(self, server: grpc.aio.Server) -> None:
        log.info("Stopping the gRPC server (grace %.0f s)", self.grace_s)
        await self._health.enter_graceful_shutdown()
        await server.stop(self.grace_s)
