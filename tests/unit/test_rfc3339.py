"""The one RFC 3339 helper both packages use."""

from __future__ import annotations

import datetime as dt

import pytest

from kubeloop_runtime import rfc3339

CET = dt.timezone(dt.timedelta(hours=1))


@pytest.mark.parametrize(
    ("t", "timespec", "want"),
    [
        (
            dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC),
            "seconds",
            "2024-05-01T12:00:00Z",
        ),
        (dt.datetime(2024, 5, 1, 13, 0, 0, tzinfo=CET), "seconds", "2024-05-01T12:00:00Z"),
        (dt.datetime(2024, 5, 1, 12, 0, 0), "seconds", "2024-05-01T12:00:00Z"),  # naive = UTC
        (
            dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC),
            "milliseconds",
            "2024-05-01T12:00:00.123Z",
        ),
        (
            dt.datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=dt.UTC),
            "microseconds",
            "2024-05-01T12:00:00.000005Z",
        ),
    ],
)
def test_format(t: dt.datetime, timespec: rfc3339.Precision, want: str) -> None:
    assert rfc3339.format_time(t, timespec) == want


def test_parse_round_trips_and_refuses_garbage() -> None:
    t = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert rfc3339.parse_time(rfc3339.format_time(t)) == t
    assert rfc3339.parse_time("2024-05-01T13:00:00+01:00") == t
    assert rfc3339.parse_time("2024-05-01T12:00:00") == t  # no zone: UTC
    for bad in (None, "", "yesterday", 17):
        assert rfc3339.parse_time(bad) is None


def test_now_is_utc_and_parses_back() -> None:
    got = rfc3339.parse_time(rfc3339.now("milliseconds"))
    assert got is not None and got.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - got).total_seconds()) < 5
