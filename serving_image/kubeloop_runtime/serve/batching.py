"""Adaptive micro-batching: concurrent requests share one model call.

Requests put their rows in a queue and await a future. One worker task takes every
queued request (up to ``max_batch_size`` rows; a single larger request goes alone),
concatenates their rows, calls the model once and hands each request its slice.

The wait is adaptive: the worker waits (at most ``max_delay``) for more rows only while
other requests are known to be on their way (the app counts requests between their
arrival and their submission); a lone request is predicted at once. Under load, requests
that arrive while a batch is being predicted are queued and form the next batch, so the
batch size follows the load without any waiting.

A failing model call never fails innocent requests: when a batch of several requests
raises, each request is predicted again on its own, so only the request whose rows the
model refuses fails (with :class:`~.errors.ModelInputError` for a ``ValueError``, which is
how scikit-learn refuses input; anything else is re-raised as the bug it is).

``in_thread`` runs the model in a single worker thread so the event loop keeps reading
requests while the model predicts; they form the next batch. Measured faster than
predicting inline even for ONNX calls of tens of microseconds (docs/serving.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from kubeloop_runtime.serve.errors import ModelInputError
from kubeloop_runtime.serve.model import Prediction

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray, bool], Prediction]
BatchObserver = Callable[[int, float], None]


@dataclass(slots=True)
class _Item:
    x: np.ndarray
    proba: bool
    future: asyncio.Future[Prediction]
    n: int = field(init=False)

    def __post_init__(self) -> None:
        self.n = int(self.x.shape[0])


def _alone(e: Exception) -> Exception:
    """The error one request gets when the model fails on its rows alone."""
    if isinstance(e, ValueError):
        err = ModelInputError(f"the model could not predict these rows: {e}")
        err.__cause__ = e
        return err
    return e


class MicroBatcher:
    """Queue rows from concurrent requests and predict them together."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int,
        max_delay_s: float,
        in_thread: bool,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.in_thread = in_thread
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._arriving = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict") if in_thread else None
        )

    # --------------------------------------------------------------- request side
    def arriving(self) -> None:
        """A request has arrived and will probably submit rows soon."""
        self._arriving += 1

    def arrived(self) -> None:
        """The request has submitted its rows, or given up."""
        self._arriving -= 1

    async def submit(self, x: np.ndarray, proba: bool) -> Prediction:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._loop is not loop:
            self._start(loop)
        fut: asyncio.Future[Prediction] = loop.create_future()
        self._queue.append(_Item(x, proba, fut))
        assert self._wakeup is not None
        self._wakeup.set()
        return await fut

    # --------------------------------------------------------------- worker side
    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._queue.clear()
        self._worker = loop.create_task(self._run(), name="kubeloop-micro-batcher")

    def _take(self, batch: list[_Item], rows: int) -> int:
        q = self._queue
        limit = self.max_batch_size
        while q and (not batch or rows + q[0].n <= limit):
            item = q.popleft()
            if item.future.done():  # the client went away
                continue
            batch.append(item)
            rows += item.n
        return rows

    async def _run(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                wakeup.clear()
                await wakeup.wait()
            batch: list[_Item] = []
            rows = self._take(batch, 0)
            if (
                self.max_delay_s > 0
                and rows < self.max_batch_size
                and self._arriving > 0
                and not self._queue
            ):
                deadline = loop.time() + self.max_delay_s
                while rows < self.max_batch_size and self._arriving > 0:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    wakeup.clear()
                    try:
                        async with asyncio.timeout(remaining):
                            await wakeup.wait()
                    except TimeoutError:
                        break
                    if self._queue and rows + self._queue[0].n > self.max_batch_size:
                        break
                    rows = self._take(batch, rows)
            if batch:
                await self._execute(batch, rows)

    async def _execute(self, batch: list[_Item], rows: int) -> None:
        x = batch[0].x if len(batch) == 1 else np.concatenate([i.x for i in batch])
        proba = any(i.proba for i in batch)
        t0 = time.perf_counter()
        try:
            if self._executor is not None:
                loop = asyncio.get_running_loop()
                pred = await loop.run_in_executor(self._executor, self._predict, x, proba)
            else:
                pred = self._predict(x, proba)
        except Exception as e:
            if len(batch) > 1:  # isolate: one request's rows must not fail the others
                log.warning(
                    "A batch of %d requests failed (%s: %s); predicting each alone",
                    len(batch), type(e).__name__, e,
                )  # fmt: skip
                for item in batch:
                    if not item.future.done():
                        await self._execute([item], item.n)
                return
            item = batch[0]
            if not item.future.done():
                item.future.set_exception(_alone(e))
            return
        if self._on_batch is not None:
            self._on_batch(rows, time.perf_counter() - t0)
        if len(batch) == 1:
            item = batch[0]
            if not item.future.done():
                item.future.set_result(pred)
            return
        start = 0
        for item in batch:
            end = start + item.n
            if not item.future.done():
                bad = pred.bad[start:end] if pred.bad is not None else None
                item.future.set_result(
                    Prediction(
                        labels=pred.labels[start:end],
                        proba=pred.proba[start:end] if pred.proba is not None else None,
                        bad=bad if bad is not None and bad.any() else None,
                    )
                )
            start = end

    async def close(self) -> None:
        """Stop the worker (after the server drained) and the predict thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
