"""A fault-injecting proxy between the operator and the real API server (loopback only).

The operator talks plain HTTP to ``http://127.0.0.1:<port>``; the proxy forwards each
request over TLS to the API server of the kubeconfig it was given, with the request's own
``Authorization`` header (the operator's ServiceAccount token), so RBAC and admission stay
the real ones. For each request it draws one number from a seeded generator and, at the
rates of :class:`Faults`, answers instead of the server, or changes the answer:

| fault | what the operator gets |
|---|---|
| ``throttle`` | 429 TooManyRequests with ``Retry-After`` (the server did not act) |
| ``error500`` | 500 InternalError (the server did not act) |
| ``unavailable`` | 503 ServiceUnavailable, no ``Retry-After`` (the server did not act) |
| ``slow`` | the real answer, ``slow_seconds`` late |
| ``drop_before`` | the connection closed before forwarding (the server never saw it) |
| ``drop_after`` | forwarded, the server acted, the connection closed before the answer |
| ``gone`` (watches) | 410 Gone: the watch's resourceVersion is too old |
| ``gone_mid`` (watches) | the real stream, then an ERROR event with code 410, then its end |

The draws are deterministic given the seed (the n-th request gets the n-th draw); which
request is the n-th depends on the operator's timing. Every injected fault is counted in
``injected`` by name, every request in ``requests``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import socket
import ssl
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "host",
        "accept-encoding",
        "content-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True)
class Faults:
    """Rates (0..1, per request) of each fault; the rest is forwarded untouched."""

    throttle: float = 0.0
    error500: float = 0.0
    unavailable: float = 0.0
    slow: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    gone: float = 0.0  # watches only
    gone_mid: float = 0.0  # watches only
    retry_after: int = 1
    # After this many requests, a kind with a rate above 0 that has not been drawn yet is
    # injected on the next request it applies to: every kind happens in every run, however
    # the seeded draws fell on the requests this run happened to make (None: rates only).
    every_kind_after: int | None = None
    slow_seconds: tuple[float, float] = (0.5, 1.5)
    mid_stream_seconds: tuple[float, float] = (0.5, 3.0)

    def rates(self, watch: bool) -> list[tuple[str, float]]:
        names = [f.name for f in fields(self) if isinstance(getattr(self, f.name), float)]
        skip = {"slow", "drop_after"} if watch else {"gone", "gone_mid"}
        return [(n, getattr(self, n)) for n in names if n not in skip]


# Faults the proxy answers itself: (code, Status reason, message).
_ANSWERS = {
    "throttle": (429, "TooManyRequests", "the fault proxy throttled this request"),
    "error500": (500, "InternalError", "the fault proxy failed this request"),
    "unavailable": (503, "ServiceUnavailable", "the fault proxy is unavailable"),
    "gone": (410, "Expired", "too old resource version (the fault proxy)"),
}


def _status(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()


class FaultProxy:
    def __init__(self, kubeconfig: Path, faults: Faults, seed: int) -> None:
        cfg = yaml.safe_load(kubeconfig.read_text())
        ctx_name = cfg["current-context"]
        ctx = next(c for c in cfg["contexts"] if c["name"] == ctx_name)["context"]
        cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        self._kubeconfig = cfg
        self.upstream = str(cluster["server"]).rstrip("/")
        if not self.upstream.startswith("https://127.0.0.1:"):
            raise ValueError(f"the proxy forwards to this machine only, not {self.upstream}")
        self._ssl = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
        self.faults = faults
        self.seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._setup(sock))
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(self._teardown())
        loop.close()

    async def _setup(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=False
        )

    async def _teardown(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults

    def write_kubeconfig(self, dest: Path) -> Path:
        """The given kubeconfig, its server replaced by this proxy (plain HTTP, loopback)."""
        cfg = json.loads(json.dumps(self._kubeconfig))
        ctx_name = cfg["current-context"]
        ctx = next(c for c in cfg["contexts"] if c["name"] == ctx_name)["context"]
        cluster = next(c for c in cfg["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        cluster.pop("certificate-authority", None)
        cluster.pop("certificate-authority-data", None)
        cluster["server"] = self.url
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(yaml.safe_dump(cfg))
        return dest

    # ------------------------------------------------------------------ faults

    def _draw(self, watch: bool) -> tuple[str | None, float]:
        """The fault for the next request (or None), and a second draw for its timing."""
        with self._lock:
            self.requests += 1
            u, t = self._rng.random(), self._rng.random()
            after = self.faults.every_kind_after
            if after is not None and self.requests > after:
                for name, rate in self.faults.rates(watch):
                    if rate > 0 and self.injected[name] == 0:
                        self.injected[name] += 1
                        return name, t
            acc = 0.0
            for name, rate in self.faults.rates(watch):
                acc += rate
                if u < acc:
                    self.injected[name] += 1
                    return name, t
            return None, t

    @staticmethod
    def _between(bounds: tuple[float, float], t: float) -> float:
        return bounds[0] + (bounds[1] - bounds[0]) * t

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        watch = request.query.get("watch") in ("true", "1")
        fault, t = self._draw(watch)
        f = self.faults
        answer = _ANSWERS.get(fault or "")
        if answer is not None:
            code, reason, message = answer
            headers = {"Retry-After": str(f.retry_after)} if code == 429 else None
            return web.Response(
                status=code,
                headers=headers,
                body=_status(code, reason, message),
                content_type="application/json",
            )
        if fault == "drop_before":
            return self._drop(request)
        if fault == "slow":
            await asyncio.sleep(self._between(f.slow_seconds, t))
        return await self._forward(request, watch, fault, t)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)  # never sent: the connection is gone

    async def _forward(
        self, request: web.Request, watch: bool, fault: str | None, t: float
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            ssl=self._ssl,
        ) as up:
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
            if not watch or up.status != 200:
                data = await up.read()
                if fault == "drop_after":
                    return self._drop(request)
                return web.Response(status=up.status, headers=out_headers, body=data)
            return await self._relay_watch(request, up, out_headers, fault, t)

    async def _relay_watch(
        self,
        request: web.Request,
        up: aiohttp.ClientResponse,
        headers: dict[str, Any],
        fault: str | None,
        t: float,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=up.status, headers=headers)
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        cut = (
            loop.time() + self._between(self.faults.mid_stream_seconds, t)
            if fault == "gone_mid"
            else None
        )
        try:
            while True:
                timeout = None if cut is None else max(0.0, cut - loop.time())
                try:
                    line = await asyncio.wait_for(up.content.readline(), timeout)
                except TimeoutError:
                    gone = _status(410, "Expired", "too old resource version (the fault proxy)")
                    event = b'{"type":"ERROR","object":' + gone + b"}\n"
                    await resp.write(event)
                    break
                if not line:
                    break
                await resp.write(line)
            await resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientError):
            pass  # the operator went away, or the server ended the stream
        return resp
