"""kubeloop-serve's shutdown (serve/server.py): SIGTERM drains first, then stops."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

import uvicorn

from kubeloop_runtime.serve.server import DrainingServer


@dataclass
class Plane:
    draining: bool = False


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def server(drain: float) -> tuple[DrainingServer, Plane, Clock]:
    plane, clock = Plane(), Clock()
    app = lambda scope, receive, send: None  # noqa: E731 (never called)
    return DrainingServer(uvicorn.Config(app), plane, drain, clock=clock), plane, clock


def tick(s: DrainingServer) -> bool:
    return asyncio.run(s.on_tick(1))


def test_sigterm_keeps_serving_not_ready_until_the_drain_is_over() -> None:
    s, plane, clock = server(5.0)
    s.handle_exit(signal.SIGTERM, None)
    assert plane.draining is True
    assert s.should_exit is False
    assert tick(s) is False
    clock.now += 4.9
    assert tick(s) is False and s.should_exit is False
    clock.now += 0.2
    assert tick(s) is True
    assert s.should_exit is True


def test_a_second_sigterm_or_sigint_stops_at_once() -> None:
    s, plane, _ = server(5.0)
    s.handle_exit(signal.SIGTERM, None)
    s.handle_exit(signal.SIGTERM, None)
    assert s.should_exit is True
    s, plane, _ = server(5.0)
    s.handle_exit(signal.SIGINT, None)
    assert s.should_exit is True and plane.draining is False


def test_no_drain_stops_at_once() -> None:
    s, plane, _ = server(0.0)
    s.handle_exit(signal.SIGTERM, None)
    assert s.should_exit is True and plane.draining is False
