"""``spec.retraining.triggers.schedule`` on croniter: parse once, ask for fire times.

croniter (maintained by pallets-eco) does the calendar arithmetic; this module keeps what
Kubeloop promises on top of it: exactly five fields or a macro (``@hourly``, ``@daily``,
``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``, ``@annually``), times in UTC, and an
error that names the field at fault. Syntax is cron's: ``*``, values, ranges ``a-b``,
steps ``*/n`` and ``a-b/n``, comma lists, English month and weekday names, 0 and 7 for
Sunday, and a day that matches when EITHER a restricted day-of-month or a restricted
day-of-week does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from croniter import CroniterBadDateError, croniter

_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_MACROS = frozenset(
    ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
)


class CronError(ValueError):
    """A schedule that is not valid 5-field cron; the message names the field."""


@dataclass(frozen=True)
class Schedule:
    expression: str

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first fire time strictly after ``after`` (UTC, whole minutes)."""
        start = _utc(after)
        try:
            nxt: dt.datetime = croniter(self.expression, start).get_next(dt.datetime)
        except CroniterBadDateError as e:
            raise CronError(f"schedule {self.expression!r} never fires") from e
        return nxt.astimezone(dt.UTC)

    def matches(self, when: dt.datetime) -> bool:
        minute = _utc(when).replace(second=0, microsecond=0)
        return bool(croniter.match(self.expression, minute))

    def due(self, since: dt.datetime, now: dt.datetime) -> dt.datetime | None:
        """The first fire time in (since, now], or None: missed fire times count once."""
        fire = self.next_after(since)
        return fire if fire <= _utc(now) else None


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def parse(expression: str) -> Schedule:
    """Check a 5-field cron expression (or a macro); raises :class:`CronError`."""
    expr = " ".join(expression.split()).lower()
    if expr.startswith("@"):
        if expr not in _MACROS:
            raise CronError(f"schedule {expression!r}: unknown macro (one of {sorted(_MACROS)})")
        return Schedule(expr)
    fields = expr.split(" ")
    if len(fields) != len(_FIELDS):
        raise CronError(
            f"schedule {expression!r}: expected 5 fields (minute hour day-of-month month"
            f" day-of-week), got {len(fields)}"
        )
    for i, value in enumerate(fields):
        # Each field alone against wildcards: croniter's verdict, with the field's name.
        probe = ["*"] * len(_FIELDS)
        probe[i] = value
        if not croniter.is_valid(" ".join(probe)):
            raise CronError(f"{_FIELDS[i]} field: {value!r} is not valid in {expression!r}")
    if not croniter.is_valid(expr):
        raise CronError(f"schedule {expression!r} is not valid cron")
    return Schedule(expr)
