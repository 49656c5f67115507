"""Registered through the `activelab` entry-point group (see pyproject.toml)."""

from __future__ import annotations

import json
import os
import time

import param

from activelab import Task, hookimpl


class Decorrelation(Task):
    """Penalises correlation between latent dimensions (off-diagonal covariance)."""

    kind = "decorrelation"
    eps = param.Number(1e-4, bounds=(0, None), doc="Added to variances before normalising.")

    def loss(self, batch, out, module):
        z = self.latent(out.mu)
        z = z - z.mean(dim=0, keepdim=True)
        cov = z.T @ z / max(len(z) - 1, 1)
        std = (cov.diagonal() + self.eps).sqrt()
        corr = cov / (std[:, None] * std[None, :])
        off_diagonal = corr - corr.diagonal().diag()
        return off_diagonal.pow(2).sum() / max(z.shape[1] * (z.shape[1] - 1), 1)


@hookimpl
def register_tasks(register):
    register(Decorrelation)


def _record(event: str, **fields) -> None:
    path = os.environ.get("ACTIVELAB_EXAMPLE_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")


@hookimpl
def on_train_start(run):
    _record("train_start", run_id=run.run_id, model=run.model_name, epochs=run.epochs)


@hookimpl
def on_epoch_end(run, epoch, metrics):
    _record("epoch_end", run_id=run.run_id, epoch=epoch, loss=metrics.get("epoch/loss/total"))


@hookimpl
def on_checkpoint_saved(run, epoch, artifact_path):
    _record("checkpoint_saved", run_id=run.run_id, epoch=epoch, path=artifact_path)


@hookimpl
def on_train_end(run, status, error):
    _record(
        "train_end", run_id=run.run_id, status=status, error=None if error is None else str(error)
    )
