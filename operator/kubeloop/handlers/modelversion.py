"""ModelVersion controller (the registry): verify each version, keep aliases unique.

For each ModelVersion: parse the spec, keep the ``kubeloop.io/model`` and
``kubeloop.io/version`` labels, verify the artifact files' sha256 when the operator can see
the artifact store (``settings.artifact_root``), set ``Ready`` and ``ArtifactVerified``,
export the version's metrics, then bring the aliases of its model to "one holder each"
(:func:`kubeloop.registry.plan_aliases`): under a per-(namespace, model) lock, take an alias
away from its old holder (spec, with a resourceVersion precondition, then status) before
confirming it in the new holder's ``status.aliases``. See docs/registry.md.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from kubeloop import registry
from kubeloop.builders.modelversion import labels as mv_labels
from kubeloop.builders.storage import is_object_uri
from kubeloop.client import CachedClient
from kubeloop.conditions import MESSAGE_MAX, Condition, get_condition
from kubeloop.controller import Result
from kubeloop.handlers import _events
from kubeloop.handlers._common import (
    ControllerState,
    object_logger,
    release_legacy_finalizer,
    state_of,
)
from kubeloop.metrics import OperatorMetrics
from kubeloop.reconcile.modelversion import (
    COND_ARTIFACT_VERIFIED,
    REASON_NOT_VERIFIABLE,
    FileCheck,
    aliases_condition,
    already_verified,
    artifact_condition,
    desired_modelversion_status,
    files_to_check,
    is_ready,
    ready_condition,
)
from kubeloop.settings import Settings
from kubeloop_runtime import api
from kubeloop_runtime.train.spec import format_validation_error

KIND = "ModelVersion"


# ------------------------------------------------------------------------ verification


def _check_files(artifact: api.ArtifactRef, root: str) -> list[FileCheck]:
    from kubeloop_runtime import artifacts  # noqa: PLC0415 (stdlib-only, lazily)

    checks: list[FileCheck] = []
    for field, uri, expected in files_to_check(artifact):
        try:
            path: Path = artifacts.resolve(uri, root)
        except artifacts.ArtifactError as e:
            checks.append(FileCheck(field, uri, expected, None, error=str(e)))
            continue
        found = artifacts.sha256_file(path) if path.is_file() else None
        checks.append(FileCheck(field, uri, expected, found))
    return checks


def _previous(status: dict[str, Any], type_: str) -> Condition | None:
    c = get_condition(status.get("conditions"), type_)
    if c is None:
        return None
    return Condition(type_, c["status"], c.get("reason", ""), c.get("message", ""))


def _artifact_condition(
    spec: api.ModelVersionSpec, status: dict[str, Any], settings: Settings, recheck: bool
) -> Condition:
    if not settings.artifact_root:
        return artifact_condition(None)
    if is_object_uri(spec.artifact.uri):  # never downloaded by the operator
        return Condition(
            COND_ARTIFACT_VERIFIED,
            "Unknown",
            REASON_NOT_VERIFIABLE,
            f"spec.artifact.uri is in an object store ({spec.artifact.uri.split('/', 3)[2]});"
            " the serving pod verifies the sha256 as it downloads",
        )
    if not recheck and already_verified(status):
        previous = _previous(status, COND_ARTIFACT_VERIFIED)
        if previous is not None:
            return previous
    return artifact_condition(_check_files(spec.artifact, settings.artifact_root))


# ----------------------------------------------------------------------------- metrics


def _export(
    metrics: OperatorMetrics,
    state: ControllerState,
    *,
    ns: str,
    name: str,
    spec: api.ModelVersionSpec,
    ready: bool,
    aliases: list[str],
) -> None:
    version = str(spec.version)
    series: list[tuple[str, ...]] = [(ns, spec.model, version, k) for k in sorted(spec.metrics)]
    for old in state.metric_series.get((ns, name), []):
        if old not in series:
            metrics.model_version_metric.remove(*old)
    for labels, key in zip(series, sorted(spec.metrics), strict=True):
        metrics.model_version_metric.labels(*labels).set(spec.metrics[key])
    state.metric_series[(ns, name)] = series
    info = (ns, spec.model, version, ",".join(sorted(aliases)), "true" if ready else "false")
    old_info = state.info_series.get((ns, name))
    if old_info is not None and old_info != info:
        metrics.model_version_info.remove(*old_info)
    metrics.model_version_info.labels(*info).set(1)
    state.info_series[(ns, name)] = info


def _unexport(metrics: OperatorMetrics, state: ControllerState, ns: str, name: str) -> None:
    for old in state.metric_series.pop((ns, name), []):
        with contextlib.suppress(KeyError):
            metrics.model_version_metric.remove(*old)
    info = state.info_series.pop((ns, name), None)
    if info is not None:
        with contextlib.suppress(KeyError):
            metrics.model_version_info.remove(*info)


# ----------------------------------------------------------------------------- aliases


def move_aliases(
    kube: CachedClient, namespace: str, model: str, logger: Any, *, locks: registry.KeyedLocks
) -> registry.AliasPlan:
    """Apply the alias plan of one model: removals first, then confirmations.

    Serialised per (namespace, model) in this process. A spec write guarded by a
    resourceVersion that is stale (the user edited the object meanwhile) is a 409: the
    handler is retried and plans again from what is there then.
    """
    with locks(namespace, model):
        versions = kube.list(api.API_VERSION, KIND, namespace, labels={api.LABEL_MODEL: model})
        versions = [v for v in versions if registry.model_of(v) == model]
        plan = registry.plan_aliases(versions, is_ready)
        for step in plan.steps:
            if step.spec_aliases is not None:
                patch: dict[str, Any] = {"spec": {"aliases": step.spec_aliases}}
                if step.resource_version:
                    patch["metadata"] = {"resourceVersion": step.resource_version}
                try:
                    kube.patch(api.API_VERSION, KIND, namespace, step.name, patch)
                except ApiException as e:
                    if e.status == 409:
                        raise kopf.TemporaryError(
                            f"ModelVersion {step.name} changed while moving its aliases;"
                            " planning again",
                            delay=0.5,
                        ) from e
                    if e.status == 404:
                        continue  # deleted meanwhile; the next plan won't see it
                    raise
            if step.status_aliases is not None:
                try:
                    kube.patch_status(
                        api.API_VERSION,
                        KIND,
                        namespace,
                        step.name,
                        {"aliases": step.status_aliases},
                    )
                except ApiException as e:
                    if e.status == 404:
                        continue
                    raise
                logger.info(
                    "Set the confirmed aliases of ModelVersion %s/%s to [%s]",
                    namespace,
                    step.name,
                    ", ".join(step.status_aliases),
                )
        return plan


# ---------------------------------------------------------------------------- reconcile


def _ensure_labels(kube: CachedClient, body: dict[str, Any], spec: api.ModelVersionSpec) -> None:
    meta = body["metadata"]
    lineage = spec.lineage.training_job
    want = {
        api.LABEL_MODEL: spec.model,
        api.LABEL_VERSION: str(spec.version),
    }
    if lineage:
        want[api.LABEL_TRAININGJOB] = lineage
    have = meta.get("labels") or {}
    missing = {k: v for k, v in want.items() if have.get(k) != v}
    if not missing:
        return
    # Fill in kubeloop's other labels too when a user created the object by hand.
    extra = {k: v for k, v in mv_labels(spec.model, spec.version, lineage).items() if k not in have}
    kube.patch(
        api.API_VERSION,
        KIND,
        meta["namespace"],
        meta["name"],
        {"metadata": {"labels": {**extra, **missing}}},
    )


def reconcile_key(memo: Any, namespace: str, name: str) -> Result:
    """The controller's entry point: reconcile ModelVersion ``namespace/name`` from the cache."""
    kube: CachedClient = memo.client
    state = state_of(memo)
    body = kube.get(api.API_VERSION, KIND, namespace, name)
    if body is None:
        with state.verified_lock:
            state.verified.discard((namespace, name))
        return Result()
    body = release_legacy_finalizer(kube, body) or body
    if body["metadata"].get("deletionTimestamp"):
        return Result()
    with state.verified_lock:
        recheck = (namespace, name) not in state.verified
        state.verified.add((namespace, name))
    reconcile(dict(body), memo, object_logger(KIND, namespace, name), recheck=recheck)
    return Result()


