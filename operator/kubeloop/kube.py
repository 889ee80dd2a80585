"""The only module that talks to the Kubernetes API server.

A small typed facade over the official client's REST layer: objects are plain dicts in and
out (the shape the pure builders produce), children are written with server-side apply
(idempotent, conflict-free for fields we own), status goes through the /status subresource.
The client is blocking: call it from worker threads (the work queue's, the informers'),
never from an event loop.

Every request is counted in ``rest_client_requests_total{method,code}`` (client-go's name)
when a counter is attached, and every write passes the ``write_guard`` first: the leader
elector installs one so that a replica that is not (or no longer) the leader cannot write.

Like client-go, a request the server throttles (429) or sheds (a 5xx carrying
``Retry-After``) is sent again after the delay the server asked for (capped at
:data:`RETRY_AFTER_MAX` seconds), up to ``max_retries`` times, each counted in
``rest_client_request_retries_total{method,code}``; the server has not acted on such a
request, so resending a write is safe. Other errors go to the caller (a reconcile's work
queue backs off; an informer lists or watches again).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubeloop.manifest import Manifest
from kubeloop_runtime import api

logger = logging.getLogger("kubeloop.kube")

FIELD_MANAGER = "kubeloop"
USER_AGENT = "kubeloop-operator"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RETRY_AFTER_MAX = 30.0  # seconds; a server asking for longer is waited on by the work queue

Obj = Manifest  # an object as the API server returns it: a dict we may change
Objs = list[Obj]  # (a method below is called `list`)

# kind -> (api prefix for its apiVersion, plural). Only what Kubeloop reads or writes.
_PLURALS: dict[str, str] = {
    "TrainingJob": api.TRAININGJOBS,
    "ModelVersion": api.MODELVERSIONS,
    "InferenceService": api.INFERENCESERVICES,
    "Job": "jobs",
    "Pod": "pods",
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "Service": "services",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "ConfigMap": "configmaps",
    "Event": "events",
    "Namespace": "namespaces",
    "Lease": "leases",
}


class NotLeaderError(RuntimeError):
    """A write was refused because this replica does not hold the leader Lease."""


def _base(api_version: str) -> str:
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


def path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    """The REST path of a collection or an object."""
    plural = _PLURALS[kind]
    p = _base(api_version)
    if namespace is not None:
        p += f"/namespaces/{namespace}"
    p += f"/{plural}"
    if name is not None:
        p += f"/{name}"
    return p


def load_client_config() -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    api_client = client.ApiClient()
    api_client.user_agent = USER_AGENT
    return api_client


def retry_after(e: ApiException) -> float | None:
    """The delay a 429 or 5xx answer asks for (``Retry-After`` in seconds), else None."""
    if e.status is None or not (e.status == 429 or 500 <= e.status <= 599):
        return None
    raw = (e.headers or {}).get("Retry-After")
    if raw is None:
        return 1.0 if e.status == 429 else None  # client-go waits 1 s on a bare 429
    try:
        return min(max(float(raw), 0.0), RETRY_AFTER_MAX)
    except ValueError:
        return None  # an HTTP date: not sent by kube-apiserver


def _count(counter: Any, method: str, code: int | str) -> None:
    if counter is not None:
        counter.labels(method, str(code)).inc()


@dataclass
class Kube:
    """Blocking access to the API server, shared by all handlers (through kopf's memo)."""

    api_client: client.ApiClient
    # rest_client_requests_total{method,code}, when the operator's metrics are attached.
    requests_total: Any = None
    # Called before every write; False refuses it (NotLeaderError). None: always allowed.
    write_guard: Callable[[], bool] | None = field(default=None, repr=False)
    # rest_client_request_retries_total{method,code}, when the fault metrics are attached.
    retries_total: Any = None
    max_retries: int = 10
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def guarded(self, guard: Callable[[], bool] | None) -> Kube:
        """The same client with another write guard (the elector's own Lease writes use
        an unguarded copy)."""
        other = copy.copy(self)
        other.write_guard = guard
        return other

    # ------------------------------------------------------------------ transport

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Obj:
        if method in WRITE_METHODS and self.write_guard is not None and not self.write_guard():
            raise NotLeaderError(f"{method} {url}: this replica is not the leader")
        attempt = 0
        while True:
            try:
                data = self._send(
                    method, url, body=body, query=query, content_type=content_type, timeout=timeout
                )
                break
            except ApiException as e:
                _count(self.requests_total, method, e.status or "<error>")
                delay = retry_after(e)
                if delay is None or attempt >= self.max_retries:
                    raise
                attempt += 1
                _count(self.retries_total, method, e.status or "<error>")
                logger.info("%s %s: %s, retrying in %.1fs", method, url, e.status, delay)
                self.sleep(delay)
            except Exception:
                _count(self.requests_total, method, "<error>")
                raise
        _count(self.requests_total, method, 200)
        if method in WRITE_METHODS:
            logger.debug("Sent %s %s", method, url)
        return cast(Obj, json.loads(data)) if data else {}

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: Any,
        query: Mapping[str, str] | None,
        content_type: str,
        stream: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """One request; the body's bytes, or the open urllib3 response when ``stream``."""
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        api_client: Any = self.api_client  # its call_api changed shape across releases
        if hasattr(api_client, "param_serialize"):  # kubernetes >= 35 (new generator)
            _, full_url, hdrs, payload, _ = api_client.param_serialize(
                method,
                url,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = api_client.call_api(
                method, full_url, header_params=hdrs, body=payload, _request_timeout=timeout
            )
            if stream and 200 <= resp.status <= 299:
                return resp.response
            resp.read()
            if not 200 <= resp.status <= 299:
                raise ApiException(http_resp=resp)
        else:
            resp = api_client.call_api(
                url,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=timeout,
            )
            if stream:
                return resp
        return resp.data

    # ------------------------------------------------------------------ reads

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.request("GET", path(api_version, kind, namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> list[Obj]:
        return self.list_with_version(api_version, kind, namespace, labels=labels)[0]

    def list_with_version(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
        page_size: int = 500,
    ) -> tuple[Objs, str]:
        """Every object (in pages of ``page_size``) and the list's resourceVersion, from
        which a watch starts."""
        query = {"limit": str(page_size)}
        if labels:
            query["labelSelector"] = selector(labels)
        items: Objs = []
        while True:
            page = self.request("GET", path(api_version, kind, namespace), query=query)
            items.extend(cast(Objs, page.get("items") or []))
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion", ""))
            query = {**query, "continue": str(meta["continue"])}

    def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        resource_version: str,
        timeout_seconds: int,
        labels: Mapping[str, str] | None = None,
    ) -> Iterator[Obj]:
        """The watch events (``{"type", "object"}``) from ``resource_version`` until the
        server ends the stream (after about ``timeout_seconds``), with bookmarks."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if labels:
            query["labelSelector"] = selector(labels)
        try:
            resp = self._send(
                "GET",
                path(api_version, kind, namespace),
                body=None,
                query=query,
                content_type="application/json",
                stream=True,
                timeout=timeout_seconds + 30,
            )
        except ApiException as e:
            _count(self.requests_total, "WATCH", e.status or "<error>")
            raise
        _count(self.requests_total, "WATCH", 200)
        try:
            buffer = b""
            for chunk in resp.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield cast(Obj, json.loads(line))
        finally:
            resp.release_conn()

    # ------------------------------------------------------------------ writes

    def apply(self, obj: Obj, *, force: bool = True) -> Obj:
        """Server-side apply: create the object or bring the fields we own to ``obj``."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return self.request(
            "PATCH",
            url,
            body=obj,
            query={"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"},
            content_type="application/apply-patch+yaml",
        )

    def create(self, obj: Obj) -> Obj | None:
        """Create ``obj``; None when an object of that name already exists (409)."""
        meta = obj["metadata"]
        try:
            return self.request(
                "POST",
                path(obj["apiVersion"], obj["kind"], meta.get("namespace")),
                body=obj,
                query={"fieldManager": FIELD_MANAGER},
            )
        except ApiException as e:
            if e.status == 409:
                return None
            raise

    def replace(self, obj: Obj) -> Obj:
        """PUT ``obj`` (guarded by its metadata.resourceVersion: a 409 when stale)."""
        meta = obj["metadata"]
        return self.request(
            "PUT",
            path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]),
            body=obj,
            query={"fieldManager": FIELD_MANAGER},
        )

    def patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        content_type: str = "application/merge-patch+json",
        subresource: str | None = None,
    ) -> Obj:
        url = path(api_version, kind, namespace, name)
        if subresource:
            url += f"/{subresource}"
        return self.request(
            "PATCH",
            url,
            body=patch,
            query={"fieldManager": FIELD_MANAGER},
            content_type=content_type,
        )

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Obj:
        """Merge-patch the /status subresource."""
        return self.patch(
            api_version, kind, namespace, name, {"status": dict(status)}, subresource="status"
        )

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
    ) -> bool:
        """Delete an object; False when it was already gone."""
        try:
            self.request(
                "DELETE",
                path(api_version, kind, namespace, name),
                body={"propagationPolicy": propagation},
            )
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True


def selector(labels: Mapping[str, str]) -> str:
    """A label selector string; ``"key"`` alone (value ``""``) means "has the label"."""
    return ",".join(k if v == "" else f"{k}={v}" for k, v in sorted(labels.items()))
