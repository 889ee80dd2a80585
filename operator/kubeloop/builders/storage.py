"""How a pod reaches object storage: environment variables and the credentials Secret.

Pure. The runtime (:mod:`kubeloop_runtime.storage`) reads each provider's standard
environment (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_VIRTUAL_HOSTED_STYLE_REQUEST``,
and the Secret's keys such as ``AWS_ACCESS_KEY_ID``), so the same variables work for
``kubeloop-train`` on a laptop. The Secret is referenced with ``envFrom``: the operator
never reads its values for a pod, and they never appear in a manifest, status or event.
Fields unset in the spec fall back to the operator's settings, then to the pod's own
environment (web identity, instance roles).
"""

from __future__ import annotations

from typing import Any

from kubeloop.settings import Settings
from kubeloop_runtime import api

OBJECT_SCHEMES = ("s3://", "gs://", "az://")


def is_object_uri(uri: str | None) -> bool:
    return uri is not None and uri.startswith(OBJECT_SCHEMES)


def effective(storage: api.ObjectStorage | None, settings: Settings) -> api.ObjectStorage:
    """The spec's storage with the operator's defaults filled in."""
    s = storage or api.ObjectStorage()
    return api.ObjectStorage(
        endpoint=s.endpoint or settings.s3_endpoint or None,
        region=s.region or settings.s3_region or None,
        path_style=s.path_style if s.path_style is not None else settings.s3_path_style,
        secret_name=s.secret_name,
    )


def storage_env(
    storage: api.ObjectStorage | None, settings: Settings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(env, envFrom)`` for a container that reads or writes object storage."""
    s = effective(storage, settings)
    env: list[dict[str, Any]] = []
    if s.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": s.endpoint})
        if s.endpoint.startswith("http://"):
            env.append({"name": "AWS_ALLOW_HTTP", "value": "true"})
    if s.region:
        env.append({"name": "AWS_REGION", "value": s.region})
    if s.path_style is not None:
        virtual = "false" if s.path_style else "true"
        env.append({"name": "AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "value": virtual})
    env_from = [{"secretRef": {"name": s.secret_name}}] if s.secret_name else []
    return env, env_from
