"""Downsampled metric histories read straight from a SQL tracking store.

MLflow's own sampler (`get_metric_history_bulk_interval`) ranks every point of a curve with two
window functions and sorts it three times: ~25 ms per curve of 10,000 points on sqlite, so 1.3
of the 2 s the Compare page may take for 10 runs x 5 metrics (measured here). Most curves are
a training loop's: one value per step over steps without gaps. There a point's rank is its
step, so every k-th step is every k-th point, and the store finds them in its (run, key, step)
index without sorting: ~4 ms per curve. Any other curve goes to MLflow's sampler.
"""

from __future__ import annotations

from typing import Any

Point = tuple[int, float, int]  # step, value, timestamp (ms)


def sample_evenly(
    store: Any,
    run_id: str,
    key: str,
    max_points: int,
    start_step: int | None = None,
    end_step: int | None = None,
) -> list[Point] | None:
    """At most `max_points` evenly spaced points of one run's metric, the first and the last
    kept (as MLflow's sampler does), when the metric has exactly one value per step over a
    range without gaps; None for any other curve, or a store that is not a SQL database."""
    if not hasattr(store, "ManagedSessionMaker"):
        return None
    from mlflow.store.tracking.dbmodels.models import SqlMetric
    from sqlalchemy import false, func, or_

    where: list[Any] = [SqlMetric.run_uuid == run_id, SqlMetric.key == key]
    if start_step is not None and end_step is not None:
        where += [SqlMetric.step >= start_step, SqlMetric.step <= end_step]
    with store.ManagedSessionMaker() as session:
        count, first, last = (
            session.query(func.count(), func.min(SqlMetric.step), func.max(SqlMetric.step))
            .filter(*where)
            .one()
        )
        if not count:
            return []
        if count != last - first + 1:
            return None  # gaps or several values per step: a step is not a rank here
        every = max(1, -(-(count - 1) // max(1, max_points - 1)))
        on_grid = (SqlMetric.step - first) % every == 0 if max_points > 1 else false()
        # the step range steers sqlite to the (run, key, step) index; without it, it scans
        # the key's points of every run in the store (its primary key is covering)
        in_range = [SqlMetric.step >= first, SqlMetric.step <= last]
        rows = (
            session.query(SqlMetric.step, SqlMetric.value, SqlMetric.timestamp, SqlMetric.is_nan)
            .filter(*where, *in_range, or_(on_grid, SqlMetric.step == last))
            .all()
        )
    points = sorted(
        (int(step), float("nan") if is_nan else float(value), int(stamp))
        for step, value, stamp, is_nan in rows
    )
    if len(points) > max_points:  # the last point off the grid: it replaces the one before
        del points[-2]
    return points
