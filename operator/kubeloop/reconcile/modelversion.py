"""ModelVersion reconciliation, the pure part: what was checked -> conditions and phase.

``Ready`` says whether the version can be served; ``ArtifactVerified`` whether the operator
saw the artifact files with the recorded sha256 (``Unknown`` when the operator cannot see
the artifact store: ``Ready`` is then True with reason ``ArtifactNotVerifiable``, and the
serving pod checks the sha256 itself before it reports ready). ``AliasesConfirmed`` says
whether every alias in ``spec.aliases`` is confirmed in ``status.aliases``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubeloop.conditions import Condition, Status, get_condition, is_true, set_conditions
from kubeloop.manifest import Obj
from kubeloop_runtime import api

COND_ARTIFACT_VERIFIED = "ArtifactVerified"
COND_ALIASES = "AliasesConfirmed"

REASON_VERIFIED = "ArtifactVerified"
REASON_NOT_VERIFIABLE = "ArtifactNotVerifiable"
REASON_MISSING = "ArtifactMissing"
REASON_MISMATCH = "ChecksumMismatch"
REASON_INVALID_URI = "InvalidArtifactURI"
REASON_INVALID_SPEC = "InvalidSpec"


@dataclass(frozen=True)
class FileCheck:
    """What the operator found for one artifact file (one of the URIs in spec.artifact)."""

    field: str  # e.g. "spec.artifact.uri"
    uri: str
    expected_sha256: str
    found_sha256: str | None  # None: the file does not exist
    error: str | None = None  # the URI cannot be resolved


def files_to_check(artifact: api.ArtifactRef) -> list[tuple[str, str, str]]:
    """(field, uri, expected sha256) of every artifact file that carries a checksum."""
    out = [("spec.artifact.uri", artifact.uri, artifact.sha256)]
    if artifact.onnx_uri and artifact.onnx_sha256:
        out.append(("spec.artifact.onnxUri", artifact.onnx_uri, artifact.onnx_sha256))
    if artifact.reference_stats_uri and artifact.reference_stats_sha256:
        out.append(
            (
                "spec.artifact.referenceStatsUri",
                artifact.reference_stats_uri,
                artifact.reference_stats_sha256,
            )
        )
    return out


def artifact_condition(checks: Sequence[FileCheck] | None) -> Condition:
    """ArtifactVerified from the file checks; None means the store is not visible."""
    if checks is None:
        return Condition(
            COND_ARTIFACT_VERIFIED,
            "Unknown",
            REASON_NOT_VERIFIABLE,
            "the operator cannot see the artifact store (KUBELOOP_ARTIFACT_ROOT is not set);"
            " the serving pod verifies the sha256 before it reports ready",
        )
    for c in checks:
        if c.error is not None:
            return Condition(
                COND_ARTIFACT_VERIFIED, "False", REASON_INVALID_URI, f"{c.field}: {c.error}"
            )
        if c.found_sha256 is None:
            return Condition(
                COND_ARTIFACT_VERIFIED,
                "False",
                REASON_MISSING,
                f"{c.field}: {c.uri} does not exist in the artifact store",
            )
        if c.found_sha256 != c.expected_sha256:
            return Condition(
                COND_ARTIFACT_VERIFIED,
                "False",
                REASON_MISMATCH,
                f"{c.field}: {c.uri} has sha256 {c.found_sha256}, expected {c.expected_sha256}",
            )
    names = ", ".join(c.uri for c in checks)
    return Condition(
        COND_ARTIFACT_VERIFIED, "True", REASON_VERIFIED, f"sha256 verified for {names}"
    )


def already_verified(status: Obj | None) -> bool:
    """The artifact (immutable by schema) was verified before: no need to hash it again."""
    return is_true((status or {}).get("conditions"), COND_ARTIFACT_VERIFIED)


def ready_condition(
    spec: api.ModelVersionSpec | None, artifact: Condition, invalid: str | None = None
) -> Condition:
    """Ready: the spec parses, the gate passed and the artifact is not known to be bad."""
    if spec is None:
        return Condition(api.COND_READY, "False", REASON_INVALID_SPEC, invalid or "invalid spec")
    if not spec.gate.passed:
        message = spec.gate.message or "the model missed its quality gate"
        return Condition(
            api.COND_READY,
            "False",
            api.REASON_QUALITY_GATE_FAILED,
            f"{message}; a version that failed its gate is registered but never served",
        )
    status: Status = "False" if artifact.status == "False" else "True"
    message = (
        artifact.message
        if status == "False"
        else f"version {spec.version} of model {spec.model} can be served"
        + (" (artifact not verified by the operator)" if artifact.status == "Unknown" else "")
    )
    return Condition(api.COND_READY, status, artifact.reason, message)


def aliases_condition(
    spec_aliases: Sequence[str], confirmed: Sequence[str], ready: bool
) -> Condition:
    pending = [a for a in spec_aliases if a not in confirmed]
    if not pending:
        return Condition(
            COND_ALIASES,
            "True",
            "Confirmed",
            f"confirmed: {', '.join(confirmed)}" if confirmed else "no aliases requested",
        )
    if not ready:
        return Condition(
            COND_ALIASES,
            "False",
            "VersionNotReady",
            f"{', '.join(pending)}: a version gets aliases only once it is Ready",
        )
    return Condition(COND_ALIASES, "Unknown", "Moving", f"{', '.join(pending)}: being moved here")


def modelversion_phase(conditions: Sequence[Mapping[str, Any]] | None) -> str:
    c = get_condition(conditions, api.COND_READY)
    if c is None or c.get("status") == "Unknown":
        return "Pending"
    return "Ready" if c.get("status") == "True" else "Failed"


def desired_modelversion_status(
    *,
    old: Obj | None,
    generation: int | None,
    conditions: Sequence[Condition],
    now: str | None = None,
) -> dict[str, Any]:
    """Conditions, phase and observedGeneration (aliases are written by the alias mover)."""
    merged = set_conditions(
        (old or {}).get("conditions"), conditions, generation=generation, now=now
    )
    status: dict[str, Any] = {"conditions": merged, "phase": modelversion_phase(merged)}
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def is_ready(mv: Obj) -> bool:
    return is_true((mv.get("status") or {}).get("conditions"), api.COND_READY)
