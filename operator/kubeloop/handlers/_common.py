"""What every controller's reconcile shares: per-object loggers, the state the controllers
keep between reconciles, and the legacy finalizer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubeloop.client import CachedClient
from kubeloop.datasets import DatasetWatch
from kubeloop.kube import Obj
from kubeloop.registry import KeyedLocks

Logger = logging.Logger | logging.LoggerAdapter[Any]


@dataclass
class ControllerState:
    """What the controllers remember between reconciles: one per manager (``memo.state``),
    not module-level, so two managers in one process (tests, a restart) share nothing.

    The lock tables keep an entry only while someone holds or waits for it; the
    ModelVersion entries are dropped when the ModelVersion is deleted, the dataset watch's
    when the InferenceService is (the manager's delete handlers).
    """

    # Writers of an InferenceService's status: its controller, the loop, the failure recorder.
    isvc_locks: KeyedLocks = field(default_factory=KeyedLocks)
    trainingjob_locks: KeyedLocks = field(default_factory=KeyedLocks)
    # Per (namespace, model): alias moves of one model's versions.
    model_locks: KeyedLocks = field(default_factory=KeyedLocks)
    # ModelVersions reconciled since start: the first look checks the artifact again.
    verified: set[tuple[str, str]] = field(default_factory=set)
    verified_lock: threading.Lock = field(default_factory=threading.Lock)
    # (namespace, name) -> label values of the ModelVersion series exported.
    info_series: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    metric_series: dict[tuple[str, str], list[tuple[str, ...]]] = field(default_factory=dict)
    # The closed loop's last look at each InferenceService's dataset version.
    dataset_watch: DatasetWatch = field(default_factory=DatasetWatch)


def state_of(memo: Any) -> ControllerState:
    """The controllers' state on ``memo`` (the manager makes it at start; any other memo,
    such as a test's, gets one on first use)."""
    state: ControllerState | None = getattr(memo, "state", None)
    if state is None:
        state = ControllerState()
        memo.state = state
    return state


# Operators up to 0.1 ran kopf timers and daemons, for which kopf put this finalizer on
# every InferenceService and unfinished TrainingJob. No cleanup needs a finalizer (owner
# references delete children; the registry outlives runs), so reconciles take it off.
LEGACY_FINALIZER = "kubeloop.io/finalizer"


def object_logger(kind: str, namespace: str, name: str) -> Logger:
    """A logger that names the object, as kopf's per-object logger did (``k8s_ref``)."""
    return logging.LoggerAdapter(
        logging.getLogger(f"kubeloop.{kind.lower()}"),
        {"k8s_ref": f"{kind} {namespace}/{name}"},
    )


def release_legacy_finalizer(client: CachedClient, obj: Mapping[str, Any]) -> Obj | None:
    """Remove :data:`LEGACY_FINALIZER` from ``obj`` (guarded by a JSON-patch test, so a
    concurrent change of the finalizers is a 422 and the reconcile is retried).

    Returns the patched object, or None when there was nothing to remove."""
    meta = obj.get("metadata") or {}
    finalizers = list(meta.get("finalizers") or [])
    if LEGACY_FINALIZER not in finalizers:
        return None
    patch = [
        {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
        {
            "op": "replace",
            "path": "/metadata/finalizers",
            "value": [f for f in finalizers if f != LEGACY_FINALIZER],
        },
    ]
    out = client.patch(
        str(obj.get("apiVersion")),
        str(obj.get("kind")),
        meta.get("namespace"),
        str(meta.get("name")),
        patch,
        content_type="application/json-patch+json",
    )
    logging.getLogger("kubeloop").info(
        "Removed the legacy finalizer from %s %s/%s",
        obj.get("kind"),
        meta.get("namespace"),
        meta.get("name"),
    )
    return out
