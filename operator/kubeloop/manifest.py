"""The two shapes of a Kubernetes object in the operator's code, defined once.

``Obj`` is an object as read (from the cache or the API server): looked at, never changed.
``Manifest`` is an object being built or changed: what builders return and writes send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Obj = Mapping[str, Any]
Manifest = dict[str, Any]
