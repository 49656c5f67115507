"""Times, durations and figures read the same in the CLI and the app."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from activelab.humanize import duration, number, relative_time


def test_relative_time_steps_from_seconds_to_a_date():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    assert relative_time(now - timedelta(seconds=10), now) == "just now"
    assert relative_time(now - timedelta(minutes=5), now) == "5 min ago"
    assert relative_time(now - timedelta(hours=3), now) == "3 h ago"
    assert relative_time(now - timedelta(days=1), now) == "1 day ago"
    assert relative_time(now - timedelta(days=3), now) == "3 days ago"
    old = now - timedelta(days=40)
    assert relative_time(old, now) == old.astimezone().strftime("%Y-%m-%d")
    assert relative_time(now + timedelta(seconds=5), now) == "just now"  # clocks a bit apart
    assert relative_time(None) == "-"


def test_durations_and_figures():
    assert duration(None) == "-" and duration(0) == "0:00" and duration(65.9) == "1:05"
    assert duration(3725) == "1:02:05"
    assert number(None) == "-" and number(float("nan")) == "-"
    assert number(0.123456) == "0.1235" and number(12345.6, 3) == "1.23e+04"
