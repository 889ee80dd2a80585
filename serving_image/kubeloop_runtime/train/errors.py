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


class DataValidationError(TrainError):
    """spec.validation found anomalies and its policy is ``fail``; ``validation`` lists them."""

    reason = "DataValidationFailed"
    exit_code = api.EXIT_INVALID

    def __init__(self, validation: api.DataValidation) -> None:
        super().__init__(validation.summary())
        self.validation = validation
