"""One JSON log schema for the operator and the runtime (python-json-logger underneath).

Every line is one object: ``time`` (RFC 3339, milliseconds, UTC), ``level`` (lowercase),
``logger``, ``message``; ``object`` when the line is about a Kubernetes object (the
``k8s_ref`` extra the operator's per-object loggers set), ``error`` with the traceback when
there is one, and any other ``extra`` fields under their own names.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from kubeloop_runtime import rfc3339

FIELDS = ("time", "level", "logger", "message")


class JsonFormatter(_JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "k8s_ref": "object",
                "exc_info": "error",
            },
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return rfc3339.format_time(
            dt.datetime.fromtimestamp(record.created, dt.UTC), "milliseconds"
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        log_data["level"] = str(log_data.get("level", "")).lower()
        return log_data
