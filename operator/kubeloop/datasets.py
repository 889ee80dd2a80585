"""The version of a retraining template's dataset, as the operator observes it.

The closed loop's ``dataChanged`` trigger compares this version with the one the service
was last retrained on (``status.datasetVersion``). It is a sha256 of metadata, never of
the data, so a look costs one small request:

- ``dataset.uri``, one object: its size and ETag (a HEAD); a prefix ending in ``/``: the
  keys, sizes and ETags of its .csv/.parquet objects (a LIST), so a new file changes it;
- ``dataset.url``: its ETag, else Last-Modified and Content-Length (an HTTP HEAD);
- ``dataset.configMap``: the content of its key (a GET of the ConfigMap).

The operator reads object storage with its **own** identity (its pod's environment: web
identity, an instance role, or the keys of an optional Secret the Deployment loads with
``envFrom``) and the template's endpoint, region and path style; it never reads the
Secret named in ``spec.storage`` (that one is for the pods), so its RBAC has no Secrets.
Each service's dataset is looked at no more often than ``triggers.dataPollSeconds``; a
failed look is logged and leaves the trigger waiting (the version stays unknown).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from kubeloop.builders.storage import storage_env
from kubeloop.settings import Settings
from kubeloop_runtime import api, storage

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".csv", ".parquet", ".pq")
URL_TIMEOUT = 10.0


def _object_env(template: api.TrainingTemplate, settings: Settings) -> dict[str, str]:
    """The operator's own environment, with the template's endpoint, region, style."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_", "AZURE_"))}
    pod_env, _ = storage_env(template.storage, settings)
    env.update({e["name"]: e["value"] for e in pod_env})
    return env


def object_version(uri: str, env: Mapping[str, str]) -> str:
    if uri.endswith("/"):
        objects = [
            o for o in storage.list_prefix(uri, env) if o.uri.lower().endswith(DATA_SUFFIXES)
        ]
    else:
        objects = [storage.head(uri, env)]
    return storage.fingerprint(objects)


def url_version(url: str) -> str | None:
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=URL_TIMEOUT) as response:
        etag = response.headers.get("ETag")
        modified = response.headers.get("Last-Modified")
        length = response.headers.get("Content-Length")
    if not etag and not modified:
        return None  # nothing tells a new version from the old one
    return hashlib.sha256(f"{url}\x1f{etag}\x1f{modified}\x1f{length}".encode()).hexdigest()


def configmap_version(kube: Any, namespace: str, name: str, key: str) -> str | None:
    cm = kube.get("v1", "ConfigMap", namespace, name)
    if cm is None:
        return None
    data = (cm.get("data") or {}).get(key)
    if data is None:
        return None
    return hashlib.sha256(str(data).encode()).hexdigest()


def read_version(
    kube: Any, namespace: str, template: api.TrainingTemplate, settings: Settings
) -> str | None:
    """One look at the dataset's version; raises on failure (see :class:`DatasetWatch`)."""
    ds = template.dataset
    if ds.uri is not None:
        return object_version(ds.uri, _object_env(template, settings))
    if ds.url is not None:
        return url_version(ds.url)
    if ds.config_map is not None:
        return configmap_version(kube, namespace, ds.config_map.name, ds.config_map.key)
    return None


class DatasetWatch:
    """The last version read per InferenceService, refreshed every ``dataPollSeconds``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, str | None, str]] = {}

    def version(
        self,
        kube: Any,
        namespace: str,
        name: str,
        retraining: api.RetrainingSpec,
        settings: Settings,
    ) -> str | None:
        if not retraining.triggers.data_changed:
            return None
        key = (namespace, name)
        source = retraining.template.dataset.model_dump_json()
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
        if (
            seen is not None
            and seen[2] == source
            and now - seen[0] < retraining.triggers.data_poll_seconds
        ):
            return seen[1]
        try:
            version = read_version(kube, namespace, retraining.template, settings)
        except (storage.StorageError, urllib.error.URLError, OSError, ValueError) as e:
            log.warning(
                "Could not read the dataset version of InferenceService %s/%s: %s",
                namespace,
                name,
                e,
            )
            version = seen[1] if seen is not None and seen[2] == source else None
        with self._lock:
            self._seen[key] = (now, version, source)
        return version

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._seen.pop((namespace, name), None)
