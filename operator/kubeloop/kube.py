"""The only module that talks to the Kubernetes API server.

A small typed facade over the official client's REST layer: objects are plain dicts in and
out (the shape the pure builders produce), children are written with server-side apply
(idempotent, conflict-free for fields we own), status goes through the /status subresource.
The client is blocking: call it from kopf's sync handlers, which run in a thread pool.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubeloop_runtime import api

FIELD_MANAGER = "kubeloop"

Obj = dict[str, Any]

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
}


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
    return client.ApiClient()


@dataclass
class Kube:
    """Blocking access to the API server, shared by all handlers (through kopf's memo)."""

    api_client: client.ApiClient

    # ------------------------------------------------------------------ transport

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
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
            resp = api_client.call_api(method, full_url, header_params=hdrs, body=payload)
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
            )
        data = resp.data
        return cast(Obj, json.loads(data)) if data else {}

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
        query = {}
        if labels:
            query["labelSelector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        items = self.request("GET", path(api_version, kind, namespace), query=query)
        return cast(list[Obj], items.get("items") or [])

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
