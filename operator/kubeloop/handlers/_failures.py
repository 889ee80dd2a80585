"""Failures to act, told on the object: a condition with a reason and a message, and an Event.

A reconcile that raises (the API server refused to create a child, a quota is exhausted, the
Service range is full, the server does not answer) is retried with backoff by its work queue
(:mod:`kubeloop.controller`). Retrying alone leaves the user with a traceback in the
operator's log and an object whose status says nothing. The controller therefore calls
:meth:`FailureRecorder.failed` at once, which:

- sets the condition ``Reconciled`` (``LoopReconciled`` for the closed loop's controller, so
  the two never clear each other's failure) to ``False`` with a CamelCase reason taken from
  the API's answer (``QuotaExceeded``, ``Forbidden``, ``Invalid``, ``InternalError``, ...)
  and a message naming what could not be written, e.g. "Could not apply Service
  ml/iris-predictor: services "iris-predictor" is forbidden: exceeded quota: ...";
- on an object that has no ``Ready`` (``Succeeded`` for TrainingJobs) condition yet, sets it
  too (``False``; ``Unknown`` for ``Succeeded``), so ``kubectl get`` and ``kubectl wait``
  show the reason from the first visit instead of nothing;
- posts a Warning Event with the same reason and message, once per distinct failure (a retry
  that fails the same way writes nothing more).

After the next successful reconcile :meth:`FailureRecorder.succeeded` sets the condition back
to ``True`` (reason ``ReconcileSucceeded``) with a Normal Event. Objects that never failed
carry no ``Reconciled`` condition: a quiet cluster costs the API server nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from kubeloop.client import CachedClient, WriteFailed
from kubeloop.conditions import MESSAGE_MAX, Condition, Status, get_condition, set_conditions
from kubeloop.handlers import _events

logger = logging.getLogger("kubeloop.failures")

COND_RECONCILED = "Reconciled"
COND_LOOP_RECONCILED = "LoopReconciled"
RECONCILE_SUCCEEDED = "ReconcileSucceeded"
RECONCILE_ERROR = "ReconcileError"
API_UNREACHABLE = "APIServerUnreachable"
QUOTA_EXCEEDED = "QuotaExceeded"

# The API's own Status reasons for the codes it answers without one.
_BY_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


def _api_status(e: ApiException) -> tuple[str | None, str | None]:
    """The ``reason`` and ``message`` of the metav1.Status the API server answered with."""
    try:
        body = json.loads(e.body) if e.body else None
    except (TypeError, ValueError):
        body = None
    if not isinstance(body, dict):
        return None, None
    reason, message = body.get("reason"), body.get("message")
    return (str(reason) if reason else None, str(message) if message else None)


def describe(exc: BaseException) -> Failure:
    """The condition reason and message for a failed reconcile (pure)."""
    if isinstance(exc, ApiException):
        api_reason, api_message = _api_status(exc)
        message = api_message or exc.reason or f"HTTP {exc.status}"
        if exc.status == 403 and "exceeded quota" in message:
            reason = QUOTA_EXCEEDED
        else:
            reason = api_reason or _BY_CODE.get(exc.status or 0, "APIError")
        if isinstance(exc, WriteFailed):
            message = f"Could not {exc.verb} {exc.target}: {message}"
        else:
            message = f"The API server answered {exc.status}: {message}"
        return Failure(reason, message[:MESSAGE_MAX])
    if isinstance(exc, HTTPError | ConnectionError | TimeoutError):
        return Failure(API_UNREACHABLE, f"Could not reach the API server: {exc}"[:MESSAGE_MAX])
    return Failure(RECONCILE_ERROR, f"{type(exc).__name__}: {exc}"[:MESSAGE_MAX])


def failure_conditions(
    status: Mapping[str, Any] | None,
    failure: Failure,
    *,
    condition: str,
    primary: str,
    primary_status: Status,
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]] | None:
    """The conditions telling ``failure``, or None when they already tell it (pure)."""
    existing = (status or {}).get("conditions") or []
    current = get_condition(existing, condition)
    updates = [Condition(condition, "False", failure.reason, failure.message)]
    if get_condition(existing, primary) is None:
        updates.append(Condition(primary, primary_status, failure.reason, failure.message))
    elif (
        current is not None
        and current.get("status") == "False"
        and current.get("reason") == failure.reason
        and current.get("message") == failure.message
    ):
        return None
    return set_conditions(existing, updates, generation=generation, now=now)


def recovered_conditions(
    status: Mapping[str, Any] | None,
    *,
    condition: str,
    generation: int | None,
    now: str | None = None,
) -> list[dict[str, Any]] | None:
    """The conditions after a successful reconcile, or None when nothing failed (pure)."""
    existing = (status or {}).get("conditions") or []
    current = get_condition(existing, condition)
    if current is None or current.get("status") == "True":
        return None
    done = Condition(condition, "True", RECONCILE_SUCCEEDED, "Reconciled after an earlier failure")
    return set_conditions(existing, [done], generation=generation, now=now)


class FailureRecorder:
    """Tells one kind's reconcile failures on its objects (see the module docstring)."""

    def __init__(
        self,
        client: CachedClient,
        *,
        api_version: str,
        kind: str,
        condition: str,
        primary: str,
        primary_status: Status,
        lock: Callable[[str, str], AbstractContextManager[Any]] | None = None,
        failures_total: Any = None,
    ) -> None:
        self._client = client
        self._api_version = api_version
        self._kind = kind
        self._condition = condition
        self._primary = primary
        self._primary_status = primary_status
        self._lock = lock
        self._failures_total = failures_total
        if failures_total is not None:
            # At 0 from the start for the failure every install can meet, so that rate()
            # sees the first one (the other reasons appear when they happen).
            failures_total.labels(kind, API_UNREACHABLE)

    def failed(self, namespace: str, name: str, exc: BaseException) -> None:
        failure = describe(exc)
        if self._failures_total is not None:
            self._failures_total.labels(self._kind, failure.reason).inc()
        self._write(
            namespace,
            name,
            lambda status, generation: failure_conditions(
                status,
                failure,
                condition=self._condition,
                primary=self._primary,
                primary_status=self._primary_status,
                generation=generation,
            ),
            event_type="Warning",
            reason=failure.reason,
            message=failure.message,
        )

    def succeeded(self, namespace: str, name: str) -> None:
        body = self._client.get(self._api_version, self._kind, namespace, name)
        status = (body or {}).get("status") or {}
        current = get_condition(status.get("conditions"), self._condition)
        if current is None or current.get("status") == "True":
            return  # the common case: nothing had failed, nothing to write
        self._write(
            namespace,
            name,
            lambda status, generation: recovered_conditions(
                status, condition=self._condition, generation=generation
            ),
            event_type="Normal",
            reason=RECONCILE_SUCCEEDED,
            message=f"Reconciled after an earlier failure ({current.get('reason')})",
        )

    def _write(
        self,
        namespace: str,
        name: str,
        conditions_of: Callable[[Mapping[str, Any] | None, int | None], list[Any] | None],
        *,
        event_type: str,
        reason: str,
        message: str,
    ) -> None:
        held = self._lock(namespace, name) if self._lock is not None else nullcontext()
        with held:
            try:
                body = self._client.get(self._api_version, self._kind, namespace, name)
                if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                    return
                generation = body["metadata"].get("generation")
                conditions = conditions_of(body.get("status"), generation)
                if conditions is None:
                    return
                self._client.patch_status(
                    self._api_version, self._kind, namespace, name, {"conditions": conditions}
                )
            except Exception as e:  # the API server may be the thing that is failing
                logger.warning(
                    "Could not write condition %s on %s %s/%s: %s",
                    self._condition,
                    self._kind,
                    namespace,
                    name,
                    e,
                )
                return
        _events.event(body, event_type, reason, message)
