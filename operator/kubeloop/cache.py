"""A watch-fed in-memory cache of every kind the operator reads, like controller-runtime's.

One :class:`Informer` per kind (and per watched namespace, or one cluster-wide): a thread
that LISTs once, then WATCHes from the list's resourceVersion with bookmarks, and LISTs again
only when the server says the version is too old (410 Gone). Each event updates a
:class:`Store` (a dict by (namespace, name) plus label indexes) and calls the registered
event handlers, which only enqueue keys. Reconciles read the store; nothing reads the API
server per trigger.

Objects are stored without ``metadata.managedFields`` (the largest part of most objects
and never read), which keeps 1,000 InferenceServices with their children in a few MiB.

Writes are read back: :meth:`Store.upsert` with the object an API write returned lets the
next reconcile see the operator's own write even before its watch event arrives; an older
event never replaces a newer object (resourceVersions compared as numbers when they are).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubeloop.kube import Kube, Obj, Objs, retry_after

Events = list[tuple[str, Obj]]

logger = logging.getLogger("kubeloop.cache")

Key = tuple[str, str]  # (namespace, name)
# (event type, new object or None when deleted, old object or None when added)
EventHandler = Callable[[str, Obj | None, Obj | None], None]

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _rv(obj: Mapping[str, Any] | None) -> int | None:
    raw = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except ValueError:
        return None


def strip(obj: Obj) -> Obj:
    """The object as stored: without managedFields (never read, often half the bytes)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


