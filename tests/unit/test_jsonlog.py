"""One JSON log schema: the operator's logging setup and the runtime's write the same keys."""

from __future__ import annotations

import io
import json
import logging

import pytest

from kubeloop import logs
from kubeloop_runtime import jsonlog, rfc3339


def _line(handler: logging.Handler, **extra: object) -> dict[str, object]:
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    log = logging.getLogger("kubeloop.test")
    try:
        raise ValueError("bad input")
    except ValueError:
        log.error("Reconcile of %s failed", "iris", exc_info=True, extra=extra)
    doc = json.loads(stream.getvalue().splitlines()[-1])
    assert isinstance(doc, dict)
    return doc


def test_the_operator_and_the_runtime_share_one_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    logs.configure("json")  # the operator's setup
    (operator_handler,) = logging.getLogger().handlers
    assert isinstance(operator_handler.formatter, jsonlog.JsonFormatter)
    ref = "InferenceService ml/iris"  # what handlers._common.object_logger sets
    doc = _line(operator_handler, k8s_ref=ref)
    assert set(jsonlog.FIELDS) <= set(doc)
    assert doc["level"] == "error"
    assert doc["logger"] == "kubeloop.test"
    assert doc["message"] == "Reconcile of iris failed"
    assert doc["object"] == ref
    assert "ValueError: bad input" in str(doc["error"])
    when = rfc3339.parse_time(doc["time"])
    assert when is not None and str(doc["time"]).endswith("Z")
