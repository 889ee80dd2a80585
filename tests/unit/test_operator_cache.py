"""The watch-fed cache, the cached client's "write only differences", and leader election."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubeloop.cache import Caches, Informer, Kind, Store
from kubeloop.client import APPLIED_HASH, CachedClient, contains, with_applied_hash
from kubeloop.kube import Kube, NotLeaderError
from kubeloop.leader import Elector


def obj(name: str, rv: int, ns: str = "ml", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": str(rv),
            "labels": labels,
            "managedFields": [{"manager": "kubeloop"}],
        },
        "spec": {"type": "ClusterIP"},
    }


# ------------------------------------------------------------------------------ store


def test_store_keeps_the_newest_version_and_drops_managed_fields() -> None:
    s = Store("Service")
    assert s.upsert(obj("a", 5)) == (None, True)
    assert "managedFields" not in s.get("ml", "a")["metadata"]  # type: ignore[index]
    _, changed = s.upsert(obj("a", 4))  # an older watch event after our own write
    assert not changed
    assert s.get("ml", "a")["metadata"]["resourceVersion"] == "5"  # type: ignore[index]
    _, changed = s.upsert(obj("a", 6))
    assert changed


def test_store_label_index_follows_label_changes_and_deletions() -> None:
    s = Store("Service", index_labels=("app",))
    s.upsert(obj("a", 1, app="x"))
    s.upsert(obj("b", 1, app="x"))
    s.upsert(obj("c", 1, ns="other", app="x"))
    assert [o["metadata"]["name"] for o in s.by_label("ml", "app", "x")] == ["a", "b"]
    s.upsert(obj("a", 2, app="y"))
    assert [o["metadata"]["name"] for o in s.by_label("ml", "app", "x")] == ["b"]
    s.delete("ml", "b")
    assert s.by_label("ml", "app", "x") == []
    assert [o["metadata"]["name"] for o in s.by_label("ml", "app", "y")] == ["a"]


def test_a_relist_reports_what_changed_including_deletions_missed_meanwhile() -> None:
    s = Store("Service")
    s.upsert(obj("a", 1))
    s.upsert(obj("b", 1))
    s.upsert(obj("z", 1, ns="other"))
    events = s.replace_all([obj("a", 1), obj("c", 2)], "ml")
    assert sorted((t, o["metadata"]["name"]) for t, o in events) == [
        ("ADDED", "c"),
        ("DELETED", "b"),
    ]
    assert s.get("other", "z") is not None  # another namespace's list is not this one


def test_store_observers_see_every_change() -> None:
    s = Store("Service")
    seen: list[tuple[str | None, str | None]] = []
    s.observers.append(
        lambda new, old: seen.append(
            (
                new["metadata"]["resourceVersion"] if new else None,
                old["metadata"]["resourceVersion"] if old else None,
            )
        )
    )
    s.upsert(obj("a", 1))
    s.upsert(obj("a", 1))  # no change
    s.upsert(obj("a", 2))
    s.delete("ml", "a")
    assert seen == [("1", None), ("2", "1"), (None, "2")]


# ------------------------------------------------------------------- write differences


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "p", "namespace": "ml", "labels": {"a": "1"}},
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "c",
                        "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}},
                        "env": [{"name": "X", "value": "1"}],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
            }
        },
    },
}


def observed_deployment() -> dict[str, Any]:
    """What the API server returns for DEPLOYMENT: defaults added, quantities canonical."""
    o = copy.deepcopy(DEPLOYMENT)
    o["metadata"].update(uid="u", resourceVersion="7", generation=1)
    o["spec"]["progressDeadlineSeconds"] = 600
    c = o["spec"]["template"]["spec"]["containers"][0]
    c["resources"]["requests"] = {"cpu": "500m", "memory": "1Gi"}
    c["terminationMessagePath"] = "/dev/termination-log"
    o["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    o["status"] = {"replicas": 2}
    return o


def test_contains_ignores_server_defaults_and_quantity_spelling() -> None:
    assert contains(observed_deployment(), DEPLOYMENT)


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o["spec"].update(replicas=3),  # someone scaled it by hand
        lambda o: o["metadata"]["labels"].update(a="2"),
        lambda o: o["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "Y"}),
        lambda o: o["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"].update(
            cpu="1"
        ),
        lambda o: o["spec"]["template"]["spec"].update(automountServiceAccountToken=True),
    ],
)
def test_contains_sees_a_field_we_own_that_differs(change: Any) -> None:
    o = observed_deployment()
    change(o)
    assert not contains(o, DEPLOYMENT)


def test_a_false_or_empty_desired_value_matches_an_omitted_one() -> None:
    assert contains({"spec": {}}, {"spec": {"paused": False, "labels": {}}})
    assert not contains({"spec": {}}, {"spec": {"paused": True}})
    assert not contains({"spec": {"n": 1}}, {"spec": {"n": True}})


def applied_hash(o: dict[str, Any]) -> str:
    return str(with_applied_hash(o)["metadata"]["annotations"][APPLIED_HASH])


class FakeKube(Kube):
    """Counts writes; answers apply with the object plus a resourceVersion."""

    def __init__(self) -> None:
        super().__init__(api_client=None)  # type: ignore[arg-type]
        self.writes: list[tuple[str, str]] = []
        self.rv = 100

    def request(self, method: str, url: str, **_: Any) -> dict[str, Any]:
        raise AssertionError(f"unexpected request {method} {url}")

    def apply(self, o: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        self.writes.append(("apply", o["metadata"]["name"]))
        self.rv += 1
        out = copy.deepcopy(o)
        out["metadata"]["resourceVersion"] = str(self.rv)
        return out

    def delete(self, api_version: str, kind: str, ns: str | None, name: str, **_: Any) -> bool:
        self.writes.append(("delete", name))
        return True


def test_cached_client_applies_only_what_differs_and_reads_its_writes() -> None:
    kube = FakeKube()
    informer = Informer(kube, Kind("apps/v1", "Deployment"), ["ml"])
    client = CachedClient(kube, Caches({"Deployment": informer}))
    seen: list[str] = []
    informer.add_handler(lambda t, new, old: seen.append(t))

    client.apply(copy.deepcopy(DEPLOYMENT))  # not in the cache: applied
    assert kube.writes == [("apply", "p")]
    assert seen == ["ADDED"]  # our own write reaches the handlers once
    assert client.get("apps/v1", "Deployment", "ml", "p") is not None
    client.apply(copy.deepcopy(DEPLOYMENT))  # the cache has it as we want it: not sent
    assert kube.writes == [("apply", "p")]

    observed = observed_deployment()
    observed["metadata"]["resourceVersion"] = "200"
    observed["metadata"]["annotations"] = {APPLIED_HASH: applied_hash(DEPLOYMENT)}
    informer.store.upsert(observed)
    client.apply(copy.deepcopy(DEPLOYMENT))  # server defaults only: still not sent
    assert kube.writes == [("apply", "p")]

    # A field we stop setting (replicas, when an HPA takes over) is applied, so that
    # server-side apply releases it, although the observed object "contains" the rest.
    hpa_owned = copy.deepcopy(DEPLOYMENT)
    del hpa_owned["spec"]["replicas"]
    assert contains(observed, hpa_owned)
    client.apply(hpa_owned)
    assert kube.writes == [("apply", "p"), ("apply", "p")]

    assert client.delete("apps/v1", "Deployment", "ml", "gone") is False  # not cached: no call
    assert client.delete("apps/v1", "Deployment", "ml", "p") is True
    assert kube.writes == [("apply", "p"), ("apply", "p"), ("delete", "p")]


def test_writes_are_refused_without_the_lease() -> None:
    kube = Kube(api_client=None, write_guard=lambda: False)  # type: ignore[arg-type]
    with pytest.raises(NotLeaderError):
        kube.request("PATCH", "/api/v1/namespaces/ml/services/x")


# ----------------------------------------------------------------------- leader election


class LeaseServer:
    """An in-memory API server for one Lease, with resourceVersion preconditions."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.away = False  # the API server does not answer (restarting)

    def kube(self) -> Kube:
        server = self

        class K(Kube):
            def __init__(self) -> None:
                super().__init__(api_client=None)  # type: ignore[arg-type]

            def get(self, *_: Any) -> dict[str, Any] | None:
                if server.away:
                    raise ConnectionRefusedError("the API server is restarting")
                return copy.deepcopy(server.lease)

            def create(self, o: dict[str, Any]) -> dict[str, Any] | None:
                if server.lease is not None:
                    return None
                return server.store(o)

            def replace(self, o: dict[str, Any]) -> dict[str, Any]:
                assert server.lease is not None
                if (
                    o["metadata"].get("resourceVersion")
                    != server.lease["metadata"]["resourceVersion"]
                ):
                    raise ApiException(status=409)
                return server.store(o)

        return K()

    def store(self, o: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        o = copy.deepcopy(o)
        o["metadata"]["resourceVersion"] = str(self.rv)
        self.lease = o
        return copy.deepcopy(o)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def elector(server: LeaseServer, who: str, clock: Clock) -> Elector:
    return Elector(
        server.kube(),
        namespace="kubeloop-system",
        name="kubeloop",
        identity=who,
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
        clock=clock,
    )


def test_one_leader_at_a_time_and_a_takeover_after_the_lease_expires() -> None:
    server, clock = LeaseServer(), Clock()
    a, b = elector(server, "a", clock), elector(server, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    for _ in range(20):  # a renews every 2 s; b never gets it
        clock.now += 2
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    # a dies: its record stops changing; b takes over once it has been unchanged 15 s.
    clock.now += 14
    assert not b.try_acquire_or_renew()
    clock.now += 2
    assert b.try_acquire_or_renew()
    assert server.lease is not None
    assert server.lease["spec"]["holderIdentity"] == "b"
    assert server.lease["spec"]["leaseTransitions"] == 1


def test_a_leader_that_cannot_renew_stops_writing_before_anyone_can_take_over() -> None:
    server, clock = LeaseServer(), Clock()
    a = elector(server, "a", clock)
    assert a.try_acquire_or_renew()
    a._leading = True
    assert a.is_leader()
    clock.now += 9.9
    assert a.is_leader()
    clock.now += 0.2  # past the renew deadline (10 s) and still short of the 15 s duration
    assert not a.is_leader()


def test_a_released_lease_is_taken_at_once() -> None:
    server, clock = LeaseServer(), Clock()
    a, b = elector(server, "a", clock), elector(server, "b", clock)
    assert a.try_acquire_or_renew()
    a._leading = True
    assert not b.try_acquire_or_renew()
    a._release()
    assert b.try_acquire_or_renew()


def test_a_leader_cut_off_past_its_deadline_steps_down_and_leads_again() -> None:
    """An API server away for longer than the renew deadline: the leader stops writing and
    follows, then holds the Lease again when the server is back; the process goes on."""
    server = LeaseServer()
    started: list[float] = []
    stopped: list[float] = []
    e = Elector(
        server.kube(),
        namespace="kubeloop-system",
        name="kubeloop",
        identity="a",
        lease_duration=0.6,
        renew_deadline=0.3,
        retry_period=0.05,
        on_started_leading=lambda: started.append(time.monotonic()),
        on_stopped_leading=lambda: stopped.append(time.monotonic()),
    )
    e.start()
    try:
        _until(lambda: len(started) == 1 and e.is_leader())
        server.away = True
        _until(lambda: len(stopped) == 1)
        assert not e.is_leader()
        server.away = False
        _until(lambda: len(started) == 2 and e.is_leader())
        assert server.lease is not None and server.lease["spec"]["holderIdentity"] == "a"
    finally:
        e.stop()


def _until(fn: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
