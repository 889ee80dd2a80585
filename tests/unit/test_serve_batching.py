"""Micro-batching: concurrent requests share model calls; each gets its own rows back."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from kubeloop_runtime.serve.batching import MicroBatcher
from kubeloop_runtime.serve.model import Prediction


class Recorder:
    """A fake model: label = first feature; remembers the batch sizes it saw."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.proba_asked: list[bool] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, x: np.ndarray, proba: bool) -> Prediction:
        self.batches.append(x.shape[0])
        self.proba_asked.append(proba)
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        p = np.stack([x[:, 0], 1 - x[:, 0]], axis=1) if proba else None
        return Prediction(labels=x[:, 0].copy(), proba=p)


async def _submit_many(b: MicroBatcher, sizes: list[int], proba: list[bool]) -> list[Prediction]:
    async def one(i: int, n: int) -> Prediction:
        x = np.full((n, 2), float(i))
        return await b.submit(x, proba[i])

    return await asyncio.gather(*(one(i, n) for i, n in enumerate(sizes)))


@pytest.mark.parametrize("in_thread", [False, True])
def test_concurrent_requests_are_batched_and_split_back(in_thread: bool) -> None:
    model = Recorder(delay=0.01 if in_thread else 0.0)
    b = MicroBatcher(model, max_batch_size=16, max_delay_s=0.0, in_thread=in_thread)
    sizes = [1, 3, 2, 5, 1, 4, 2, 1, 1, 6]
    proba = [i == 3 for i in range(len(sizes))]

    async def run() -> list[Prediction]:
        try:
            return await _submit_many(b, sizes, proba)
        finally:
            await b.close()

    results = asyncio.run(run())
    for i, (n, r) in enumerate(zip(sizes, results, strict=True)):
        assert r.labels.tolist() == [float(i)] * n
        if r.proba is not None:
            assert r.proba.shape == (n, 2)
    # Fewer model calls than requests, none larger than the limit, all rows predicted.
    assert len(model.batches) < len(sizes)
    assert max(model.batches) <= 16
    assert sum(model.batches) == sum(sizes)
    assert any(model.proba_asked)
    assert ("predict" in next(iter(model.threads))) is in_thread


def test_a_request_larger_than_the_limit_goes_alone() -> None:
    model = Recorder()
    b = MicroBatcher(model, max_batch_size=4, max_delay_s=0.0, in_thread=False)
    results = asyncio.run(_submit_many(b, [10, 1], [False, False]))
    assert [len(r.labels) for r in results] == [10, 1]
    assert model.batches == [10, 1]


def test_a_lone_request_does_not_wait_for_the_delay() -> None:
    model = Recorder()
    b = MicroBatcher(model, max_batch_size=64, max_delay_s=0.5, in_thread=False)

    async def run() -> float:
        t0 = time.perf_counter()
        await b.submit(np.zeros((1, 2)), False)
        return time.perf_counter() - t0

    assert asyncio.run(run()) < 0.25


def test_the_batcher_waits_for_announced_requests() -> None:
    model = Recorder()
    b = MicroBatcher(model, max_batch_size=64, max_delay_s=0.2, in_thread=False)

    async def run() -> None:
        b.arriving()  # a second request has arrived and is still being parsed
        first = asyncio.ensure_future(b.submit(np.zeros((1, 2)), False))
        await asyncio.sleep(0.02)
        assert not first.done()  # held back: more rows are on their way
        b.arrived()
        await b.submit(np.ones((2, 2)), False)
        await first

    asyncio.run(run())
    assert model.batches == [3]


def test_a_model_error_fails_every_request_of_the_batch() -> None:
    def broken(x: np.ndarray, proba: bool) -> Prediction:
        raise RuntimeError("boom")

    b = MicroBatcher(broken, max_batch_size=8, max_delay_s=0.0, in_thread=False)

    async def run() -> list[BaseException | Prediction]:
        xs = [b.submit(np.zeros((1, 2)), False) for _ in range(3)]
        return await asyncio.gather(*xs, return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(run()))
