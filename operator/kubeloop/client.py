"""The client reconciles use: reads from the watch-fed caches, writes only differences.

The same methods as :class:`kubeloop.kube.Kube` (so a reconcile reads like one that talks to
the API server), in the manner of controller-runtime's cached client:

- ``get``/``list`` of a cached kind answer from :mod:`kubeloop.cache`, never the API server;
- ``apply`` writes a child only when a field we set differs from what is observed
  (:func:`contains`), or when what we set changed since the last apply: the child carries
  the hash of the last applied configuration (``kubeloop.io/applied-hash``), so a field we
  stop setting is released (server-side apply drops our ownership of it) even though the
  observed object still "contains" the new configuration. An unchanged child costs
  nothing;
- ``delete`` of an object the cache does not have is not sent;
- every write's response is stored in the cache (read-your-writes), so the next reconcile
  sees it even before its watch event arrives;
- a write the API server refuses raises :class:`WriteFailed`, an ``ApiException`` that also
  names what was being written, so the failure can be told on the parent object
  (:mod:`kubeloop.handlers._failures`) as "Could not apply Service ml/iris-predictor: ...".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubeloop.cache import Caches, Store
from kubeloop.kube import Kube, Obj, Objs

APPLIED_HASH = "kubeloop.io/applied-hash"

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SCALE = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def _quantity(value: str) -> Decimal | None:
    m = _QUANTITY.match(value)
    if m is None:
        return None
    try:
        return Decimal(m.group(1)) * _SCALE[m.group(2)]
    except InvalidOperation:
        return None


def _empty(value: Any) -> bool:
    """Values the API server leaves out when serialising (Go's omitempty)."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def contains(observed: Any, desired: Any) -> bool:
    """Whether ``observed`` already has every field ``desired`` sets, with the same value.

    Fields the server adds (defaults, status, other managers' fields) are ignored; lists
    compare element by element; resource quantities compare by value ("1000m" == "1");
    a desired empty value matches an absent one.
    """
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return False
        for k, v in desired.items():
            if k not in observed:
                if _empty(v):
                    continue
                return False
            if not contains(observed[k], v):
                return False
        return True
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(observed) != len(desired):
            return False
        return all(contains(o, d) for o, d in zip(observed, desired, strict=True))
    if observed == desired:
        return isinstance(observed, bool) == isinstance(desired, bool)
    if isinstance(observed, str) and isinstance(desired, str):
        a, b = _quantity(observed), _quantity(desired)
        return a is not None and a == b
    return False


def with_applied_hash(obj: Obj) -> Obj:
    """``obj`` with the hash of itself in the ``kubeloop.io/applied-hash`` annotation."""
    digest = hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    meta = obj["metadata"]
    annotations = {**(meta.get("annotations") or {}), APPLIED_HASH: digest}
    return {**obj, "metadata": {**meta, "annotations": annotations}}


class WriteFailed(ApiException):
    """The API server refused a write: the original error (status, reason, body, headers),
    plus what was written (``verb`` such as "apply", ``kind``, ``namespace``, ``name``)."""

    def __init__(self, e: ApiException, verb: str, kind: str, namespace: str | None, name: str):
        super().__init__(status=e.status, reason=e.reason)
        self.body = e.body
        self.headers = e.headers
        self.verb = verb
        self.kind = kind
        self.namespace = namespace
        self.name = name

    @property
    def target(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else self.kind


@contextmanager
def _writing(verb: str, kind: str, namespace: str | None, name: str) -> Iterator[None]:
    try:
        yield
    except WriteFailed:
        raise
    except ApiException as e:
        raise WriteFailed(e, verb, kind, namespace, name) from e


class CachedClient:
    def __init__(self, kube: Kube, caches: Caches) -> None:
        self.kube = kube
        self.caches = caches

    def _store(self, kind: str) -> Store | None:
        informer = self.caches.informers.get(kind)
        return informer.store if informer is not None else None

    def remember(self, obj: Obj | None) -> None:
        """Store what a write returned (read-your-writes)."""
        if obj and obj.get("kind"):
            informer = self.caches.informers.get(str(obj["kind"]))
            if informer is not None:
                informer.record(obj)

    # ------------------------------------------------------------------ reads

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        store = self._store(kind)
        if store is None:
            return self.kube.get(api_version, kind, namespace, name)
        return store.get(namespace or "", name)

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> Objs:
        store = self._store(kind)
        if store is None:
            return self.kube.list(api_version, kind, namespace, labels=labels)
        wanted = dict(labels or {})
        indexed = next((k for k in wanted if wanted[k] and store.indexed(k)), None)
        if indexed is not None and namespace is not None:
            objs = store.by_label(namespace, indexed, wanted[indexed])
        else:
            objs = store.list(namespace)
        return [o for o in objs if _has_labels(o, wanted)]

    # ------------------------------------------------------------------ writes

    def apply(self, obj: Obj, *, force: bool = True) -> Obj:
        obj = with_applied_hash(obj)
        meta = obj["metadata"]
        current = self.get(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if current is not None and contains(current, obj):
            return current
        with _writing("apply", obj["kind"], meta.get("namespace"), meta["name"]):
            applied = self.kube.apply(obj, force=force)
        self.remember(applied)
        return applied

    def create(self, obj: Obj) -> Obj | None:
        meta = obj["metadata"]
        with _writing("create", obj["kind"], meta.get("namespace"), str(meta.get("name"))):
            created = self.kube.create(obj)
        self.remember(created)
        return created

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
        with _writing("patch", kind, namespace, name):
            out = self.kube.patch(
                api_version,
                kind,
                namespace,
                name,
                patch,
                content_type=content_type,
                subresource=subresource,
            )
        self.remember(out)
        return out

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Obj:
        with _writing("update the status of", kind, namespace, name):
            out = self.kube.patch_status(api_version, kind, namespace, name, status)
        self.remember(out)
        return out

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
    ) -> bool:
        store = self._store(kind)
        if store is not None and store.get(namespace or "", name) is None:
            return False
        with _writing("delete", kind, namespace, name):
            gone = self.kube.delete(api_version, kind, namespace, name, propagation=propagation)
        if store is not None:
            store.delete(namespace or "", name)
        return gone


def _has_labels(obj: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(k in labels if v == "" else labels.get(k) == v for k, v in wanted.items())
