"""The 5-field cron parser behind spec.retraining.triggers.schedule."""

from __future__ import annotations

import datetime as dt

import pytest

from kubeloop import cron


def t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("* * * * *", "2024-05-01T10:00:30", "2024-05-01T10:01:00"),
        ("*/15 * * * *", "2024-05-01T10:01:00", "2024-05-01T10:15:00"),
        ("0 2 * * *", "2024-05-01T02:00:00", "2024-05-02T02:00:00"),
        ("0 2 * * *", "2024-05-01T01:59:59", "2024-05-01T02:00:00"),
        ("30 23 31 12 *", "2024-05-01T00:00:00", "2024-12-31T23:30:00"),
        ("0 0 * * mon", "2024-05-01T00:00:00", "2024-05-06T00:00:00"),  # 2024-05-01 is a Wed
        ("0 0 * * 7", "2024-05-01T00:00:00", "2024-05-05T00:00:00"),  # 7 is Sunday too
        ("0 0 29 feb *", "2024-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("0 9-17/4 * * 1-5", "2024-05-03T17:00:00", "2024-05-06T09:00:00"),  # Fri -> Mon
        ("5,10 * * * *", "2024-05-01T10:05:00", "2024-05-01T10:10:00"),
        ("@daily", "2024-05-01T12:00:00", "2024-05-02T00:00:00"),
        # day-of-month OR day-of-week when both are restricted: the 13th or any Friday.
        ("0 0 13 * 5", "2024-05-01T00:00:00", "2024-05-03T00:00:00"),
        ("0 0 13 * 5", "2024-05-10T00:00:00", "2024-05-13T00:00:00"),
    ],
)
def test_next_after(expr: str, after: str, expected: str) -> None:
    assert cron.parse(expr).next_after(t(after)) == t(expected)


def test_next_after_takes_aware_times_in_other_zones() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    after = dt.datetime(2024, 5, 1, 3, 30, tzinfo=cet)  # 02:30 UTC
    assert cron.parse("0 3 * * *").next_after(after) == t("2024-05-01T03:00:00")


def test_due_only_when_a_fire_time_passed() -> None:
    s = cron.parse("0 * * * *")
    assert s.due(t("2024-05-01T10:00:00"), t("2024-05-01T10:59:59")) is None
    assert s.due(t("2024-05-01T10:00:00"), t("2024-05-01T11:00:00")) == t("2024-05-01T11:00:00")
    # Several missed fire times still answer one (the loop retrains once).
    assert s.due(t("2024-05-01T10:00:00"), t("2024-05-02T10:00:00")) == t("2024-05-01T11:00:00")


def test_matches() -> None:
    s = cron.parse("15 6 * * *")
    assert s.matches(t("2024-05-01T06:15:42"))
    assert not s.matches(t("2024-05-01T06:16:00"))


@pytest.mark.parametrize(
    ("expr", "needle"),
    [
        ("* * * *", "expected 5 fields"),
        ("* * * * * *", "expected 5 fields"),  # no seconds field
        ("60 * * * *", "minute field: '60'"),
        ("* 24 * * *", "hour field: '24'"),
        ("* * 0 * *", "day-of-month field: '0'"),
        ("* * * 13 *", "month field: '13'"),
        ("* * * * 8", "day-of-week field: '8'"),
        ("*/0 * * * *", "minute field: '\\*/0'"),
        ("a * * * *", "minute field: 'a'"),
        ("1,,2 * * * *", "minute field: '1,,2'"),
        ("@often", "unknown macro"),
    ],
)
def test_invalid_names_the_field(expr: str, needle: str) -> None:
    with pytest.raises(cron.CronError, match=needle):
        cron.parse(expr)


def test_never_fires() -> None:
    with pytest.raises(cron.CronError, match="never fires"):
        cron.parse("0 0 31 2 *").next_after(t("2024-01-01T00:00:00"))
