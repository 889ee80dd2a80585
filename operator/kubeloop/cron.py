"""A small 5-field cron parser for ``spec.retraining.triggers.schedule``: pure, no I/O.

Why not the ``croniter`` package: the closed loop needs one question answered — "when is
the first fire time after T?" — and croniter brings a second date library and has been
announced as unmaintained. Standard 5-field syntax fits in this module and is unit-tested.

Syntax (the Vixie cron subset Kubernetes CronJobs accept, in UTC)::

    minute hour day-of-month month day-of-week
    0-59   0-23 1-31         1-12  0-7 (0 and 7 are Sunday)

Each field is ``*``, a value, a range ``a-b``, a step ``*/n`` or ``a-b/n`` or ``a/n``, or a
comma list of those. Months and weekdays also take English abbreviations (``jan``,
``mon``). The macros ``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly``,
``@yearly``/``@annually`` are accepted. As in cron, when both day-of-month and day-of-week
are restricted (neither is ``*``), a day matches if EITHER does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
)}  # fmt: skip
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)
# Longest gap between two fire times of a valid schedule: Feb 29 on a given weekday
# recurs within 28 years; searching 30 years of days is enough to call it "never".
_MAX_DAYS = 366 * 30


class CronError(ValueError):
    """A schedule that is not valid 5-field cron; the message names the field."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the allowed values of each field."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    days_restricted: bool
    weekdays_restricted: bool

    def matches_day(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def matches(self, when: dt.datetime) -> bool:
        """Whether ``when`` (any timezone; compared in UTC, to the minute) is a fire time."""
        t = _utc(when)
        return t.minute in self.minutes and t.hour in self.hours and self.matches_day(t.date())

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first fire time strictly after ``after`` (UTC, whole minutes).

        Raises :class:`CronError` for a schedule that never fires (e.g. ``0 0 31 2 *``).
        """
        start = _utc(after).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        day = start.date()
        for _ in range(_MAX_DAYS):
            if self.matches_day(day):
                first = start if day == start.date() else None
                for hour in sorted(self.hours):
                    if first is not None and hour < first.hour:
                        continue
                    for minute in sorted(self.minutes):
                        if first is not None and hour == first.hour and minute < first.minute:
                            continue
                        return dt.datetime(
                            day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC
                        )
            day += dt.timedelta(days=1)
        raise CronError(f"schedule {self.expression!r} never fires")

    def due(self, since: dt.datetime, now: dt.datetime) -> dt.datetime | None:
        """The fire time in ``(since, now]``, if any (the latest one is not needed: one
        missed or many, the loop retrains once)."""
        fire = self.next_after(since)
        return fire if fire <= _utc(now) else None


def _utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        return t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC)


def _value(text: str, name: str, names: dict[str, int] | None) -> int:
    key = text.lower()
    if names is not None and key in names:
        return names[key]
    if not text.isdigit():
        raise CronError(f"{name} field: {text!r} is not a number")
    return int(text)


def _field(text: str, name: str, lo: int, hi: int, names: dict[str, int] | None) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name} field: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            first, last = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _value(a, name, names), _value(b, name, names)
        else:
            first = _value(base, name, names)
            last = hi if step_text else first
        if not (lo <= first <= hi and lo <= last <= hi):
            raise CronError(f"{name} field: {part!r} is outside {lo}-{hi}")
        if first > last:
            raise CronError(f"{name} field: range {part!r} runs backwards")
        out.update(range(first, last + 1, step))
    return out


def parse(expression: str) -> Schedule:
    """Parse a 5-field cron expression (or a macro); raises :class:`CronError`."""
    text = _MACROS.get(expression.strip().lower(), expression.strip())
    parts = text.split()
    if len(parts) != 5:
        raise CronError(
            f"schedule {expression!r}: expected 5 fields (minute hour day-of-month month"
            f" day-of-week), got {len(parts)}"
        )
    values = [
        _field(p, name, lo, hi, names)
        for p, (name, lo, hi, names) in zip(parts, _FIELDS, strict=True)
    ]
    weekdays = {d % 7 for d in values[4]}
    return Schedule(
        expression=expression,
        minutes=frozenset(values[0]),
        hours=frozenset(values[1]),
        days=frozenset(values[2]),
        months=frozenset(values[3]),
        weekdays=frozenset(weekdays),
        days_restricted=not parts[2].startswith("*"),
        weekdays_restricted=not parts[4].startswith("*"),
    )
