"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every replica runs an :class:`Elector`. The Lease names its holder and when the holder last
renewed it. A replica acquires the Lease when nobody holds it, or when the record it last
saw has not changed for ``lease_duration`` seconds by its *own* clock (no clock comparison
across machines); the holder renews it every ``retry_period``. Every write is an update
guarded by the Lease's resourceVersion, so two replicas can never both succeed.

The leader's writes to everything else pass :meth:`Elector.is_leader`, which is true only
while the last successful renewal is younger than ``renew_deadline`` (shorter than
``lease_duration``): a leader cut off from the API server stops writing before anyone can
take over, so there are no double writes. A leader that loses the Lease (it could not renew
in time, or another replica holds it now) steps down and campaigns again as a follower, with
its caches warm: an API server restarted for longer than ``renew_deadline`` costs no process
restart (controller-runtime's manager exits instead; here every write is guarded and every
reconcile level-based, so nothing held in memory depends on having led without a gap). On a
clean shutdown the leader releases the Lease so that the other replica takes over within
``retry_period``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubeloop.kube import Kube, Obj
from kubeloop_runtime import rfc3339

logger = logging.getLogger("kubeloop.leader")

API_VERSION = "coordination.k8s.io/v1"


def _micro_time(t: dt.datetime) -> str:
    return rfc3339.format_time(t, "microseconds")  # a Lease's MicroTime


class Elector:
    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] = lambda: None,
        on_stopped_leading: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election: need retry_period < renew_deadline < duration")
        # The Lease itself is written before leading (no guard), and its renewals are not
        # counted with the reconciles' requests (rest_client_requests_total).
        self.kube = kube.guarded(None)
        self.kube.requests_total = None
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._lock = threading.Lock()
        self._renewed_at: float | None = None  # our clock, when we last held it for sure
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._leading = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ API

    def is_leader(self) -> bool:
        with self._lock:
            return (
                self._leading
                and self._renewed_at is not None
                and self._clock() - self._renewed_at < self.renew_deadline
            )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.retry_period + 5)
        if release and self._leading:
            self._release()

    # ------------------------------------------------------------------ loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                held = self.try_acquire_or_renew()
            except Exception as e:  # the API server is away: try again
                logger.warning("Could not reach Lease %s/%s: %s", self.namespace, self.name, e)
                held = False
            if held and not self._leading:
                with self._lock:
                    self._leading = True
                logger.info("Became the leader (Lease %s/%s)", self.namespace, self.name)
                self._on_started()
            elif self._leading and not self.is_leader():
                logger.error(
                    "Lost the leader Lease %s/%s; following until it can lead again",
                    self.namespace,
                    self.name,
                )
                with self._lock:
                    self._leading = False
                self._on_stopped()
            self._stop.wait(self.retry_period)

    def _get(self) -> Obj | None:
        return self.kube.get(API_VERSION, "Lease", self.namespace, self.name)

    def try_acquire_or_renew(self) -> bool:
        """One round: True when this replica holds the Lease afterwards."""
        now_wall = dt.datetime.now(dt.UTC)
        now = self._clock()
        lease = self._get()
        spec_new: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "renewTime": _micro_time(now_wall),
        }
        if lease is None:
            body = {
                "apiVersion": API_VERSION,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec_new, "acquireTime": _micro_time(now_wall), "leaseTransitions": 0},
            }
            if self.kube.create(body) is None:
                return False  # someone else created it first
            self._held(now)
            return True
        spec = lease.get("spec") or {}
        record = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("leaseDurationSeconds"),
            lease["metadata"].get("resourceVersion"),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, now
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and now - self._observed_at < duration:
            return False  # held by another replica that renews it
        if holder != self.identity:
            spec_new["acquireTime"] = _micro_time(now_wall)
            spec_new["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        else:
            spec_new["acquireTime"] = spec.get("acquireTime") or _micro_time(now_wall)
            spec_new["leaseTransitions"] = int(spec.get("leaseTransitions") or 0)
        body = {**lease, "spec": {**spec, **spec_new}}
        try:
            self.kube.replace(body)
        except ApiException as e:
            if e.status == 409:
                return False  # changed meanwhile: someone else renewed or acquired it
            raise
        self._held(now)
        return True

    def _held(self, now: float) -> None:
        with self._lock:
            self._renewed_at = now

    def _release(self) -> None:
        try:
            lease = self._get()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
            self.kube.replace({**lease, "spec": spec})
            logger.info("Released the leader Lease %s/%s", self.namespace, self.name)
        except Exception as e:
            logger.warning("Could not release Lease %s/%s: %s", self.namespace, self.name, e)
        finally:
            with self._lock:
                self._leading = False
