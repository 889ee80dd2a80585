"""``kubeloop_objects``: every Kubeloop object by kind and the status of its top condition.

Level-based, like the controllers: every change the cache of a TrainingJob
(``Succeeded``), ModelVersion or InferenceService (``Ready``) sees — a watch event or the
operator's own write — records the object's current condition status; a deletion forgets
it. The informers list every object when they start, so the gauge is complete after a
restart too. The counting lives in :class:`kubeloop.metrics.ObjectStates`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubeloop.conditions import get_condition
from kubeloop.metrics import TOP_CONDITIONS, OperatorMetrics


def observe(
    metrics: OperatorMetrics,
    kind: str,
    new: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None = None,
) -> None:
    """Record one change of ``kind`` in ``kubeloop_objects`` (``new`` None: deleted)."""
    obj = new if new is not None else old
    meta = (obj or {}).get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    if new is None:
        metrics.object_states.forget(kind, namespace, name)
        return
    condition = get_condition((new.get("status") or {}).get("conditions"), TOP_CONDITIONS[kind])
    status = None if condition is None else str(condition.get("status"))
    metrics.object_states.observe(kind, namespace, name, status)
