"""The manager: informers -> event handlers -> work queues -> reconciles, under leader election.

Like controller-runtime's manager, it owns:

- one :class:`kubeloop.cache.Informer` per kind the reconciles read (the three Kubeloop
  kinds, training Jobs, Kubeloop's pods, and the predictors' Deployments, Services, HPAs
  and PDBs, the children selected by label so the caches hold only what is ours);
- one :class:`kubeloop.controller.Controller` per reconcile (trainingjob, modelversion,
  inferenceservice, loop), whose queues the informers' event handlers feed;
- a :class:`kubeloop.leader.Elector` when leader election is on: every replica keeps its
  caches warm; only the leader runs the workers and writes;
- one operator-level resync: every ``settings.resync_period`` seconds (jittered), every
  cached Kubeloop object is enqueued once, spread over a tenth of the period. This replaces
  kopf's per-object timers and daemons, for which kopf puts a finalizer on every object.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from kubeloop import cache
from kubeloop.cache import Caches, Informer, Kind
from kubeloop.client import CachedClient
from kubeloop.controller import Controller
from kubeloop.handlers import _events, inferenceservice, loop, modelversion, objects, trainingjob
from kubeloop.handlers._common import ControllerState
from kubeloop.handlers._failures import COND_LOOP_RECONCILED, COND_RECONCILED, FailureRecorder
from kubeloop.kube import Kube, Obj
from kubeloop.leader import Elector
from kubeloop.metrics import (
    INFERENCESERVICE,
    LOOP,
    MODELVERSION,
    TRAININGJOB,
    FaultMetrics,
    OperatorMetrics,
)
from kubeloop.reconcile import inferenceservice as isvc_reconcile
from kubeloop.settings import Settings
from kubeloop_runtime import api

logger = logging.getLogger("kubeloop.manager")

PRIMARY = ("TrainingJob", "ModelVersion", "InferenceService")
_OURS = {api.LABEL_MANAGED_BY: api.MANAGED_BY}
_PREDICTOR = {api.LABEL_INFERENCESERVICE: "", **_OURS}


def kinds() -> dict[str, Kind]:
    """What the operator caches, with the label selectors and indexes its reads use."""
    return {
        "TrainingJob": Kind(
            api.API_VERSION, "TrainingJob", index_labels=(api.LABEL_INFERENCESERVICE,)
        ),
        "ModelVersion": Kind(
            api.API_VERSION,
            "ModelVersion",
            index_labels=(api.LABEL_MODEL, api.LABEL_TRAININGJOB),
        ),
        "InferenceService": Kind(api.API_VERSION, "InferenceService"),
        "Job": Kind(
            "batch/v1",
            "Job",
            labels={api.LABEL_TRAININGJOB: ""},
            index_labels=(api.LABEL_TRAININGJOB,),
        ),
        "Pod": Kind(
            "v1",
            "Pod",
            labels=_OURS,
            index_labels=(api.LABEL_TRAININGJOB, api.LABEL_INFERENCESERVICE),
        ),
        "Deployment": Kind(
            "apps/v1", "Deployment", labels=_PREDICTOR, index_labels=(api.LABEL_INFERENCESERVICE,)
        ),
        "Service": Kind("v1", "Service", labels=_PREDICTOR),
        "HorizontalPodAutoscaler": Kind("autoscaling/v2", "HorizontalPodAutoscaler", _PREDICTOR),
        "PodDisruptionBudget": Kind("policy/v1", "PodDisruptionBudget", labels=_PREDICTOR),
    }


def _label(obj: Mapping[str, Any] | None, label: str) -> str | None:
    value = ((obj or {}).get("metadata") or {}).get("labels", {}).get(label)
    return str(value) if value else None


def identity(settings: Settings) -> str:
    """This replica's name in the Lease: the pod's name, else host and a random suffix."""
    return settings.identity or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _size_observer(gauge: Any, store: cache.Store) -> Callable[[Obj | None, Obj | None], None]:
    def observe(new: Obj | None, old: Obj | None) -> None:
        gauge.set(len(store))

    return observe


def _objects_observer(
    metrics: OperatorMetrics, kind: str
) -> Callable[[Obj | None, Obj | None], None]:
    def observe(new: Obj | None, old: Obj | None) -> None:
        objects.observe(metrics, kind, new, old)

    return observe


class Manager:
    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        metrics: OperatorMetrics,
        faults: FaultMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = ControllerState()  # memo.state: what the controllers keep between reconciles
        self.elector: Elector | None = None
        if settings.leader_election:
            self.elector = Elector(
                kube,
                namespace=settings.lease_namespace,
                name=settings.lease_name,
                identity=identity(settings),
                lease_duration=settings.lease_duration,
                renew_deadline=settings.renew_deadline,
                retry_period=settings.retry_period,
                on_started_leading=self._start_leading,
                on_stopped_leading=self._stop_leading,
            )
            kube = kube.guarded(self.elector.is_leader)
        self.kube = kube
        self.caches = Caches(
            {
                name: Informer(
                    kube,
                    kind,
                    settings.namespaces,
                    watch_timeout=settings.watch_timeout,
                    backoff=max(settings.backoff, 0.5),
                    relists_total=faults.watch_relists_total if faults is not None else None,
                )
                for name, kind in kinds().items()
            }
        )
        self.client = CachedClient(kube, self.caches)
        is_leader: Callable[[], bool] = (
            self.elector.is_leader if self.elector is not None else (lambda: True)
        )

        def controller(
            name: str, fn: Callable[[Any, str, str], Any], teller: FailureRecorder
        ) -> Controller:
            return Controller(
                name,
                lambda ns, n: fn(self, ns, n),
                workers=settings.workers,
                metrics=metrics,
                is_leader=is_leader,
                base_delay=min(settings.backoff, 0.05),
                max_delay=max(settings.backoff * 60, 1.0),
                on_failure=teller.failed,
                on_success=teller.succeeded,
            )

        def teller(kind: str, primary: str, condition: str = COND_RECONCILED) -> FailureRecorder:
            return FailureRecorder(
                self.client,
                api_version=api.API_VERSION,
                kind=kind,
                condition=condition,
                primary=primary,
                primary_status="Unknown" if primary == api.COND_SUCCEEDED else "False",
                lock=self.state.isvc_locks if kind == "InferenceService" else None,
                failures_total=faults.reconcile_failures_total if faults is not None else None,
            )

        isvc_loop = teller("InferenceService", api.COND_READY, COND_LOOP_RECONCILED)
        self.controllers = {
            TRAININGJOB: controller(
                TRAININGJOB, trainingjob.reconcile_key, teller("TrainingJob", api.COND_SUCCEEDED)
            ),
            MODELVERSION: controller(
                MODELVERSION, modelversion.reconcile_key, teller("ModelVersion", api.COND_READY)
            ),
            INFERENCESERVICE: controller(
                INFERENCESERVICE,
                inferenceservice.reconcile_key,
                teller("InferenceService", api.COND_READY),
            ),
            LOOP: controller(LOOP, loop.reconcile_key, isvc_loop),
        }
        self.refs = inferenceservice.RefIndex()
        self._stop = threading.Event()
        self._running = False
        self._wire()

    # kopf-memo-like attributes the reconciles read: memo.client, .kube, .settings, .metrics

    # ------------------------------------------------------------------ wiring

    def _wire(self) -> None:
        inf = self.caches.informers
        for kind, informer in inf.items():
            store = informer.store
            gauge = self.metrics.cache_objects.labels(kind)
            gauge.set(0)
            store.observers.append(_size_observer(gauge, store))
            if kind in PRIMARY:
                store.observers.append(_objects_observer(self.metrics, kind))
        inf["TrainingJob"].add_handler(self._on_trainingjob)
        inf["ModelVersion"].add_handler(self._on_modelversion)
        inf["InferenceService"].add_handler(self._on_inferenceservice)
        inf["Job"].add_handler(self._on_training_child)
        inf["Pod"].add_handler(self._on_training_child)
        inf["Pod"].add_handler(self._on_predictor_pod)
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
            inf[kind].add_handler(self._on_predictor_child)

    def _enqueue(self, controller: str, namespace: str, name: str) -> None:
        self.controllers[controller].enqueue(namespace, name)

    def _on_trainingjob(self, type_: str, new: Obj | None, old: Obj | None) -> None:
        ns, name = cache.key_of(new or old or {})
        if new is None:
            self.controllers[TRAININGJOB].forget(ns, name)
        else:
            self._enqueue(TRAININGJOB, ns, name)
        isvc = _label(new or old, api.LABEL_INFERENCESERVICE)
        if isvc:
            self._enqueue(LOOP, ns, isvc)

    def _on_modelversion(self, type_: str, new: Obj | None, old: Obj | None) -> None:
        obj = new or old or {}
        ns, name = cache.key_of(obj)
        if new is None:
            self.controllers[MODELVERSION].forget(ns, name)
            modelversion.forget(self.metrics, self.state, ns, name)
        else:
            self._enqueue(MODELVERSION, ns, name)
        models = {str((o.get("spec") or {}).get("model") or "") for o in (new, old) if o}
        targets: set[str] = set()
        for model in models:
            targets |= self.refs.referring(ns, name, model or None)
        isvcs = self.caches["InferenceService"]
        for isvc in sorted(targets):
            self._enqueue(INFERENCESERVICE, ns, isvc)
            body = isvcs.get(ns, isvc) or {}
            if body and loop.wants_loop(body.get("spec") or {}, body.get("status") or {}):
                self._enqueue(LOOP, ns, isvc)
        tj = _label(obj, api.LABEL_TRAININGJOB)
        if tj:
            self._enqueue(TRAININGJOB, ns, tj)

    def _on_inferenceservice(self, type_: str, new: Obj | None, old: Obj | None) -> None:
        ns, name = cache.key_of(new or old or {})
        self.refs.update(ns, name, new)
        if new is None:
            self.controllers[INFERENCESERVICE].forget(ns, name)
            self.controllers[LOOP].forget(ns, name)
            self.state.dataset_watch.forget(ns, name)
            return
        self._enqueue(INFERENCESERVICE, ns, name)
        if any(
            o is not None and loop.wants_loop(o.get("spec") or {}, o.get("status") or {})
            for o in (new, old)
        ):
            self._enqueue(LOOP, ns, name)

    def _on_training_child(self, type_: str, new: Obj | None, old: Obj | None) -> None:
        tj = _label(new or old, api.LABEL_TRAININGJOB)
        if tj:
            self._enqueue(TRAININGJOB, cache.key_of(new or old or {})[0], tj)

    def _on_predictor_pod(self, type_: str, new: Obj | None, old: Obj | None) -> None:
        """A predictor pod's readiness or refusal to load changed: its InferenceService's
        ModelLoaded/Ready follow (other pod events enqueue nothing)."""
        isvc = _label(new or old, api.LABEL_INFERENCESERVICE)
        if isvc and isvc_reconcile.pod_signal(new) != isvc_reconcile.pod_signal(old):
            self._enqueue(INFERENCESERVICE, cache.key_of(new or old or {})[0], isvc)

    def _on_predictor_child(self, type_: str, new: Obj | None, old: Obj | None) -> None:
        isvc = _label(new or old, api.LABEL_INFERENCESERVICE)
        if isvc:
            self._enqueue(INFERENCESERVICE, cache.key_of(new or old or {})[0], isvc)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        _events.configure(self.kube)
        self.caches.start()
        if self.elector is not None:
            self.elector.start()
        else:
            threading.Thread(target=self._start_leading, name="start", daemon=True).start()

    def _start_leading(self) -> None:
        if not self._running:
            if not self.caches.wait_synced(timeout=300):
                logger.warning("Caches not synced after 300s; starting anyway")
            logger.info("Caches synced: %s", self.caches.sizes())
        # Without leader election the one replica acts as the leader: the gauge says so too,
        # so "exactly one leader" holds for every install.
        self.metrics.leader.labels(self.settings.lease_name).set(1)
        if not self._running:
            for c in self.controllers.values():
                c.start()
            self._running = True
            threading.Thread(target=self._resync_loop, name="resync", daemon=True).start()
        # Every object once: while following, the workers dropped their keys (and delayed
        # ones, such as polls), which the new term must look at again.
        self.resync(spread=0.0)

    def _stop_leading(self) -> None:
        """Lost the Lease: the workers stop taking keys (``is_leader`` is false) and every
        write is refused, while the caches stay warm for the next term."""
        self.metrics.leader.labels(self.settings.lease_name).set(0)
        logger.error("Lost leadership; following until the Lease can be held again")

    def resync(self, spread: float) -> None:
        """Enqueue every cached Kubeloop object once, over ``spread`` seconds."""
        for kind, controller in (
            ("TrainingJob", TRAININGJOB),
            ("ModelVersion", MODELVERSION),
            ("InferenceService", INFERENCESERVICE),
        ):
            for ns, name in self.caches[kind].keys():  # noqa: SIM118 (a Store, not a dict)
                delay = random.uniform(0, spread) if spread > 0 else 0.0
                self.controllers[controller].enqueue_after(ns, name, delay)
                if kind == "InferenceService":
                    self.controllers[LOOP].enqueue_after(ns, name, delay)

    def _resync_loop(self) -> None:
        period = self.settings.resync_period
        while not self._stop.wait(period * random.uniform(0.9, 1.1)):
            self.resync(spread=period / 10)

    def stop(self) -> None:
        self._stop.set()
        if self._running:
            for c in self.controllers.values():
                c.stop(timeout=5)
        if self.elector is not None:
            self.elector.stop(release=True)
        self.caches.stop()
        _events.configure(None)