class Store:
    """Thread-safe objects of one kind by (namespace, name), with label indexes.

    ``index_labels`` names the labels to index: :meth:`by_label` then answers "objects in
    this namespace with label L = v" without a scan.
    """

    def __init__(self, kind: str, index_labels: Sequence[str] = ()) -> None:
        self.kind = kind
        self._lock = threading.RLock()
        self._objects: dict[Key, Obj] = {}
        self._index_labels = tuple(index_labels)
        # label -> (namespace, value) -> keys
        self._indexes: dict[str, dict[tuple[str, str], set[Key]]] = {
            label: {} for label in self._index_labels
        }
        # Called with (new or None, old or None) on every change, including the operator's
        # own writes stored through upsert (which no watch event will report again).
        self.observers: list[Callable[[Obj | None, Obj | None], None]] = []

    def _notify(self, new: Obj | None, old: Obj | None) -> None:
        for fn in self.observers:
            try:
                fn(new, old)
            except Exception:
                logger.exception("Observer of %s failed", self.kind)

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def indexed(self, label: str) -> bool:
        return label in self._indexes

    def get(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._objects)

    def list(self, namespace: str | None = None) -> Objs:
        with self._lock:
            if namespace is None:
                return list(self._objects.values())
            return [o for (ns, _), o in self._objects.items() if ns == namespace]

    def by_label(self, namespace: str, label: str, value: str) -> Objs:
        """Objects in ``namespace`` whose label ``label`` is ``value`` (an indexed label)."""
        with self._lock:
            keys = self._indexes[label].get((namespace, value), set())
            return [self._objects[k] for k in sorted(keys) if k in self._objects]

    def _unindex(self, key: Key, obj: Obj) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for label in self._index_labels:
            if label in labels:
                bucket = self._indexes[label].get((key[0], str(labels[label])))
                if bucket is not None:
                    bucket.discard(key)
                    if not bucket:
                        del self._indexes[label][(key[0], str(labels[label]))]

    def _index(self, key: Key, obj: Obj) -> None:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        for label in self._index_labels:
            if label in labels:
                self._indexes[label].setdefault((key[0], str(labels[label])), set()).add(key)

    def upsert(self, obj: Obj) -> tuple[Obj | None, bool]:
        """Store ``obj`` unless the stored one is newer; returns (previous, changed)."""
        obj = strip(obj)
        key = key_of(obj)
        with self._lock:
            old = self._objects.get(key)
            if old is not None:
                new_rv, old_rv = _rv(obj), _rv(old)
                if new_rv is not None and old_rv is not None and new_rv <= old_rv:
                    return old, False
                self._unindex(key, old)
            self._objects[key] = obj
            self._index(key, obj)
        self._notify(obj, old)
        return old, True

    def delete(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            old = self._objects.pop((namespace, name), None)
            if old is not None:
                self._unindex((namespace, name), old)
        if old is not None:
            self._notify(None, old)
        return old

    def replace_all(self, objs: Iterable[Obj], namespace: str | None) -> Events:
        """After a (re)LIST: the store of ``namespace`` (None: all) becomes ``objs``.

        Returns the differences as events, so handlers see deletions missed meanwhile."""
        events: Events = []
        seen: set[Key] = set()
        for obj in objs:
            old, changed = self.upsert(obj)
            key = key_of(obj)
            seen.add(key)
            if old is None:
                events.append((ADDED, self._objects[key]))
            elif changed:
                events.append((MODIFIED, self._objects[key]))
        with self._lock:
            gone = [k for k in self._objects if k not in seen and namespace in (None, k[0])]
        for ns, name in gone:
            old = self.delete(ns, name)
            if old is not None:
                events.append((DELETED, old))
        return events


@dataclass(frozen=True)
class Kind:
    """What to watch: a kind, optionally only objects with some labels (a selector), and
    which labels to index."""

    api_version: str
    kind: str
    labels: Mapping[str, str] = field(default_factory=dict)
    index_labels: tuple[str, ...] = ()


class Informer:
    """LIST + WATCH of one kind in some namespaces (empty: cluster-wide), into one Store."""

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        namespaces: Sequence[str],
        *,
        watch_timeout: int = 300,
        backoff: float = 1.0,
        relists_total: Any = None,
    ) -> None:
        self.kube = kube
        # kubeloop_watch_relists_total{kind}, when the fault metrics are attached.
        self._relists = relists_total.labels(kind.kind) if relists_total is not None else None
        self.spec = kind
        self.namespaces: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self.store = Store(kind.kind, kind.index_labels)
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self._handlers: list[EventHandler] = []
        self._synced = {ns: threading.Event() for ns in self.namespaces}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.last_event = time.monotonic()

    def add_handler(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    def record(self, obj: Obj) -> None:
        """Store an object a write of ours returned, and tell the handlers as a watch event
        would (its own watch event, when it comes, is then no change)."""
        old, changed = self.store.upsert(obj)
        if changed:
            self._emit(MODIFIED if old is not None else ADDED, self.store.get(*key_of(obj)), old)

    def start(self) -> None:
        for ns in self.namespaces:
            t = threading.Thread(
                target=self._run, args=(ns,), name=f"informer-{self.spec.kind}-{ns}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()

    def synced(self) -> bool:
        return all(e.is_set() for e in self._synced.values())

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self._synced.values())

    # ------------------------------------------------------------------ internals

    def _emit(self, type_: str, new: Obj | None, old: Obj | None) -> None:
        self.last_event = time.monotonic()
        for handler in self._handlers:
            try:
                handler(type_, new, old)
            except Exception:  # a handler bug must not stop the watch
                logger.exception("Event handler of %s failed", self.spec.kind)

    def _list(self, namespace: str | None) -> str:
        s = self.spec
        objs, rv = self.kube.list_with_version(
            s.api_version, s.kind, namespace, labels=s.labels or None
        )
        for obj in objs:  # a list's items carry no apiVersion and kind; watch events do
            obj.setdefault("apiVersion", s.api_version)
            obj.setdefault("kind", s.kind)
        for type_, obj in self.store.replace_all(objs, namespace):
            self._emit(type_, obj if type_ != DELETED else None, obj if type_ != ADDED else None)
        self._synced[namespace].set()
        return rv

    def _run(self, namespace: str | None) -> None:
        s = self.spec
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list(namespace)
                for event in self.kube.watch(
                    s.api_version,
                    s.kind,
                    namespace,
                    resource_version=rv,
                    timeout_seconds=self.watch_timeout,
                    labels=s.labels or None,
                ):
                    if self._stop.is_set():
                        return
                    rv = self._handle(event, rv)
            except ApiException as e:
                if e.status == 410:  # too old: list again
                    rv = None
                    self._relist()
                    continue
                delay = retry_after(e) or self.backoff  # 429: as long as the server asks
                logger.warning(
                    "Watch of %s failed (%s); retrying in %.1fs", s.kind, e.status, delay
                )
                self._stop.wait(delay)
            except _ExpiredError:
                rv = None
                self._relist()
            except Exception as e:
                logger.warning("Watch of %s broke (%s); retrying", s.kind, e)
                self._stop.wait(self.backoff)

    def _relist(self) -> None:
        """The watch cannot resume (410 Gone): the next pass lists again."""
        logger.info("Watch of %s expired (410 Gone); listing again", self.spec.kind)
        if self._relists is not None:
            self._relists.inc()

    def _handle(self, event: Obj, rv: str) -> str:
        type_ = event.get("type")
        obj = event.get("object") or {}
        if type_ == "ERROR":
            if obj.get("code") == 410:
                raise _ExpiredError
            logger.warning("Watch of %s: %s", self.spec.kind, obj.get("message"))
            return rv
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
        if type_ == "BOOKMARK":
            return new_rv
        if type_ == DELETED:
            ns, name = key_of(obj)
            old = self.store.delete(ns, name)
            self._emit(DELETED, None, old or strip(obj))
        elif type_ in (ADDED, MODIFIED):
            old, changed = self.store.upsert(obj)
            if changed:
                new = self.store.get(*key_of(obj))
                self._emit(MODIFIED if old is not None else ADDED, new, old)
        return new_rv


class _ExpiredError(Exception):
    """The watch's resourceVersion is too old (an ERROR event with code 410)."""


class Caches:
    """The informers of every kind the operator reads, by kind name."""

    def __init__(self, informers: Mapping[str, Informer]) -> None:
        self.informers = dict(informers)

    def __getitem__(self, kind: str) -> Store:
        return self.informers[kind].store

    def start(self) -> None:
        for informer in self.informers.values():
            informer.start()

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stop()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(
            i.wait_synced(max(0.0, deadline - time.monotonic())) for i in self.informers.values()
        )

    def synced(self) -> bool:
        return all(i.synced() for i in self.informers.values())

    def sizes(self) -> dict[str, int]:
        return {kind: len(i.store) for kind, i in self.informers.items()}
