"""``kubeloop_objects``: every Kubeloop object by kind and the status of its top condition.

Level-based, like the controllers: each watch event of a TrainingJob (``Succeeded``),
ModelVersion or InferenceService (``Ready``) records the object's current condition status;
a deletion forgets it. kopf replays every existing object when its watch starts, so the
gauge is complete after a restart too. The counting lives in
:class:`kubeloop.metrics.ObjectStates`; these handlers only feed it.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubeloop.conditions import get_condition
from kubeloop.metrics import TOP_CONDITIONS, OperatorMetrics
from kubeloop_runtime import api


def observe(metrics: OperatorMetrics, kind: str, event_type: str | None, body: kopf.Body) -> None:
    """Record one watch event of ``kind`` in ``kubeloop_objects``."""
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    if event_type == "DELETED":
        metrics.object_states.forget(kind, namespace, name)
        return
    condition = get_condition((body.get("status") or {}).get("conditions"), TOP_CONDITIONS[kind])
    status = None if condition is None else str(condition.get("status"))
    metrics.object_states.observe(kind, namespace, name, status)


@kopf.on.event(api.GROUP, api.VERSION, api.TRAININGJOBS, id="objects")
def count_trainingjob(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    observe(memo.metrics, "TrainingJob", type, body)


@kopf.on.event(api.GROUP, api.VERSION, api.MODELVERSIONS, id="objects")
def count_modelversion(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    observe(memo.metrics, "ModelVersion", type, body)


@kopf.on.event(api.GROUP, api.VERSION, api.INFERENCESERVICES, id="objects")
def count_inferenceservice(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    observe(memo.metrics, "InferenceService", type, body)
