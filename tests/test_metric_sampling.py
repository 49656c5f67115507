"""Downsampled curves read straight from the store agree with MLflow's own sampler."""

from __future__ import annotations

import math
from itertools import pairwise

from helpers import mlflow_client
from mlflow.entities import Metric

from activelab.metric_sampling import sample_evenly


def _log(client, run_id, key, points):
    batch = [Metric(key, value, 1_000 + step, step) for step, value in points]
    for first in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[first : first + 1000])


def test_curves_sample_evenly_with_both_ends_kept_and_match_mlflow(local_lab, unique):
    client = mlflow_client(local_lab)
    model = local_lab.create_model(unique)
    run_id = client.create_run(model.id).info.run_id
    _log(client, run_id, "dense", [(s, 1 / s) for s in range(1, 3001)])
    _log(client, run_id, "gapped", [(s, float(s)) for s in range(0, 3000, 7)])
    _log(client, run_id, "twice", [(s // 2, float(s)) for s in range(600)])
    _log(client, run_id, "nan", [(s, math.nan if s == 3 else 1.0) for s in range(1, 6)])
    store = local_lab.tracking._client._tracking_client.store
    tracking = local_lab.tracking

    dense = sample_evenly(store, run_id, "dense", 100)
    assert dense is not None and 50 <= len(dense) <= 100
    steps = [p[0] for p in dense]
    assert steps[0] == 1 and steps[-1] == 3000, "first and last kept"
    gaps = {b - a for a, b in pairwise(steps[:-1])}  # the last may be off the grid
    assert len(gaps) == 1, f"evenly spaced, not {sorted(gaps)}"
    assert all(v == 1 / s and t == 1_000 + s for s, v, t in dense), "the logged points"
    # a later window of a live run's curve, as the monitor reads it
    tail = sample_evenly(store, run_id, "dense", 100, start_step=2901, end_step=2**62)
    assert [p[0] for p in tail] == list(range(2901, 3001))
    assert sample_evenly(store, run_id, "dense", 1) == [(3000, 1 / 3000, 4000)]
    nan = sample_evenly(store, run_id, "nan", 10)
    assert math.isnan(nan[2][1]) and [p[0] for p in nan] == [1, 2, 3, 4, 5]
    assert sample_evenly(store, run_id, "absent", 10) == []

    # a step is not a rank here: MLflow's sampler reads these, and the Tracking gives its answer
    for key in ("gapped", "twice"):
        assert sample_evenly(store, run_id, key, 100) is None
        ours = tracking.metric_histories([run_id], key, 100)[run_id]
        theirs = store.get_metric_history_bulk_interval([run_id], key, 100, None, None)
        assert sorted(ours.steps) == sorted(m.step for m in theirs)
    curve = tracking.metric_histories([run_id], "dense", 100)[run_id]
    assert curve.steps == steps
