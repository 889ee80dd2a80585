"""Where the UI's data comes from: the user's own credentials, watch-fed caches, live changes.

- :func:`can_list` asks the API server what the user may do (a SelfSubjectAccessReview,
  as ``kubectl auth can-i`` does): a kind the user may not list and watch gets no informer
  and its pages say "not permitted".
- :class:`Source` runs one :class:`kubeloop.cache.Informer` per readable kind (the
  operator's own LIST + WATCH cache), so a page reads memory, never the API server, and
  1,000 ModelVersions cost one LIST at start.
- :class:`Changes` counts store changes and wakes the Server-Sent Events streams.
- :func:`drift_of_pods` asks the serving pods for their drift document through the API
  server's pod proxy (``pods/proxy``: what the user may not proxy to is not shown), and
  :func:`prometheus_drift` asks a Prometheus the user named, when one is.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubeloop import registry
from kubeloop.builders.predictor import HTTP_PORT
from kubeloop.cache import Informer, Kind
from kubeloop.kube import Kube, Obj
from kubeloop.ui import views
from kubeloop_runtime import api

logger = logging.getLogger("kubeloop.ui")

# What the UI reads: kind -> (apiVersion, API group, plural, labels to index).
KINDS: Mapping[str, tuple[str, str, str, tuple[str, ...]]] = {
    "ModelVersion": (api.API_VERSION, api.GROUP, api.MODELVERSIONS, ()),
    "TrainingJob": (api.API_VERSION, api.GROUP, api.TRAININGJOBS, ()),
    "InferenceService": (api.API_VERSION, api.GROUP, api.INFERENCESERVICES, ()),
    "Event": ("v1", "", "events", ()),
}

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def can(
    kube: Kube, verb: str, group: str, resource: str, namespace: str, *, subresource: str = ""
) -> bool:
    """Whether the user may ``verb`` ``resource`` in ``namespace`` (SelfSubjectAccessReview)."""
    attrs = {"namespace": namespace, "verb": verb, "group": group, "resource": resource}
    if subresource:
        attrs["subresource"] = subresource
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attrs},
    }
    out = kube.request("POST", SSAR_PATH, body=review)
    return bool((out.get("status") or {}).get("allowed"))


def can_list(kube: Kube, kind: str, namespace: str) -> bool:
    _, group, plural, _ = KINDS[kind]
    return all(can(kube, verb, group, plural, namespace) for verb in ("list", "watch"))


class Changes:
    """A change counter that Server-Sent Events streams wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0
        self.last_kind = ""

    def bump(self, kind: str) -> None:
        with self._cond:
            self.count += 1
            self.last_kind = kind
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> tuple[int, str]:
        """Block until the counter passes ``seen`` (or ``timeout``); (count, last kind)."""
        with self._cond:
            self._cond.wait_for(lambda: self.count > seen, timeout=timeout)
            return self.count, self.last_kind


@dataclass
class Source:
    """The caches of every kind the user may read in ``namespace``."""

    kube: Kube
    namespace: str
    informers: dict[str, Informer] = field(default_factory=dict)
    permitted: dict[str, bool] = field(default_factory=dict)
    changes: Changes = field(default_factory=Changes)

    def start(self, *, sync_timeout: float = 30.0) -> None:
        for kind, (api_version, _, _, index) in KINDS.items():
            self.permitted[kind] = can_list(self.kube, kind, self.namespace)
            if not self.permitted[kind]:
                logger.info("Not permitted to list %s in %s: not shown", kind, self.namespace)
                continue
            informer = Informer(
                self.kube, Kind(api_version, kind, index_labels=index), [self.namespace]
            )
            informer.store.observers.append(self._observer(kind))
            self.informers[kind] = informer
        for informer in self.informers.values():
            informer.start()
        for kind, informer in self.informers.items():
            if not informer.wait_synced(sync_timeout):
                logger.warning("The cache of %s did not sync in %.0fs", kind, sync_timeout)

    def _observer(self, kind: str) -> Callable[[Obj | None, Obj | None], None]:
        def observe(new: Obj | None, old: Obj | None) -> None:
            self.changes.bump(kind)

        return observe

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stop()

    def objects(self, kind: str) -> list[Obj]:
        informer = self.informers.get(kind)
        return informer.store.list(self.namespace) if informer is not None else []

    def get(self, kind: str, name: str) -> Obj | None:
        informer = self.informers.get(kind)
        return informer.store.get(self.namespace, name) if informer is not None else None

    def versions_of(self, model: str) -> list[Obj]:
        informer = self.informers.get("ModelVersion")
        if informer is None:
            return []
        # By spec.model, not the operator's label: a version registered by hand carries
        # the label only once the operator has seen it (a scan of 1,000 takes microseconds).
        return [mv for mv in informer.store.list(self.namespace) if registry.model_of(mv) == model]


# ----------------------------------------------------------------------------- drift


def drift_of_pods(
    kube: Kube, namespace: str, isvc: str, *, timeout: float = 3.0
) -> tuple[list[views.PodDrift], str]:
    """Each serving pod's drift document through ``pods/proxy``; (pods, note)."""
    if not can(kube, "list", "", "pods", namespace):
        return [], "Not permitted to list pods: drift from the serving pods is not shown."
    pods = kube.list("v1", "Pod", namespace, labels={api.LABEL_INFERENCESERVICE: isvc})
    if not pods:
        return [], "No serving pods."
    if not can(kube, "get", "", "pods", namespace, subresource="proxy"):
        return [], "Not permitted to proxy to pods: drift from the serving pods is not shown."

    def one(pod: Obj) -> views.PodDrift:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name"))
        role = str((meta.get("labels") or {}).get(api.LABEL_ROLE) or "")
        url = f"/api/v1/namespaces/{namespace}/pods/{name}:{HTTP_PORT}/proxy/v2/models/{isvc}/drift"
        try:
            doc = kube.request("GET", url, timeout=timeout)
        except ApiException as e:
            return views.PodDrift(name, role, error=f"the pod answered {e.status} {e.reason}")
        except Exception as e:  # connection refused, timed out: the pod is not serving
            return views.PodDrift(name, role, error=f"unreachable ({type(e).__name__})")
        return views.pod_drift(name, role, doc)

    with ThreadPoolExecutor(max_workers=min(8, len(pods))) as pool:
        return list(pool.map(one, sorted(pods, key=lambda p: str(p["metadata"]["name"])))), ""


PROM_QUERIES = ("kubeloop_drift_score", "kubeloop_drift_p_value", "kubeloop_feature_drifted")


def prometheus_drift(
    url: str, namespace: str, isvc: str, *, timeout: float = 3.0
) -> tuple[list[views.PromDrift], str]:
    """Per-feature drift from Prometheus's HTTP API at ``url``; (rows, note)."""
    results: list[Sequence[Obj]] = []
    for metric in PROM_QUERIES:
        selector = f'namespace="{namespace}",inferenceservice="{isvc}"'
        q = f"max by (version, feature) ({metric}{{{selector}}})"
        full = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': q})}"
        try:
            with urllib.request.urlopen(full, timeout=timeout) as resp:
                body: dict[str, Any] = json.loads(resp.read())
        except Exception as e:
            return [], f"Prometheus at {url} could not be asked: {e}"
        results.append((body.get("data") or {}).get("result") or [])
    rows = views.prometheus_drift(*results)
    return rows, "" if rows else f"Prometheus at {url} has no drift series for {isvc}."
