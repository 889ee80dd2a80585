"""Logging setup: JSON lines in the cluster (the schema of :mod:`kubeloop_runtime.jsonlog`,
shared with the serving runtime), plain text on a terminal."""

from __future__ import annotations

import logging
import sys

from kubeloop_runtime.jsonlog import JsonFormatter


def configure(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
