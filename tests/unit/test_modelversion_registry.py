"""The registry's rules: names, version allocation, lineage lookups, alias resolution and moves."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from kubeloop import registry
from kubeloop.registry import AliasStep, plan_aliases, resolve_alias


def mv(
    version: int,
    *,
    model: str = "iris",
    spec_aliases: list[str] | None = None,
    status_aliases: list[str] | None = None,
    tj: str | None = None,
    uid: str | None = None,
    rv: str = "1",
    ready: bool = True,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": f"{model}-v{version}", "resourceVersion": rv}
    if uid is not None:
        meta["annotations"] = {registry.ANNOTATION_TRAININGJOB_UID: uid}
    return {
        "metadata": meta,
        "spec": {
            "model": model,
            "version": version,
            "aliases": list(spec_aliases or []),
            "lineage": {"trainingJob": tj} if tj else {},
        },
        "status": {
            "aliases": list(status_aliases or []),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def ready(obj: Any) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"]["conditions"])


def apply(versions: list[dict[str, Any]], steps: list[AliasStep]) -> list[dict[str, Any]]:
    """What the API server would hold after the steps (one step at a time)."""
    by_name = {registry.name_of(v): v for v in versions}
    for s in steps:
        v = by_name[s.name]
        if s.spec_aliases is not None:
            v["spec"]["aliases"] = list(s.spec_aliases)
        if s.status_aliases is not None:
            v["status"]["aliases"] = list(s.status_aliases)
    return versions


def holders(versions: list[dict[str, Any]], alias: str) -> list[str]:
    return [registry.name_of(v) for v in versions if alias in registry.confirmed_aliases(v)]


# --------------------------------------------------------------------------- versions


def test_names() -> None:
    assert registry.model_version_name("iris", 3) == "iris-v3"
    with pytest.raises(ValueError, match="version"):
        registry.model_version_name("iris", 0)


def test_next_version() -> None:
    assert registry.next_version([], "iris") == 1
    vs = [mv(1), mv(2), mv(7, model="wine"), mv(4)]
    assert registry.next_version(vs, "iris") == 5
    assert registry.next_version(vs, "wine") == 8
    assert registry.next_version(vs, "digits") == 1


def test_find_registered_by_lineage_and_uid() -> None:
    vs = [mv(1, tj="run-a", uid="u1"), mv(2, tj="run-b", uid="u2"), mv(3, tj="manual")]
    found = registry.find_registered(vs, "run-b", "u2")
    assert found is not None and registry.name_of(found) == "iris-v2"
    # A recreated TrainingJob of the same name (new uid) does not adopt the old version.
    assert registry.find_registered(vs, "run-b", "u-new") is None
    # Without the annotation the name alone matches.
    assert registry.find_registered(vs, "manual", "anything") is not None
    assert registry.find_registered(vs, "run-c", "u3") is None


def test_allocation_never_hands_out_a_number_twice_under_contention() -> None:
    """A model of the API server (create = atomic insert by name) and N racing allocators."""
    store: dict[str, dict[str, Any]] = {}
    guard = threading.Lock()

    def create(obj: dict[str, Any]) -> bool:
        with guard:
            if registry.name_of(obj) in store:
                return False
            store[registry.name_of(obj)] = obj
            return True

    def allocate(tj: str) -> None:
        floor = 1
        while True:
            with guard:
                existing = list(store.values())
            mine = registry.find_registered(existing, tj, tj)
            if mine is not None:
                return
            n = max(registry.next_version(existing, "iris"), floor)
            if create(mv(n, tj=tj, uid=tj)):
                return
            floor = n + 1

    threads = [threading.Thread(target=allocate, args=(f"run-{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = sorted(registry.version_of(v) for v in store.values())
    assert versions == list(range(1, 13))
    lineages = sorted(v["spec"]["lineage"]["trainingJob"] for v in store.values())
    assert lineages == sorted(f"run-{i}" for i in range(12))


# ----------------------------------------------------------------------------- resolve


def test_resolve_alias() -> None:
    vs = [mv(1, status_aliases=["production"]), mv(2, status_aliases=["staging"])]
    found = resolve_alias(vs, "iris", "production")
    assert found is not None and registry.name_of(found) == "iris-v1"
    assert resolve_alias(vs, "iris", "canary") is None
    assert resolve_alias(vs, "wine", "production") is None
    # Requested but not confirmed does not count.
    assert resolve_alias([mv(3, spec_aliases=["production"])], "iris", "production") is None


def test_resolve_alias_refuses_two_holders() -> None:
    vs = [mv(1, status_aliases=["production"]), mv(2, status_aliases=["production"])]
    assert resolve_alias(vs, "iris", "production") is None


# -------------------------------------------------------------------------------- plan


def test_first_request_is_confirmed() -> None:
    vs = [mv(1, spec_aliases=["production"])]
    plan = plan_aliases(vs, ready)
    assert plan.steps == [AliasStep("iris-v1", None, None, ["production"])]
    apply(vs, plan.steps)
    assert plan_aliases(vs, ready).steps == []


def test_move_removes_from_old_holder_before_confirming_new() -> None:
    vs = [
        mv(1, spec_aliases=["production"], status_aliases=["production"], rv="11"),
        mv(2, spec_aliases=["production"], rv="22"),
    ]
    plan = plan_aliases(vs, ready)
    assert plan.steps == [
        AliasStep("iris-v1", "11", spec_aliases=[], status_aliases=[]),
        AliasStep("iris-v2", None, status_aliases=["production"]),
    ]
    # At no point between the steps are there two holders.
    for i in range(len(plan.steps) + 1):
        snapshot = apply(
            [
                mv(1, spec_aliases=["production"], status_aliases=["production"]),
                mv(2, spec_aliases=["production"]),
            ],
            plan.steps[:i],
        )
        assert len(holders(snapshot, "production")) <= 1
    apply(vs, plan.steps)
    assert holders(vs, "production") == ["iris-v2"]
    assert registry.requested_aliases(vs[0]) == []
    assert plan_aliases(vs, ready).steps == []


def test_move_resumes_after_a_crash_between_steps() -> None:
    # The old holder's spec was already cleared, then the operator died.
    vs = [mv(1, status_aliases=["production"]), mv(2, spec_aliases=["production"])]
    plan = plan_aliases(vs, ready)
    assert plan.steps[0] == AliasStep("iris-v1", "1", None, [])
    assert plan.steps[-1] == AliasStep("iris-v2", None, None, ["production"])
    apply(vs, plan.steps)
    assert holders(vs, "production") == ["iris-v2"]


def test_a_version_that_is_not_ready_waits() -> None:
    vs = [
        mv(1, spec_aliases=["production"], status_aliases=["production"]),
        mv(2, spec_aliases=["production"], ready=False),
    ]
    plan = plan_aliases(vs, ready)
    assert plan.steps == []
    assert plan.waiting == {"production": ["iris-v2"]}
    vs[1]["status"]["conditions"][0]["status"] = "True"  # now Ready: the move happens
    apply(vs, plan_aliases(vs, ready).steps)
    assert holders(vs, "production") == ["iris-v2"]


def test_removing_an_alias_from_spec_unconfirms_it() -> None:
    vs = [mv(1, spec_aliases=["staging"], status_aliases=["production", "staging"])]
    plan = plan_aliases(vs, ready)
    assert plan.steps == [AliasStep("iris-v1", "1", None, ["staging"])]


def test_several_newcomers_highest_version_wins() -> None:
    vs = [
        mv(1, spec_aliases=["production"], status_aliases=["production"]),
        mv(2, spec_aliases=["production"]),
        mv(3, spec_aliases=["production"]),
    ]
    apply(vs, plan_aliases(vs, ready).steps)
    assert holders(vs, "production") == ["iris-v3"]
    assert [registry.requested_aliases(v) for v in vs] == [[], [], ["production"]]


def test_other_aliases_are_untouched_by_a_move() -> None:
    vs = [
        mv(1, spec_aliases=["production", "legacy"], status_aliases=["production", "legacy"]),
        mv(2, spec_aliases=["production"]),
    ]
    apply(vs, plan_aliases(vs, ready).steps)
    assert holders(vs, "production") == ["iris-v2"]
    assert holders(vs, "legacy") == ["iris-v1"]
    assert registry.requested_aliases(vs[0]) == ["legacy"]


@pytest.mark.parametrize("seed", range(30))
def test_random_requests_converge_to_at_most_one_holder(seed: int) -> None:
    rnd = random.Random(seed)
    aliases = ["production", "staging", "canary"]
    vs = [
        mv(
            i,
            spec_aliases=rnd.sample(aliases, rnd.randint(0, 2)),
            status_aliases=[],
            ready=rnd.random() > 0.2,
        )
        for i in range(1, 6)
    ]
    # Start from a valid state: confirm a plan, then add random new requests.
    apply(vs, plan_aliases(vs, ready).steps)
    for v in vs:
        v["spec"]["aliases"] = sorted(set(v["spec"]["aliases"]) | set(rnd.sample(aliases, 1)))
    plan = plan_aliases(vs, ready)
    # Invariant during the move: removals come first, so at most one holder at every step.
    for i in range(len(plan.steps) + 1):
        snapshot = apply(
            [dict(v, spec=dict(v["spec"]), status=dict(v["status"])) for v in vs], plan.steps[:i]
        )
        for a in aliases:
            assert len(holders(snapshot, a)) <= 1
    apply(vs, plan.steps)
    assert plan_aliases(vs, ready).steps == []  # converged: level-based
    for a in aliases:
        hs = holders(vs, a)
        assert len(hs) <= 1
        for v in vs:
            # Every confirmed alias is still requested and the holder is Ready.
            if a in registry.confirmed_aliases(v):
                assert a in registry.requested_aliases(v) and ready(v)


def test_keyed_locks_serialise_a_key_and_keep_no_entry_once_free() -> None:
    locks = registry.KeyedLocks()
    inside: list[str] = []
    overlap: list[str] = []
    gate = threading.Event()

    def work(key: str, tag: str) -> None:
        with locks("ns", key):
            if any(t.startswith(key) for t in inside):
                overlap.append(tag)
            inside.append(f"{key}:{tag}")
            gate.wait(0.05)
            inside.remove(f"{key}:{tag}")

    threads = [
        threading.Thread(target=work, args=(k, str(i))) for i in range(6) for k in ("iris", "wine")
    ]
    for t in threads:
        t.start()
    time.sleep(0.02)
    assert 1 <= len(locks) <= 2  # one entry per key in use, not per thread
    for t in threads:
        t.join(5)
    assert not overlap  # never two holders of one key
    assert len(locks) == 0  # nothing left behind for keys no one uses
