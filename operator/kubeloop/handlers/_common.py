"""What every controller's reconcile shares: per-object loggers and the legacy finalizer."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubeloop.client import CachedClient
from kubeloop.kube import Obj

Logger = logging.Logger | logging.LoggerAdapter[Any]

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
