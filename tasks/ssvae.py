"""The built-in trainer: a semi-supervised VAE whose latent is the labeling map.

Encoder -> (mu, logvar) -> latent z -> decoder; task modules (e.g. the classifier head) sit on
the latent. The loss is the sum of the enabled tasks' terms; the loop is flat and commented
(nanoGPT style), and reports everything through the TrainingSession.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import param

from activelab.errors import TrainingError
from activelab.hookspecs import hookimpl
from activelab.task import Batch, Outputs, parse_latent_slice
from activelab.trainer import Trainer

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from activelab.dataset import DataBundle, DatasetInfo
    from activelab.runtime import TrainingSession
    from activelab.task import Task


def head_of(heads: Any, task: Task) -> Any:
    """The module a task owns, or None."""
    return heads[task.name] if task.name in heads else None  # noqa: SIM401 (ModuleDict has no .get)


def resolve_threads(requested: int) -> int:
    """0 = leave one core for the app, MLflow and the OS (2 threads collapse under load)."""
    if requested > 0:
        return requested
    return max(1, (os.cpu_count() or 2) - 1)


def image_grid(rows: list[np.ndarray], scale: int) -> np.ndarray:
    """uint8 image of rows of (N, C, H, W) images in [0, 1], upscaled by `scale`."""
    tiles = []
    for batch in rows:
        row = np.concatenate([img.transpose(1, 2, 0) for img in batch], axis=1)
        tiles.append(row)
    grid = np.concatenate(tiles, axis=0)
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    if grid.shape[2] == 1:
        grid = grid[:, :, 0]
    return (np.clip(grid, 0, 1) * 255).astype(np.uint8)


class SSVAETrainer(Trainer):
    """Semi-supervised VAE: encoder, decoder and task heads on a (default 2-D) latent."""

    kind = "ssvae"

    latent_dim = param.Integer(2, bounds=(1, 256), doc="Latent dimensions (2 = the labeling map).")
    hidden_dims = param.List([512, 256], item_type=int, doc="Hidden layer widths of the encoder.")
    lr = param.Number(
        1e-3, bounds=(0, 1), inclusive_bounds=(False, True), doc="Adam learning rate."
    )
    batch_size = param.Integer(128, bounds=(1, 65536), doc="Samples per step.")
    epochs = param.Integer(10, bounds=(1, 100000), doc="Epochs per run unless the launch says.")
    checkpoint_every = param.Integer(5, bounds=(1, None), doc="Save a checkpoint every N epochs.")
    val_fraction = param.Number(
        0.1, bounds=(0, 0.5), doc="Unlabeled samples held out for validation."
    )
    val_max = param.Integer(1000, bounds=(0, None), doc="At most this many validation samples.")
    seed = param.Integer(0, doc="Seed for initialisation, splits and shuffling.")
    threads = param.Integer(0, bounds=(0, 256), doc="Torch threads (0 = cores - 1).")
    log_every = param.Integer(1, bounds=(1, None), doc="Log step losses every N steps.")
    recon_images = param.Integer(8, bounds=(0, 64), doc="Samples in the per-epoch image grid.")

    def build_model(self, info: DatasetInfo, tasks: list[Task]) -> Any:
        """The network plus the modules the tasks own, as one SSVAEModule (seeded)."""
        import torch

        from activelab.tasks.ssvae_network import SSVAEModule, SSVAENetwork

        torch.manual_seed(self.seed)
        network = SSVAENetwork(info.image_shape, list(self.hidden_dims), self.latent_dim)
        heads = torch.nn.ModuleDict()
        for task in tasks:
            module = task.build(self.latent_dim, info)
            if module is not None:
                heads[task.name] = module
        predictor = next((t for t in tasks if t.predicts_classes and t.name in heads), None)
        model = SSVAEModule(network, heads, predictor.name if predictor else None)
        if predictor is not None:
            window = parse_latent_slice(predictor.latent_slice)
            model.predictor_slice = (window.start, window.stop)
        return model

    @staticmethod
    def load_weights(model: Any, state: dict[str, Any]) -> None:
        try:
            model.load_state_dict(state["model"], strict=False)
        except RuntimeError as exc:
            raise TrainingError(
                "The checkpoint does not fit this model's config (a layer changed shape); "
                f"use a checkpoint made with the same trainer settings. ({exc})"
            ) from None

    def fit(self, session: TrainingSession) -> None:
        import torch

        torch.set_num_threads(resolve_threads(self.threads))
        data, info = session.data, session.data.info
        images = torch.from_numpy(data.images)
        labels = torch.from_numpy(session.labels)
        truth = torch.from_numpy(data.true_labels) if data.true_labels is not None else None
        train_idx, val_idx = self.split(session.labels)

        everything = self.build_model(info, session.tasks)
        network, heads = everything.network, everything.heads
        optimizer = torch.optim.Adam(everything.parameters(), lr=self.lr)
        global_step = 0
        if session.resume is not None:
            self.load_weights(everything, session.resume)
            if "optimizer" in session.resume and session.resume.get("trainer") == self.kind:
                # If the task list changed since, the optimizer simply starts afresh.
                with contextlib.suppress(ValueError):
                    optimizer.load_state_dict(session.resume["optimizer"])
            global_step = int(session.resume.get("global_step", 0))

        def batch_of(idx: torch.Tensor) -> Batch:
            return Batch(images[idx], labels[idx], truth[idx] if truth is not None else None, idx)

        steps_per_epoch = max(1, math.ceil(len(train_idx) / self.batch_size))
        session.begin(steps_per_epoch, modules=everything, batch_size=self.batch_size)
        generator = torch.Generator().manual_seed(self.seed + session.start_epoch)
        stopped = False
        epoch = session.start_epoch
        for epoch in range(session.start_epoch + 1, session.start_epoch + session.epochs + 1):
            everything.train()
            order = train_idx[torch.randperm(len(train_idx), generator=generator)]
            sums: dict[str, float] = {}
            steps = 0
            for start in range(0, len(order), self.batch_size):
                batch = batch_of(order[start : start + self.batch_size])
                out = network(batch.x)
                terms = self.loss_terms(session.tasks, heads, batch, out)
                total = sum(terms.values())
                if not torch.isfinite(total):
                    shown = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
                    raise TrainingError(
                        f"The total loss became {float(total)} at epoch {epoch}, step "
                        f"{global_step + 1} ({shown}); lower the learning rate or the task weights."
                    )
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                global_step += 1
                steps += 1
                figures = {f"loss/{name}": value.item() for name, value in terms.items()}
                figures["loss/total"] = total.item()
                for key, value in figures.items():
                    sums[key] = sums.get(key, 0.0) + value
                if global_step % self.log_every == 0:
                    session.log_metrics(figures, step=global_step)
                session.step_done(epoch, global_step)
                if session.stop_requested:
                    stopped = True
                    break
            if stopped and steps < steps_per_epoch:
                # A stop mid-epoch: keep the work in a checkpoint; the epoch does not count.
                state = self.state(everything, optimizer, epoch - 1, global_step)
                session.save_checkpoint(state, epoch - 1, global_step, partial=True)
                epoch -= 1
                break
            epoch_figures = {f"epoch/{key}": total / steps for key, total in sums.items()}
            epoch_figures.update(
                self.evaluate(session.tasks, network, heads, batch_of, val_idx, train_idx, labels)
            )
            session.end_epoch(epoch, epoch_figures, global_step)
            if self.recon_images and len(val_idx) + len(train_idx) > 0:
                session.log_image(
                    "reconstructions",
                    self.reconstruction_grid(network, images, val_idx, train_idx),
                    epoch,
                )
            last = epoch == session.start_epoch + session.epochs
            if last or stopped or (epoch - session.start_epoch) % self.checkpoint_every == 0:
                session.save_checkpoint(
                    self.state(everything, optimizer, epoch, global_step), epoch, global_step
                )
            if stopped:
                break
        session.log_predictions(self.predict_frame(session.tasks, everything, images, truth))
        session.log_model(everything, example=data.images[:2].copy())

    # --- pieces of the loop ------------------------------------------------------------------

    def split(self, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Hold out unlabeled samples for validation; labeled ones always train."""
        import torch

        rng = np.random.default_rng(self.seed)
        unlabeled = np.flatnonzero(labels < 0)
        n_val = min(self.val_max, int(len(labels) * self.val_fraction), max(0, len(unlabeled) - 1))
        val = (
            np.sort(rng.choice(unlabeled, size=n_val, replace=False))
            if n_val > 0
            else np.empty(0, np.int64)
        )
        mask = np.ones(len(labels), dtype=bool)
        mask[val] = False
        return torch.from_numpy(np.flatnonzero(mask)), torch.from_numpy(val.astype(np.int64))

    @staticmethod
    def loss_terms(tasks: list[Task], heads: Any, batch: Batch, out: Outputs) -> dict[str, Any]:
        terms: dict[str, Any] = {}
        for task in tasks:
            terms.update(task.terms(batch, out, head_of(heads, task)))
        return terms

    def evaluate(
        self,
        tasks: list[Task],
        network: Any,
        heads: Any,
        batch_of: Callable[[Any], Batch],
        val_idx: Any,
        train_idx: Any,
        labels: Any,
    ) -> dict[str, float]:
        """Validation losses and each task's metrics (labeled metrics on the labeled samples)."""
        import torch

        figures: dict[str, float] = {}
        network.eval()
        with torch.no_grad():
            if len(val_idx):
                batch = batch_of(val_idx)
                out = network(batch.x)
                terms = self.loss_terms(tasks, heads, batch, out)
                figures.update({f"val/loss/{k}": float(v) for k, v in terms.items()})
                figures["val/loss/total"] = float(sum(terms.values()))
                for task in tasks:
                    module = head_of(heads, task)
                    for name, value in task.metrics(batch, out, module).items():
                        figures[f"eval/{task.name}/{name}"] = value
            labeled = train_idx[labels[train_idx] >= 0][:2000]
            if len(labeled):
                batch = batch_of(labeled)
                batch.true_labels = None
                out = network(batch.x)
                for task in tasks:
                    module = head_of(heads, task)
                    for name, value in task.metrics(batch, out, module).items():
                        figures.setdefault(f"eval/{task.name}/{name}", value)
        return figures

    def reconstruction_grid(
        self, network: Any, images: Any, val_idx: Any, train_idx: Any
    ) -> np.ndarray:
        import torch

        pool = val_idx if len(val_idx) >= self.recon_images else train_idx
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(
            rng.choice(len(pool), size=min(self.recon_images, len(pool)), replace=False)
        )
        x = images[pool[torch.from_numpy(chosen)]]
        network.eval()
        with torch.no_grad():
            x_hat = network(x).x_hat
        scale = max(1, 64 // x.shape[-1])
        return image_grid([x.numpy(), x_hat.numpy()], scale)

    def predict_frame(self, tasks: list[Task], model: Any, images: Any, truth: Any) -> Any:
        """Latent, predicted class, certainty and class probabilities of every sample."""
        import pandas as pd
        import torch

        network, heads = model.network, model.heads
        predictor = next((t for t in tasks if t.predicts_classes and t.name in heads), None)
        latents, probabilities = [], []
        network.eval()
        with torch.no_grad():
            for start in range(0, len(images), 4096):
                out = network(images[start : start + 4096])
                latents.append(out.mu.numpy())
                if predictor is not None:
                    logits = predictor.predict(out, heads[predictor.name])
                    probabilities.append(torch.softmax(logits, dim=1).numpy())
        latent = np.concatenate(latents).astype(np.float32)
        frame = pd.DataFrame({f"z{i}": latent[:, i] for i in range(latent.shape[1])})
        if probabilities:
            probs = np.concatenate(probabilities).astype(np.float32)
            frame["predicted"] = probs.argmax(axis=1).astype(np.int16)
            frame["certainty"] = probs.max(axis=1)
            for k in range(probs.shape[1]):
                frame[f"p{k}"] = probs[:, k]
        else:
            frame["predicted"] = np.full(len(latent), -1, dtype=np.int16)
            frame["certainty"] = np.full(len(latent), np.nan, dtype=np.float32)
        if truth is not None:
            frame["true_label"] = truth.numpy().astype(np.int16)
        frame.index.name = "sample_index"
        return frame

    # --- outside training: the app's labeling map ---------------------------------------------

    def predictions(
        self, data: DataBundle, tasks: list[Task], state: dict[str, Any] | None = None
    ) -> Any:
        """Per-sample predictions from a checkpoint, or from the untrained model if None."""
        import torch

        torch.set_num_threads(resolve_threads(self.threads))
        model = self.build_model(data.info, tasks)
        if state is not None:
            self.load_weights(model, state)
        truth = torch.from_numpy(data.true_labels) if data.true_labels is not None else None
        return self.predict_frame(tasks, model, torch.from_numpy(data.images), truth)

    def evaluate_state(
        self, data: DataBundle, tasks: list[Task], state: dict[str, Any] | None, labels: np.ndarray
    ) -> dict[str, float]:
        """The figures `fit` logs each epoch, for a checkpoint, on the same split."""
        import torch

        torch.set_num_threads(resolve_threads(self.threads))
        model = self.build_model(data.info, tasks)
        if state is not None:
            self.load_weights(model, state)
        images = torch.from_numpy(data.images)
        labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        truth = torch.from_numpy(data.true_labels) if data.true_labels is not None else None
        train_idx, val_idx = self.split(np.asarray(labels))

        def batch_of(idx: torch.Tensor) -> Batch:
            return Batch(images[idx], labels_t[idx], truth[idx] if truth is not None else None, idx)

        return self.evaluate(
            tasks, model.network, model.heads, batch_of, val_idx, train_idx, labels_t
        )

    def reconstruct(
        self, data: DataBundle, tasks: list[Task], state: dict[str, Any] | None, indices: list[int]
    ) -> np.ndarray:
        """Reconstructions (N, C, H, W) in [0, 1] of the given samples."""
        import torch

        model = self.build_model(data.info, tasks)
        if state is not None:
            self.load_weights(model, state)
        model.eval()
        with torch.no_grad():
            out = model.network(torch.from_numpy(data.images[np.asarray(indices)]))
        return out.x_hat.numpy()

    def state(self, modules: Any, optimizer: Any, epoch: int, global_step: int) -> dict[str, Any]:
        return {
            "trainer": self.kind,
            "model": modules.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "global_step": global_step,
        }


@hookimpl
def register_trainers(register: Callable[[type], None]) -> None:
    register(SSVAETrainer)
