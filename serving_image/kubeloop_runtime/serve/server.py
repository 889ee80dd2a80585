"""The HTTP server process: uvicorn, with a drain before its graceful shutdown.

When a pod is deleted, the kubelet sends SIGTERM while the endpoint controller takes the pod
out of its Services' EndpointSlices, and kube-proxy on every node rewrites its rules a
moment after that: for that moment new connections still arrive. A server that stops
accepting at SIGTERM refuses them, and clients see errors for requests that never reached a
model. So on the first SIGTERM this server keeps answering for ``drain_seconds`` with its
readiness at 503 (``DataPlane.draining``), then lets uvicorn's graceful shutdown stop
accepting and finish the requests in flight (up to ``api.SERVE_GRACEFUL_SECONDS``). The
predictor pod's ``terminationGracePeriodSeconds`` covers both (``kubeloop_runtime.api``).

SIGINT (Ctrl-C), a second SIGTERM and ``drain_seconds = 0`` shut down at once, gracefully.
A drained shutdown exits 0.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Protocol

import uvicorn

from kubeloop_runtime import api

log = logging.getLogger("kubeloop_runtime.serve")

# How long uvicorn waits for requests in flight once it stopped accepting.
GRACEFUL_SECONDS = api.SERVE_GRACEFUL_SECONDS


class Drainable(Protocol):
    draining: bool


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        dataplane: Drainable,
        drain_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config)
        self._dataplane = dataplane
        self._drain_seconds = drain_seconds
        self._clock = clock
        self.drain_until: float | None = None
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the signal handler: set flags only; on_tick logs and acts.
        if sig == signal.SIGTERM and self._drain_seconds > 0 and self.drain_until is None:
            self.drain_until = self._clock() + self._drain_seconds
            self._dataplane.draining = True
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and not self.should_exit:
            if not self._announced:
                self._announced = True
                log.info(
                    "Received SIGTERM: not ready, still answering for %gs, then shutting down",
                    self._drain_seconds,
                )
            if self._clock() >= self.drain_until:
                log.info("Drained; shutting down (in-flight requests finish first)")
                self.should_exit = True
        return bool(await super().on_tick(counter))
