"""Events about objects the handlers read themselves (dicts from :mod:`kubeloop.kube`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf


def as_body(obj: Mapping[str, Any]) -> kopf.Body:
    """A kopf view of ``obj`` for ``kopf.info``/``warn``/``event`` (it reads only the
    object's reference: apiVersion, kind, metadata)."""
    return kopf.Body(cast(kopf.RawBody, obj))
