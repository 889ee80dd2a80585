"""Failures told on the object: reasons and messages from the API's answers, conditions that
tell a failure once and clear on recovery, and the delay a throttled answer asks for."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubeloop.client import WriteFailed
from kubeloop.handlers._failures import (
    COND_RECONCILED,
    Failure,
    describe,
    failure_conditions,
    recovered_conditions,
)
from kubeloop.kube import RETRY_AFTER_MAX, retry_after

NOW = "2026-12-02T08:00:00Z"
LATER = "2026-12-02T08:05:00Z"


def api_error(status: int, reason: str, message: str, headers: dict[str, str] | None = None):
    e = ApiException(status=status, reason="Forbidden")
    e.body = json.dumps({"kind": "Status", "reason": reason, "message": message, "code": status})
    e.headers = headers or {}
    return e


QUOTA = 'services "iris-predictor" is forbidden: exceeded quota: q, requested: services=1'


def test_a_refused_apply_names_the_child_and_the_quota() -> None:
    e = WriteFailed(api_error(403, "Forbidden", QUOTA), "apply", "Service", "ml", "iris-predictor")
    f = describe(e)
    assert f.reason == "QuotaExceeded"
    assert f.message == f"Could not apply Service ml/iris-predictor: {QUOTA}"
    assert e.status == 403  # still an ApiException to code that checks the status


def test_reasons_come_from_the_api_status_or_the_code() -> None:
    full = "Internal error occurred: failed to allocate a serviceIP: range is full"
    w = WriteFailed(api_error(500, "InternalError", full), "apply", "Service", "ml", "x")
    assert describe(w).reason == "InternalError"
    assert describe(w).message.endswith("range is full")
    bare = ApiException(status=422, reason="Unprocessable Entity")
    assert describe(bare).reason == "Invalid"
    assert describe(bare).message == "The API server answered 422: Unprocessable Entity"
    assert describe(ConnectionResetError("reset")).reason == "APIServerUnreachable"
    assert describe(KeyError("spec")).reason == "ReconcileError"


def told(conditions: Any, failure: Failure, now: str) -> Any:
    status = {"conditions": conditions} if conditions is not None else None
    return failure_conditions(
        status,
        failure,
        condition=COND_RECONCILED,
        primary="Ready",
        primary_status="False",
        generation=1,
        now=now,
    )


def test_a_failure_is_told_once_and_sets_a_missing_primary_condition() -> None:
    f = Failure("QuotaExceeded", "Could not apply Service ml/x: exceeded quota")
    first = told(None, f, NOW)
    assert first is not None
    by_type = {c["type"]: c for c in first}
    assert by_type["Reconciled"]["status"] == "False"
    assert by_type["Reconciled"]["reason"] == "QuotaExceeded"
    assert by_type["Ready"] == {**by_type["Reconciled"], "type": "Ready"}
    # the same failure again: nothing to write
    assert told(first, f, LATER) is None
    # a different failure: written, and Ready (now present) is left to its reconcile
    changed = told(first, Failure("Forbidden", "Could not apply Service ml/x: forbidden"), LATER)
    assert changed is not None
    by_type = {c["type"]: c for c in changed}
    assert by_type["Reconciled"]["reason"] == "Forbidden"
    assert by_type["Reconciled"]["lastTransitionTime"] == NOW  # still False: no transition
    assert by_type["Ready"]["reason"] == "QuotaExceeded"


def test_recovery_sets_the_condition_true_and_only_after_a_failure() -> None:
    assert recovered_conditions(None, condition=COND_RECONCILED, generation=1) is None
    failed = failure_conditions(
        None,
        Failure("Forbidden", "no"),
        condition=COND_RECONCILED,
        primary="Succeeded",
        primary_status="Unknown",
        generation=1,
        now=NOW,
    )
    done = recovered_conditions(
        {"conditions": failed}, condition=COND_RECONCILED, generation=2, now=LATER
    )
    assert done is not None
    rec = next(c for c in done if c["type"] == "Reconciled")
    assert (rec["status"], rec["reason"], rec["lastTransitionTime"]) == (
        "True",
        "ReconcileSucceeded",
        LATER,
    )
    assert (
        recovered_conditions({"conditions": done}, condition=COND_RECONCILED, generation=2) is None
    )


def test_retry_after_honours_the_server_within_bounds() -> None:
    def err(status: int, value: str | None) -> ApiException:
        return api_error(
            status, "TooManyRequests", "slow down", {"Retry-After": value} if value else {}
        )

    assert retry_after(err(429, "3")) == 3.0
    assert retry_after(err(429, None)) == 1.0
    assert retry_after(err(503, "2")) == 2.0
    assert retry_after(err(503, None)) is None  # a 5xx without Retry-After: the caller's backoff
    assert retry_after(err(500, "100000")) == RETRY_AFTER_MAX
    assert retry_after(err(403, "3")) is None
    assert retry_after(err(429, "Wed, 21 Oct 2026 07:28:00 GMT")) is None
