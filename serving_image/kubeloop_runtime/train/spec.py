"""Reading the TrainingJob spec: a manifest or a bare spec, YAML or JSON, parsed once."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from kubeloop_runtime import api
from kubeloop_runtime.train.errors import InvalidSpecError


def format_validation_error(error: ValidationError, prefix: str = "spec") -> str:
    """One line per problem, each naming the field as it is written in YAML."""
    lines = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.{loc}" if loc else prefix
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def parse_spec(text: str, *, origin: str = "spec") -> api.TrainingJobSpec:
    """Parse a TrainingJob manifest (with ``spec``) or a bare spec from YAML or JSON text.

    JSON is a subset of YAML, so one parser reads both.
    """
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidSpecError(f"{origin} is not valid YAML or JSON: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidSpecError(
            f"{origin} must be a mapping (a TrainingJob manifest or its spec),"
            f" got {type(doc).__name__}"
        )
    body: Any = doc
    if "spec" in doc:
        body = doc["spec"]
        kind = doc.get("kind")
        if kind is not None and kind != "TrainingJob":
            raise InvalidSpecError(f"{origin}: kind must be TrainingJob, got {kind!r}")
        if not isinstance(body, dict):
            raise InvalidSpecError(f"{origin}: spec must be a mapping")
    try:
        return api.TrainingJobSpec.model_validate(body)
    except ValidationError as e:
        raise InvalidSpecError(format_validation_error(e)) from e
