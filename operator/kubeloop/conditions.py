"""Status conditions per the Kubernetes API conventions: pure functions, no I/O.

A condition list is keyed by ``type``; each entry has ``type``, ``status`` (True, False,
Unknown), a CamelCase ``reason``, a human ``message``, ``lastTransitionTime`` and
``observedGeneration``. ``lastTransitionTime`` changes only when ``status`` changes, so
re-asserting the same condition on every reconcile writes nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kubeloop_runtime import rfc3339

Status = Literal["True", "False", "Unknown"]
MESSAGE_MAX = 1024


@dataclass(frozen=True)
class Condition:
    type: str
    status: Status
    reason: str
    message: str = ""


def now_rfc3339() -> str:
    return rfc3339.now()


def set_conditions(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    *,
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Merge ``updates`` into ``existing``; returns a new list in a stable order."""
    stamp = now or now_rfc3339()
    by_type: dict[str, dict[str, Any]] = {c["type"]: dict(c) for c in existing or ()}
    for u in updates:
        old = by_type.get(u.type)
        changed = old is None or old.get("status") != u.status
        entry: dict[str, Any] = {
            "type": u.type,
            "status": u.status,
            "reason": u.reason,
            "message": u.message[:MESSAGE_MAX],
            "lastTransitionTime": stamp if changed or old is None else old["lastTransitionTime"],
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        by_type[u.type] = entry
    return [by_type[t] for t in sorted(by_type)]


def get_condition(
    conditions: Sequence[Mapping[str, Any]] | None, type_: str
) -> Mapping[str, Any] | None:
    for c in conditions or ():
        if c.get("type") == type_:
            return c
    return None


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    c = get_condition(conditions, type_)
    return c is not None and c.get("status") == "True"
