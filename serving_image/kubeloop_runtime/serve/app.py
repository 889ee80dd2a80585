"""Routes: a lean raw-ASGI application. HTTP in, data plane calls, HTTP out.

``create_app(settings, dataplane, registry)`` returns an ASGI callable. Every error a
client can cause is a :class:`~.errors.ServeError`; one handler maps it to
``{"error": message}`` with its status. Anything else is a bug: logged, answered 500.

Raw ASGI rather than a framework, for the hot path: on uvicorn + uvloop + httptools a
bare ASGI app returning fixed JSON answers 10,245 RPS at 64 clients on one core, and this
app serving the iris forest 6,942 RPS (68 % of that floor; docs/serving.md, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kubeloop_runtime.serve.dataplane import DataPlane
from kubeloop_runtime.serve.errors import (
    MalformedBodyError,
    MethodNotAllowedError,
    ModelNotFoundError,
    PayloadTooLargeError,
    RouteNotFoundError,
    ServeError,
    UnsupportedMediaTypeError,
)
from kubeloop_runtime.serve.openapi import openapi_document
from kubeloop_runtime.serve.settings import ServeSettings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = b"application/json"
_JSON_HEADERS = [(b"content-type", _JSON)]
SERVER_NAME = "kubeloop-serve"
_TRUE = frozenset({"true", "1", "yes"})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return bytes(v)
    return None


class App:
    """The ASGI application. Holds no state besides its collaborators."""

    def __init__(
        self, settings: ServeSettings, dataplane: DataPlane, registry: CollectorRegistry
    ) -> None:
        self.settings = settings
        self.dp = dataplane
        self.registry = registry
        self.name = settings.served_name
        self.version = settings.version
        self.max_body = settings.max_body_bytes
        self._openapi = orjson.dumps(openapi_document(settings, dataplane))
        # Awaited at shutdown, after HTTP drained and before the data plane closes.
        self.before_close: list[Callable[[], Awaitable[None]]] = []
        self._fixed: dict[str, tuple[tuple[str, ...], Callable[..., Awaitable[None]]]] = {
            "/v2/health/live": (("GET",), self._live),
            "/v2/health/ready": (("GET",), self._ready),
            "/v2": (("GET",), self._server_metadata),
            "/v1/models": (("GET",), self._v1_list),
            "/metrics": (("GET",), self._metrics),
            "/openapi.json": (("GET",), self._openapi_json),
        }

    # ------------------------------------------------------------------ ASGI entry
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.dp.ready = True
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                for hook in self.before_close:  # e.g. the gRPC server draining its calls
                    await hook()
                await self.dp.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            path: str = scope["path"]
            method: str = scope["method"]
            fixed = self._fixed.get(path)
            if fixed is not None:
                self._allow(method, fixed[0], path)
                await fixed[1](scope, receive, send)
            elif path.startswith("/v2/models/"):
                await self._v2_model(path[11:], method, scope, receive, send)
            elif path.startswith("/v1/models/"):
                await self._v1_model(path[11:], method, scope, receive, send)
            else:
                raise RouteNotFoundError(f"no route for {path}")
        except ServeError as e:
            await _error(send, e)
        except Exception:
            log.exception("Unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await _send_json(send, 500, {"error": "internal server error"})

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...], path: str) -> None:
        if method not in allowed:
            raise MethodNotAllowedError(
                f"method {method} is not allowed on {path}; use {', '.join(allowed)}", allowed
            )

    def _check_model(self, name: str) -> None:
        if name != self.name:
            raise ModelNotFoundError(f"model {name!r} not found; this server serves {self.name!r}")

    # ------------------------------------------------------------------ V2 routes
    async def _v2_model(
        self, rest: str, method: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        parts = rest.split("/")
        name = parts[0]
        tail = parts[1:]
        if len(tail) >= 2 and tail[0] == "versions":
            version = tail[1]
            tail = tail[2:]
            self._check_model(name)
            if version != self.version:
                raise ModelNotFoundError(
                    f"model {name!r} version {version!r} not found; serving version {self.version}"
                )
        else:
            self._check_model(name)
        action = tail[0] if len(tail) == 1 else ("" if not tail else None)
        path = scope["path"]
        if action == "":
            self._allow(method, ("GET",), path)
            await _send_json(send, 200, self.dp.metadata_v2())
        elif action == "ready":
            self._allow(method, ("GET",), path)
            ready = self.dp.accepting
            await _send_json(send, 200 if ready else 503, {"name": self.name, "ready": ready})
        elif action == "infer":
            self._allow(method, ("POST",), path)
            await self._infer("v2", scope, receive, send)
        elif action == "feedback":
            self._allow(method, ("POST",), path)
            try:
                body = await self._json_body(
                    scope,
                    receive,
                    _header(scope, b"content-type"),
                    _header(scope, b"content-length"),
                )
                rid, labels = self.dp.codec.decode_feedback(body)
            except ServeError:
                self.dp.feedback_refused()  # counted as result="invalid"
                raise
            await _send_json(send, 200, self.dp.record_feedback(rid, labels))
        elif action == "drift":
            self._allow(method, ("GET",), path)
            # Computing drift takes milliseconds: keep it off the event loop.
            await _send_json(send, 200, await asyncio.to_thread(self.dp.drift_report))
        elif action == "monitoring":
            self._allow(method, ("GET",), path)
            await _send_json(send, 200, await asyncio.to_thread(self.dp.monitoring))
        else:
            raise RouteNotFoundError(f"no route for {path}")

    # ------------------------------------------------------------------ V1 routes
    async def _v1_model(
        self, rest: str, method: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        path = scope["path"]
        if rest.endswith(":predict"):
            self._check_model(rest[:-8])
            self._allow(method, ("POST",), path)
            await self._infer("v1", scope, receive, send)
        elif "/" not in rest and ":" not in rest:
            self._check_model(rest)
            self._allow(method, ("GET",), path)
            await _send_json(send, 200, self.dp.metadata_v1())
        else:
            raise RouteNotFoundError(f"no route for {path}")

    # ------------------------------------------------------------------ inference
    async def _infer(self, protocol: str, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        dp = self.dp
        dp.begin()
        ended = False
        code = 200
        header_id: str | None = None
        try:
            ctype = length = None
            for k, v in scope["headers"]:  # one pass over the headers
                if k == b"content-type":
                    ctype = v
                elif k == b"content-length":
                    length = v
                elif k == b"x-request-id":
                    header_id = _header_request_id(v)
            body = await self._json_body(scope, receive, ctype, length)
            if protocol == "v2":
                req = dp.codec.decode_v2(body)
            else:
                req = dp.codec.decode_v1(body, _query_flag(scope, "probabilities"))
            dp.end()
            ended = True
            t_pred = time.perf_counter()
            result = await dp.infer(req, protocol, header_id)
            dp.observe_predict_seconds(time.perf_counter() - t_pred)
            if protocol == "v2":
                payload: dict[str, Any] = {
                    "model_name": self.name,
                    "model_version": self.version,
                    "id": result.request_id,
                    "outputs": dp.codec.v2_outputs(req.outputs, result.labels, result.proba),
                }
            else:
                payload = {"predictions": result.labels, "id": result.request_id}
                if result.proba is not None:
                    payload["probabilities"] = result.proba.tolist()
            data = orjson.dumps(payload)
            headers = [
                (b"content-type", _JSON),
                (b"x-request-id", result.request_id.encode()),
            ]
        except ServeError as e:
            code, headers, data = error_response(e)
            if header_id is not None:
                headers.append((b"x-request-id", header_id.encode()))
        except Exception:
            code = 500
            log.exception("Inference failed on %s", scope.get("path"))
            data = b'{"error":"internal server error"}'
            headers = list(_JSON_HEADERS)
        finally:
            if not ended:
                dp.end()
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        dp.metrics.observe_request(protocol, code, time.perf_counter() - t0)

    async def _json_body(
        self, scope: Scope, receive: Receive, ctype: bytes | None, length: bytes | None
    ) -> Any:
        if ctype is not None:
            media = ctype.split(b";", 1)[0].strip().lower()
            if media != _JSON and not media.endswith(b"+json"):
                raise UnsupportedMediaTypeError(
                    f"content-type {media.decode('latin-1')!r} is not supported; send"
                    " application/json"
                )
        body = await self._read_body(receive, length)
        if not body:
            raise MalformedBodyError("body: empty; send a JSON object")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise MalformedBodyError(f"body: malformed JSON: {json_problem(e)}") from e

    async def _read_body(self, receive: Receive, length: bytes | None) -> bytes:
        limit = self.max_body
        if length is not None:
            try:
                declared = int(length)
            except ValueError as e:
                raise MalformedBodyError("content-length: not an integer") from e
            if declared > limit:
                raise PayloadTooLargeError(f"body: {declared} bytes exceed the limit of {limit}")
        msg = await receive()
        if msg["type"] != "http.request":
            raise MalformedBodyError("body: the client disconnected")
        body: bytes = msg.get("body", b"")
        if not msg.get("more_body", False):
            if len(body) > limit:
                raise PayloadTooLargeError(f"body: more than {limit} bytes")
            return body
        chunks = [body]
        size = len(body)
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                raise MalformedBodyError("body: the client disconnected")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"body: more than {limit} bytes")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    # ------------------------------------------------------------------ fixed routes
    async def _live(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, 200, {"live": True})

    async def _ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        ready = self.dp.accepting
        await _send_json(send, 200 if ready else 503, {"ready": ready})

    async def _server_metadata(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(
            send, 200, {"name": SERVER_NAME, "version": server_version(), "extensions": []}
        )

    async def _v1_list(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, 200, {"models": [self.name]})

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Drift statistics are computed on scrape: keep them off the event loop.
        data = await asyncio.to_thread(generate_latest, self.registry)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _openapi_json(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": self._openapi})


def json_problem(e: orjson.JSONDecodeError) -> str:
    """What is wrong with a body orjson refused, in words, with the place it found it."""
    doc: str = e.doc
    pos: int = e.pos
    where = f"line {e.lineno}, column {e.colno} (char {pos})"
    rest = doc[pos:].lstrip()
    if not doc.strip():
        return "the body holds only whitespace; send a JSON object"
    if pos >= len(doc.rstrip()) or not rest:
        return f"the body ends early, at {where}: it is truncated or a bracket is not closed"
    signed = doc[pos - 1 : pos] == "-"
    for word in ("NaN", "Infinity"):
        if rest.startswith(word):
            shown = f"-{word}" if signed else word
            return f"{shown} at {where} is not a JSON number (JSON has no NaN or Infinity)"
    if "infinity when parsed" in e.msg:
        return f"the number at {where} overflows a double"
    return f"{e.msg} at {where}"


def server_version() -> str:
    try:
        return importlib.metadata.version("kubeloop")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _header_request_id(raw: bytes) -> str:
    try:
        rid = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise MalformedBodyError("x-request-id: must be ASCII") from e
    if not 1 <= len(rid) <= 128 or not rid.isprintable():
        raise MalformedBodyError("x-request-id: expected 1..128 printable characters")
    return rid


def _query_flag(scope: Scope, name: str) -> bool:
    qs: bytes = scope.get("query_string", b"")
    if not qs:
        return False
    values = parse_qs(qs.decode("latin-1")).get(name)
    return values is not None and values[-1].lower() in _TRUE


def error_response(e: ServeError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The one mapping of a typed error to an HTTP response: status, headers, JSON body."""
    headers = list(_JSON_HEADERS)
    if isinstance(e, MethodNotAllowedError):
        headers.append((b"allow", ", ".join(e.allowed).encode()))
    return e.status, headers, orjson.dumps({"error": e.message})


async def _error(send: Send, e: ServeError) -> None:
    status, headers, body = error_response(e)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, payload: Any) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": orjson.dumps(payload)})


def create_app(settings: ServeSettings, dataplane: DataPlane, registry: CollectorRegistry) -> App:
    """The ASGI application for one served model."""
    return App(settings, dataplane, registry)