def forget(metrics: OperatorMetrics, state: ControllerState, namespace: str, name: str) -> None:
    """A ModelVersion was deleted: drop its metrics (no finalizer: the registry never blocks)."""
    _unexport(metrics, state, namespace, name)
    with state.verified_lock:
        state.verified.discard((namespace, name))


def reconcile(body: dict[str, Any], memo: Any, logger: Any, *, recheck: bool = False) -> None:
    kube: CachedClient = memo.client
    settings: Settings = memo.settings
    metrics: OperatorMetrics = memo.metrics
    meta = body["metadata"]
    ns, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    old = dict(body.get("status") or {})
    try:
        spec = api.ModelVersionSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        invalid = format_validation_error(e)[:MESSAGE_MAX]
        conds = [ready_condition(None, artifact_condition(None), invalid)]
        status = desired_modelversion_status(old=old, generation=generation, conditions=conds)
        if any(old.get(k) != v for k, v in status.items()):
            kube.patch_status(api.API_VERSION, KIND, ns, name, status)
        raise kopf.PermanentError(f"invalid ModelVersion spec: {invalid}") from e

    _ensure_labels(kube, body, spec)
    artifact = _artifact_condition(spec, old, settings, recheck)
    ready = ready_condition(spec, artifact)
    # AliasesConfirmed as things stand now goes into the same write: a version whose
    # aliases the plan below leaves alone (most of them) costs one status write, not two.
    aliases_now = aliases_condition(
        registry.requested_aliases(body), registry.confirmed_aliases(body), ready.status == "True"
    )
    status = desired_modelversion_status(
        old=old, generation=generation, conditions=[artifact, ready, aliases_now]
    )
    was = _previous(old, api.COND_READY)
    if any(old.get(k) != v for k, v in status.items()):
        kube.patch_status(api.API_VERSION, KIND, ns, name, status)
    if was is None or (was.status, was.reason) != (ready.status, ready.reason):
        if ready.status == "True":
            logger.info("ModelVersion is Ready (%s)", ready.reason)
        else:
            logger.warning("ModelVersion is not Ready (%s): %s", ready.reason, ready.message)
            _events.warn(body, reason=ready.reason, message=ready.message)

    plan = move_aliases(kube, ns, spec.model, logger, locks=state_of(memo).model_locks)
    current = kube.get(api.API_VERSION, KIND, ns, name)
    if current is None:
        return
    confirmed = registry.confirmed_aliases(current)
    aliases = aliases_condition(
        registry.requested_aliases(current), confirmed, ready.status == "True"
    )
    cur_status = current.get("status") or {}
    after = desired_modelversion_status(
        old=cur_status, generation=current["metadata"].get("generation"), conditions=[aliases]
    )
    if any(cur_status.get(k) != v for k, v in after.items()):
        kube.patch_status(api.API_VERSION, KIND, ns, name, after)
    for alias, names in plan.waiting.items():
        if name in names:
            logger.info("Alias %s waits for ModelVersion %s to be Ready", alias, name)
    _export(
        metrics,
        state_of(memo),
        ns=ns,
        name=name,
        spec=spec,
        ready=ready.status == "True",
        aliases=confirmed,
    )
