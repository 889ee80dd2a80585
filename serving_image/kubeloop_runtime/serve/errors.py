"""Typed errors of the serving runtime, each carrying the HTTP status it maps to.

The app has ONE handler that turns a :class:`ServeError` into ``{"error": message}``
with its status; anything else escaping a route is a bug, logged and answered with 500.
"""

from __future__ import annotations


class ServeError(Exception):
    """Base of the errors a client can cause; ``status`` is the HTTP status code."""

    status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(ServeError):
    """The request is well-formed JSON but does not fit the model's signature."""

    status = 400


class MalformedBodyError(ServeError):
    """The body is not JSON (or not the JSON object the endpoint takes)."""

    status = 400


class ModelNotFoundError(ServeError):
    status = 404


class RouteNotFoundError(ServeError):
    status = 404


class MethodNotAllowedError(ServeError):
    status = 405

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class PayloadTooLargeError(ServeError):
    status = 413


class UnsupportedMediaTypeError(ServeError):
    status = 415


class NotReadyError(ServeError):
    status = 503


class StartupError(Exception):
    """The server must not start: bad settings, artifact integrity or version mismatch.

    ``reason`` (CamelCase) goes with the message into the termination message
    (:class:`kubeloop_runtime.api.StartupFailure`), which the operator shows on the
    InferenceService.
    """

    def __init__(self, message: str, reason: str = "StartupFailed") -> None:
        super().__init__(message)
        self.reason = reason


class UnknownRequestIdError(ServeError):
    """Feedback for a request id the server does not remember."""

    status = 404


class ConflictError(ServeError):
    status = 409


class UnprocessableError(ServeError):
    """Well-formed, but does not fit (for example labels that do not match predictions)."""

    status = 422


class NonFiniteOutputError(UnprocessableError):
    """The model's output for a row is not finite (NaN or infinite): never answered 200."""


class ModelInputError(UnprocessableError):
    """The model refused this request's rows alone (it was retried apart from its batch)."""
