"""The model registry's rules: version numbers, names, lineage lookups and aliases.

Pure functions over ModelVersion objects as plain dicts (as the API server returns them),
so the operator, the kubectl plugin and tests share one definition of each rule:

* A model's versions are ``<model>-v<N>``, numbered 1, 2, 3, ... The operator allocates
  ``N = max(existing) + 1`` and *creates* the object under that deterministic name; the
  API server's uniqueness of names is the lock (a 409 means someone else took ``N``).
* A TrainingJob registers at most one ModelVersion: before allocating, the operator looks
  for the one whose ``spec.lineage.trainingJob`` (and UID annotation) is that TrainingJob.
* An alias (``production``) names at most one version per model. ``spec.aliases`` is what
  users ask for; ``status.aliases`` is what the operator has confirmed. Readers resolve an
  alias from ``status.aliases`` only, with :func:`resolve_alias`.

See docs/registry.md for how an alias moves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from kubeloop.manifest import Obj
from kubeloop_runtime import api

# Which TrainingJob (by UID) created a ModelVersion: tells a recreated TrainingJob of the
# same name from the one that ran before it.
ANNOTATION_TRAININGJOB_UID = f"{api.GROUP}/trainingjob-uid"


# ----------------------------------------------------------------------------- names


def model_version_name(model: str, version: int) -> str:
    """The deterministic name of version ``version`` of ``model``: ``<model>-v<version>``."""
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    return f"{model}-v{version}"


def version_of(mv: Obj) -> int:
    """``spec.version`` of a ModelVersion, 0 when absent or malformed."""
    v = (mv.get("spec") or {}).get("version")
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def model_of(mv: Obj) -> str | None:
    model = (mv.get("spec") or {}).get("model")
    return model if isinstance(model, str) else None


def name_of(mv: Obj) -> str:
    return str((mv.get("metadata") or {}).get("name", ""))


def next_version(model_versions: Iterable[Obj], model: str) -> int:
    """One more than the highest version of ``model`` among ``model_versions`` (1 if none).

    Numbers are never reused while the highest version exists; deleting the newest version
    frees its number, as deleting the newest row of a sequence would.
    """
    highest = 0
    for mv in model_versions:
        if model_of(mv) == model:
            highest = max(highest, version_of(mv))
    return highest + 1


def registered_by(mv: Obj, trainingjob: str, uid: str | None = None) -> bool:
    """Whether ``mv`` was registered by TrainingJob ``trainingjob`` (with ``uid`` if known).

    A ModelVersion without the UID annotation (registered by hand, or by an older operator)
    matches on the name alone.
    """
    lineage = ((mv.get("spec") or {}).get("lineage")) or {}
    if lineage.get("trainingJob") != trainingjob:
        return False
    recorded = ((mv.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_TRAININGJOB_UID)
    return uid is None or recorded is None or recorded == uid


def find_registered(
    model_versions: Iterable[Obj], trainingjob: str, uid: str | None = None
) -> Obj | None:
    """The ModelVersion a TrainingJob registered, if any (the lowest version, if several)."""
    mine = [mv for mv in model_versions if registered_by(mv, trainingjob, uid)]
    return min(mine, key=version_of) if mine else None


# --------------------------------------------------------------------------- aliases


def requested_aliases(mv: Obj) -> list[str]:
    return [a for a in (mv.get("spec") or {}).get("aliases") or [] if isinstance(a, str)]


def confirmed_aliases(mv: Obj) -> list[str]:
    return [a for a in (mv.get("status") or {}).get("aliases") or [] if isinstance(a, str)]


def resolve_alias(model_versions: Sequence[Obj], model: str, alias: str) -> Obj | None:
    """The one ModelVersion of ``model`` whose confirmed aliases include ``alias``.

    None when no version holds it, or — which the operator never lets last, but a reader
    may catch mid-move in a stale cache — when more than one appears to: the caller should
    wait and look again rather than pick one.
    """
    holders = [
        mv for mv in model_versions if model_of(mv) == model and alias in confirmed_aliases(mv)
    ]
    return holders[0] if len(holders) == 1 else None


@dataclass(frozen=True)
class AliasStep:
    """One write of an alias move; apply the steps of a plan in order.

    ``spec_aliases`` (when not None) replaces the version's ``spec.aliases`` (guarded by
    ``resource_version``); ``status_aliases`` (when not None) replaces ``status.aliases``.
    """

    name: str
    resource_version: str | None
    spec_aliases: list[str] | None = None
    status_aliases: list[str] | None = None


@dataclass(frozen=True)
class AliasPlan:
    # Steps that take aliases away (first) and then those that confirm them.
    steps: list[AliasStep] = field(default_factory=list)
    # alias -> names of versions that ask for it but cannot have it yet (not Ready).
    waiting: dict[str, list[str]] = field(default_factory=dict)


def _winner(
    alias: str,
    versions: Sequence[Obj],
    eligible: Callable[[Obj], bool],
) -> Obj | None:
    """Who should hold ``alias``: a newcomer that asks for it, else the current holder.

    A newcomer is a version that asks for the alias in its spec but does not hold it yet;
    asking is how a user moves an alias, so a Ready newcomer wins. Among several, the
    highest version wins (deterministic). A holder that still asks keeps it otherwise.
    """
    requesters = [mv for mv in versions if alias in requested_aliases(mv)]
    newcomers = [mv for mv in requesters if alias not in confirmed_aliases(mv) and eligible(mv)]
    if newcomers:
        return max(newcomers, key=version_of)
    holders = [mv for mv in requesters if alias in confirmed_aliases(mv)]
    if holders:
        return max(holders, key=version_of)
    return None


def plan_aliases(versions: Sequence[Obj], eligible: Callable[[Obj], bool]) -> AliasPlan:
    """The writes that bring the versions of ONE model to "each alias has <= 1 holder".

    ``eligible(mv)`` says whether a version may be given an alias (it is Ready). The plan
    first takes every alias away from every version that should not have it — from its
    spec (so the user's request is visibly moved) and from its status — and only then
    confirms aliases on their winners, so a reader of ``status.aliases`` never sees two
    holders. Running the plan again on the result is a no-op (level-based).
    """
    aliases = sorted(
        {a for mv in versions for a in (*requested_aliases(mv), *confirmed_aliases(mv))}
    )
    winners: dict[str, str | None] = {}
    waiting: dict[str, list[str]] = {}
    for alias in aliases:
        w = _winner(alias, versions, eligible)
        winners[alias] = name_of(w) if w is not None else None
        pending = [
            name_of(mv)
            for mv in versions
            if alias in requested_aliases(mv) and name_of(mv) != winners[alias] and not eligible(mv)
        ]
        if pending:
            waiting[alias] = sorted(pending)

    removals: list[AliasStep] = []
    confirmations: list[AliasStep] = []
    for mv in sorted(versions, key=version_of):
        name = name_of(mv)
        rv = (mv.get("metadata") or {}).get("resourceVersion")
        spec_now = requested_aliases(mv)
        status_now = confirmed_aliases(mv)
        # The alias moved away: drop it from this version's request, unless this version
        # is merely waiting (not Ready) for it.
        spec_new = [
            a for a in spec_now if winners.get(a) in (name, None) or name in waiting.get(a, [])
        ]
        status_kept = [a for a in status_now if winners.get(a) == name and a in spec_new]
        if spec_new != spec_now or status_kept != status_now:
            removals.append(
                AliasStep(
                    name=name,
                    resource_version=rv,
                    spec_aliases=spec_new if spec_new != spec_now else None,
                    status_aliases=status_kept if status_kept != status_now else None,
                )
            )
        status_new = [
            *status_kept,
            *(a for a in spec_new if winners.get(a) == name and a not in status_kept),
        ]
        if status_new != status_kept:
            confirmations.append(
                AliasStep(name=name, resource_version=None, status_aliases=status_new)
            )
    return AliasPlan(steps=[*removals, *confirmations], waiting=waiting)


# ----------------------------------------------------------------------------- locks


class KeyedLocks:
    """One lock per key, e.g. per (namespace, model): ``with locks(ns, model): ...``.

    Workers of different objects run in parallel threads; two versions of one model asking
    for the same alias at once must not interleave their moves. An entry lives only while a
    thread holds or waits for its lock, so the table is as large as the work in flight,
    never as the set of objects ever seen (nothing to forget when an object goes).
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, ...], tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def __call__(self, *key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[key]

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)
