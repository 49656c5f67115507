"""Times, durations and figures as people read them; shared by the CLI and the app."""

from __future__ import annotations

import math
from datetime import datetime, timezone

# One word per run state, the same on every page and in the CLI (MLflow's KILLED is what
# activelab's Stop does; RUNNING includes a run still starting)
RUN_STATE_WORDS = {"RUNNING": "training", "SCHEDULED": "starting", "KILLED": "stopped",
                   "FINISHED": "finished", "FAILED": "failed"}  # fmt: skip


def run_state(status: str | None) -> str:
    """A run's MLflow status as a person reads it ("stopped" for KILLED)."""
    if not status:
        return "-"
    return RUN_STATE_WORDS.get(status, status.lower())


def relative_time(moment: datetime | None, now: datetime | None = None) -> str:
    """ "just now", "5 min ago", "3 h ago", "2 days ago", then the date ("-" for none)."""
    if moment is None:
        return "-"
    now = now or datetime.now(timezone.utc)
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{round(seconds / 60)} min ago"
    if seconds < 86400:
        return f"{round(seconds / 3600)} h ago"
    if seconds < 86400 * 14:
        days = round(seconds / 86400)
        return f"{days} day{'s' if days != 1 else ''} ago"
    return moment.astimezone().strftime("%Y-%m-%d")


def duration(seconds: float | None) -> str:
    """ "4:05", or "1:04:05" past an hour ("-" for none)."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def number(value: float | None, digits: int = 4) -> str:
    """A figure to `digits` significant digits ("-" for none or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"
