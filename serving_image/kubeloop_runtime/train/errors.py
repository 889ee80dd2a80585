"""Failures of a training run, each mapped to a CamelCase reason and an exit code."""

from __future__ import annotations

from kubeloop_runtime import api


class TrainError(Exception):
    """Base: a training run that cannot produce a model. ``str(e)`` names the problem."""

    reason = "TrainingError"
    exit_code = api.EXIT_UNEXPECTED


class InvalidSpecError(TrainError):
    """The TrainingJob spec is malformed or asks for something we do not allow."""

    reason = "InvalidSpec"
    exit_code = api.EXIT_INVALID


class DataError(TrainError):
    """The dataset cannot be read or does not fit the spec (columns, types, rows)."""

    reason = "DataError"
    exit_code = api.EXIT_INVALID


# The reason of each object-store failure (the cause is in the message too).
STORAGE_REASONS = {
    "NoSuchBucket": "BucketNotFound",
    "NoSuchKey": "ObjectNotFound",
    "AccessDenied": "StorageAccessDenied",
    "Unreachable": "StorageUnreachable",
    "InvalidURI": "InvalidSpec",
    "Error": "StorageError",
}


class StorageAccessError(TrainError):
    """An object store refused a read or write; ``field`` names the spec field it serves.

    Missing buckets and objects, refused credentials and bad URIs fail the Job at once
    (retrying cannot fix them); an unreachable endpoint or another error may be retried.
    """

    def __init__(self, field: str, cause: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.reason = STORAGE_REASONS.get(cause, "StorageError")
        self.exit_code = (
            api.EXIT_UNEXPECTED if cause in ("Unreachable", "Error") else api.EXIT_INVALID
        )


class DataValidationError(TrainError):
    """spec.validation found anomalies and its policy is ``fail``; ``validation`` lists them."""

    reason = "DataValidationFailed"
    exit_code = api.EXIT_INVALID

    def __init__(self, validation: api.DataValidation) -> None:
        super().__init__(validation.summary())
        self.validation = validation
