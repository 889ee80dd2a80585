"""RFC 3339 timestamps as Kubernetes writes them: UTC with a ``Z``; one helper for both
packages (conditions, status times, Lease times, prediction logs)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

Precision = Literal["seconds", "milliseconds", "microseconds"]


def format_time(t: dt.datetime, timespec: Precision = "seconds") -> str:
    """``t`` in UTC (a naive time is taken as UTC), e.g. ``2024-05-01T12:00:00Z``."""
    aware = t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)
    return aware.isoformat(timespec=timespec).replace("+00:00", "Z")


def now(timespec: Precision = "seconds") -> str:
    return format_time(dt.datetime.now(dt.UTC), timespec)


def parse_time(value: Any) -> dt.datetime | None:
    """An aware datetime from an RFC 3339 string; None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)
