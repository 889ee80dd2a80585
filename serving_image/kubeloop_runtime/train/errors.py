"""Failures of a training run, each mapped to a CamelCase reason and an exit code."""

from __future__ import annotations

from kubeloop_runtime import api, storage

# Where a run's object-store credentials come from (named when access is denied).
CREDENTIALS_FIELD = "spec.storage.secretName"


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


class StorageAccessError(TrainError):
    """An object store refused a read or write; ``field`` names the spec field it serves.

    Missing buckets and objects, refused credentials and bad URIs fail the Job at once
    (retrying cannot fix them); an unreachable endpoint or another error may be retried.
    """

    def __init__(self, field: str, error: storage.StorageError) -> None:
        super().__init__(error.for_field(field, credentials=CREDENTIALS_FIELD))
        self.reason = error.reason
        self.exit_code = (
            api.EXIT_UNEXPECTED if error.cause in ("Unreachable", "Error") else api.EXIT_INVALID
        )


class DataValidationError(TrainError):
    """spec.validation found anomalies and its policy is ``fail``; ``validation`` lists them."""

    reason = "DataValidationFailed"
    exit_code = api.EXIT_INVALID

    def __init__(self, validation: api.DataValidation) -> None:
        super().__init__(validation.summary())
        self.validation = validation
