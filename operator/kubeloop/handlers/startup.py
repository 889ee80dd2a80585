"""Operator startup: settings, API client, metrics registry and kopf tuning, all in the memo."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from kubeloop import kube
from kubeloop.metrics import create_metrics
from kubeloop.settings import Settings


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: Settings = memo.settings
    # Our own annotation prefix for kopf's bookkeeping, and no finalizers: owner
    # references clean up children, and the registry (ModelVersions) must outlive runs.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubeloop.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kubeloop.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "kubeloop.io/finalizer"
    settings.watching.server_timeout = ours.watch_timeout
    settings.watching.client_timeout = ours.watch_timeout + 10
    settings.watching.reconnect_backoff = min(ours.backoff, 1.0)
    settings.networking.error_backoffs = [ours.backoff, ours.backoff * 2, ours.backoff * 4]
    settings.batching.error_delays = [ours.backoff, ours.backoff * 2, ours.backoff * 4]
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 8

    memo.kube = kube.Kube(kube.load_client_config())
    memo.metrics = create_metrics()
    start_http_server(ours.metrics_port, registry=memo.metrics.registry)
    logging.getLogger("kubeloop").info("Serving metrics on :%d/metrics", ours.metrics_port)
