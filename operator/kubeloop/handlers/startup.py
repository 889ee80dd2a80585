"""Operator lifecycle on kopf: build and start the manager at startup, stop it at cleanup.

kopf hosts the process (signals, the liveness endpoint, startup and cleanup). It watches
nothing itself: the manager's informers do, and its work queues run the reconciles. So
kopf registers no per-object handlers, timers or daemons, and puts no finalizer anywhere.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from kubeloop import kube
from kubeloop.manager import Manager
from kubeloop.metrics import create_fault_metrics, create_metrics
from kubeloop.settings import Settings


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: Settings = memo.settings
    settings.posting.enabled = False  # no kopf-posted Events: the reconciles post their own
    settings.execution.max_workers = 2

    metrics = create_metrics()
    faults = create_fault_metrics(metrics.registry)
    client = kube.Kube(
        kube.load_client_config(),
        requests_total=metrics.rest_client_requests_total,
        retries_total=faults.rest_client_request_retries_total,
    )
    start_http_server(ours.metrics_port, registry=metrics.registry)
    logging.getLogger("kubeloop").info("Serving metrics on :%d/metrics", ours.metrics_port)
    manager = Manager(ours, client, metrics, faults)
    memo.metrics = metrics
    memo.manager = manager
    manager.start()


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    manager: Manager | None = getattr(memo, "manager", None)
    if manager is not None:
        manager.stop()


@kopf.on.probe(id="caches")
def caches_synced(memo: kopf.Memo, **_: Any) -> bool:
    manager: Manager | None = getattr(memo, "manager", None)
    return manager is not None and manager.caches.synced()
