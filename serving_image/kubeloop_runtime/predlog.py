"""Sampled prediction logging: one JSON line per sampled request, for audits and retraining.

Each line is a JSON object::

    {"ts": "2025-01-31T12:00:00.123Z", "request_id": "9f2c41d07a3b-1a", "model": "iris",
     "version": "3", "inputs": [[5.1, 3.5, 1.4, 0.2]], "outputs": [0], "latency_seconds": 0.0012}

``latency_seconds`` appears only when given. Sampling is a Bernoulli draw per request from
a private ``random.Random``: rate 0 returns at once (one comparison), rate 1 logs all.
"""

from __future__ import annotations

import logging
import random
import sys
import threading
from typing import IO, Any

import orjson

from kubeloop_runtime import rfc3339

__all__ = ["PredictionLogger"]

log = logging.getLogger(__name__)

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    """Make what orjson cannot serialise natively JSON-ready (DataFrames, numpy extras)."""
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict) and hasattr(obj, "columns"):  # a pandas DataFrame
        return to_dict(orient="records")
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):  # a pandas Series, numpy object arrays and scalars
        return tolist()
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"cannot log a value of type {type(obj).__name__}")


def _now_rfc3339() -> str:
    return rfc3339.now("milliseconds")


class PredictionLogger:
    """Write a sampled fraction of predictions as JSON lines to a stream or a logger.

    ``stream`` is a text stream (default ``sys.stdout``; one ``write`` and ``flush`` per
    line, under a lock) or a :class:`logging.Logger` (one ``info`` record whose message is
    the JSON line). ``seed`` makes the sampling reproducible.
    """

    def __init__(
        self,
        sample_rate: float,
        stream: IO[str] | logging.Logger | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be between 0 and 1 (got {sample_rate})")
        self.sample_rate = sample_rate
        self._sink: IO[str] | logging.Logger = sys.stdout if stream is None else stream
        self._random = random.Random(seed).random
        self._lock = threading.Lock()
        self.logged = 0
        self.failed = 0

    def sampled(self) -> bool:
        """Draw whether the next request is logged."""
        rate = self.sample_rate
        if rate <= 0.0:
            return False
        return rate >= 1.0 or self._random() < rate

    def maybe_log(
        self,
        request_id: str,
        model: str,
        version: str,
        inputs: Any,
        outputs: Any,
        *,
        latency_seconds: float | None = None,
    ) -> bool:
        """Log this prediction if it is sampled; returns whether a line was written.

        A value that cannot be serialised is logged as a warning and skipped: logging
        never fails a prediction.
        """
        if not self.sampled():  # rate 0: one comparison
            return False
        record: dict[str, Any] = {
            "ts": _now_rfc3339(),
            "request_id": request_id,
            "model": model,
            "version": version,
            "inputs": inputs,
            "outputs": outputs,
        }
        if latency_seconds is not None:
            record["latency_seconds"] = latency_seconds
        try:
            line = orjson.dumps(record, default=_default, option=_OPTIONS).decode()
        except TypeError as e:
            self.failed += 1
            log.warning("Skipped prediction log line for request %s: %s", request_id, e)
            return False
        sink = self._sink
        if isinstance(sink, logging.Logger):
            sink.info(line)
        else:
            with self._lock:
                sink.write(line + "\n")
                sink.flush()
        self.logged += 1
        return True
