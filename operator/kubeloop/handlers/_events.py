"""Kubernetes Events about Kubeloop objects, posted by the operator's own client.

Events are best-effort (they expire; status carries what matters): a failure to post one
is logged, never raised. Reconciles post them only on transitions, so a quiet cluster
gets none. :func:`configure` gives the module the client at startup.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubeloop.conditions import now_rfc3339
from kubeloop.kube import Kube

logger = logging.getLogger("kubeloop.events")

COMPONENT = "kubeloop-operator"
_kube: list[Kube] = []


def configure(kube: Kube | None) -> None:
    _kube[:] = [kube] if kube is not None else []


def event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Post a core/v1 Event about ``obj`` (Normal or Warning)."""
    if not _kube:
        return
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    stamp = now_rfc3339()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'kubeloop')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        _kube[0].create(body)
    except Exception as e:  # an Event is never worth failing a reconcile
        logger.warning("Could not post Event %s on %s: %s", reason, meta.get("name"), e)


def info(obj: Mapping[str, Any], reason: str, message: str) -> None:
    event(obj, "Normal", reason, message)


def warn(obj: Mapping[str, Any], reason: str, message: str) -> None:
    event(obj, "Warning", reason, message)
