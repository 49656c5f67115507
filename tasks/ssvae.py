"""The built-in trainer: a semi-supervised VAE that learns from few labels.

Encoder -> (mu, logvar) -> a latent wide enough to classify -> decoder; a 2-D head draws the
latent as the labeling map, and task modules (the classifier head) sit on the latent. Each
step trains on anchors, one data-graph neighbour of each (the map keeps neighbours together)
and every labeled sample; the classifier also learns the labels propagated from the person's
over the data graph (see `activelab.tasks.neighbors`). The loss is the sum of the enabled
tasks' terms; the loop reports everything through the TrainingSession.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import param

from activelab.dataset import is_image_data
from activelab.errors import InvalidConfigError, TrainingError
from activelab.hookspecs import hookimpl
from activelab.task import Batch, Outputs, parse_latent_slice
from activelab.trainer import Trainer

log = logging.getLogger(__name__)
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")
PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}  # -> torch dtype name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from activelab.dataset import DataBundle, DatasetInfo
    from activelab.runtime import TrainingSession
    from activelab.task import Task


def head_of(heads: Any, task: Task) -> Any:
    """The module a task owns, or None."""
    return heads[task.name] if task.name in heads else None  # noqa: SIM401 (ModuleDict has no .get)


# (architecture, weights, size) -> feature width, so building a model loads no network twice
_FEATURE_WIDTHS: dict[tuple[str, str, int], int] = {}


def classifier_of(tasks: list[Task], heads: Any) -> Callable[[Outputs], Any]:
    """Class logits of a batch's outputs from the task that predicts classes (None without
    one): what `Batch.classify` gives tasks such as consistency."""
    predictor = next((t for t in tasks if t.predicts_classes and t.name in heads), None)

    def classify(out: Outputs) -> Any:
        return predictor.predict(out, heads[predictor.name]) if predictor else None

    return classify


def network_input(batch: Batch) -> Any:
    """What the network reads for a batch: its images, or their pretrained features."""
    return batch.x if batch.inputs is None else batch.inputs


# Samples per forward pass outside training: a conv network's activations for a few hundred
# images stay in the CPU's caches (measured on 5,391 28x28 images, one thread: 0.8 s in chunks
# of 256, 2.8 s in chunks of 4,096).
INFERENCE_CHUNK = 256


def outputs_in_chunks(network: Any, images: Any, chunk: int = INFERENCE_CHUNK) -> Outputs:
    """The network's outputs for many images, computed a chunk at a time (a conv network's
    activations for thousands of images at once take gigabytes)."""
    import torch

    parts = [network(images[start : start + chunk]) for start in range(0, len(images), chunk)]
    joined = {
        f.name: None if getattr(parts[0], f.name) is None
        else torch.cat([getattr(part, f.name) for part in parts])
        for f in fields(Outputs)
    }  # fmt: skip
    return Outputs(**joined)  # type: ignore[arg-type]  # mu, logvar, z are never None


def resolve_threads(requested: int) -> int:
    """0 = leave one core for the app, MLflow and the OS (2 threads collapse under load)."""
    if requested > 0:
        return requested
    return max(1, (os.cpu_count() or 2) - 1)


def _torch(threads: int) -> Any:
    """torch, with its thread count set for this trainer."""
    import torch

    torch.set_num_threads(resolve_threads(threads))
    return torch


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


@dataclass
class LoopState:
    """What the loop carries from step to step."""

    model: Any
    optimizer: Any
    global_step: int = 0
    precision: MixedPrecision | None = None


class MixedPrecision:
    """The network's forward pass in a lower-precision format (torch.autocast), its outputs
    back in fp32 for the tasks' losses, and loss scaling for fp16 (whose small gradients
    would underflow). `dtype` None: plain fp32."""

    def __init__(self, device_type: str, dtype: str | None) -> None:
        import torch

        self.device_type = device_type
        self.dtype = getattr(torch, dtype) if dtype else None
        self.scaler = torch.amp.GradScaler(device_type, enabled=dtype == "float16")

    def forward(self, network: Any, x: Any, decode: bool = True) -> Outputs:
        import torch

        if self.dtype is None:
            return network(x, decode=decode)
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = network(x, decode=decode)
        return Outputs(**{f.name: _fp32(getattr(out, f.name)) for f in fields(out)})

    def step(self, total: Any, optimizer: Any) -> None:
        """backward() and the optimizer's step (scaled for fp16)."""
        self.scaler.scale(total).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def native_bf16(device: Any) -> bool:
    """Whether `device` computes bfloat16 in hardware (a GPU that supports it; a CPU with
    AVX512-BF16 or AMX), where bf16 autocast pays; elsewhere it is emulated and slower."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private in torch 2.x
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def _fp32(tensor: Any) -> Any:
    return tensor.float() if tensor is not None else None


@dataclass
class TrainingData:
    """The tensors one run trains on, and how its batches are drawn."""

    images: Any  # (N, C, H, W) float tensor
    labels: Any  # (N,) user labels, -1 where unlabeled
    truth: Any  # (N,) true classes or None
    propagated: Any  # (N,) labels propagated over the data graph, or None
    certainty: Any  # (N,) their certainty in [0, 1], or None
    train_idx: np.ndarray  # samples the loss sees
    val_idx: np.ndarray  # unlabeled samples held out for validation
    graph: np.ndarray  # (len(train_idx), k) neighbours, as positions in train_idx
    # how often the graph recovers a hidden label (None: too few labels), and the weight its
    # propagated labels get from that
    heldout_accuracy: float | None = None
    graph_trust: float = 1.0
    # what the network reads when it is not the images (pretrained features), (N, D)
    features: Any = None

    @property
    def inputs(self) -> Any:
        """What the network reads: the images, or their pretrained features."""
        return self.images if self.features is None else self.features

    def batch(self, idx: np.ndarray, pairs: np.ndarray | None = None) -> Batch:
        import torch

        device = self.images.device
        index = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(device)
        return Batch(
            self.images[index],
            self.labels[index],
            self.truth[index] if self.truth is not None else None,
            index,
            pairs=torch.from_numpy(pairs).to(device) if pairs is not None else None,
            propagated=self.propagated[index] if self.propagated is not None else None,
            propagated_certainty=self.certainty[index] if self.certainty is not None else None,
            inputs=self.features[index] if self.features is not None else None,
        )

    def to(self, device: Any) -> TrainingData:
        """The same data with its tensors on `device` (a GPU holds the whole data set: the
        data sets here are small next to a GPU's memory, and batches then cost no copies)."""

        def moved(tensor: Any) -> Any:
            return tensor.to(device) if tensor is not None else None

        return dataclasses.replace(
            self, images=moved(self.images), labels=moved(self.labels), truth=moved(self.truth),
            propagated=moved(self.propagated), certainty=moved(self.certainty),
            features=moved(self.features),
        )  # fmt: skip


class SSVAETrainer(Trainer):
    """Semi-supervised VAE with a 2-D labeling map, trained on the data graph and its labels."""

    kind = "ssvae"
    # Parameters that change the network's shape: a checkpoint made with other values
    # cannot be continued.
    architecture_params = ("latent_dim", "hidden_dims", "encoder", "conv_width", "features")

    latent_dim = param.Integer(
        16,
        bounds=(1, 256),
        doc="Latent dimensions the classifier reads; a 2-D head draws them as the labeling "
        "map (2 = the latent is the map).",
    )
    hidden_dims = param.List(
        [256, 256], item_type=int, doc="Hidden layer widths of the MLP encoder."
    )
    encoder: param.Selector[str] = param.Selector(
        default="auto",
        objects=["auto", "mlp", "conv"],
        doc="The network that reads the samples: conv (convolutions, for images), mlp "
        "(flattened pixels, for small or non-image inputs) or auto (conv for images of at "
        "least 16x16 pixels).",
    )
    conv_width = param.Integer(
        16, bounds=(4, 256), doc="Channels of the first convolutions (conv encoder)."
    )
    map_shapes_latent: param.Selector[str] = param.Selector(
        default="auto",
        objects=["auto", "yes", "no"],
        doc="Whether the map's loss also shapes the latent (yes), or the map only draws it "
        "(no); auto: yes for the MLP (its pixel neighbours are good ones), no for the conv "
        "network (its latent learns from augmentations, and pixel neighbours of varied "
        "images mislead it).",
    )
    features = param.String(
        "",
        doc="A torchvision classifier (e.g. resnet18) whose frozen features the model learns "
        "on, for photos; its weights come from features_weights or torch's cache (nothing is "
        "downloaded). Empty: the model reads the pixels.",
    )
    features_weights = param.String(
        "", doc="The pretrained network's weights (a state dict saved with torch.save)."
    )
    features_size = param.Integer(
        64, bounds=(16, 512), doc="Images are resized to this for the pretrained network."
    )
    graph: param.Selector[str] = param.Selector(
        default="auto",
        objects=["auto", "pixels", "latent"],
        doc="What the data graph (label propagation, the map's neighbours) is built on: the "
        "pixels, the model's own latent once trained, or auto (the latent when a task makes "
        "it augmentation-invariant, e.g. consistency; else the pixels).",
    )
    graph_every = param.Integer(
        0,
        bounds=(0, None),
        doc="Rebuild a latent graph every N epochs (0 = about every 150 steps).",
    )
    lr = param.Number(
        1e-3, bounds=(0, 1), inclusive_bounds=(False, True), doc="Adam learning rate."
    )
    batch_size = param.Integer(128, bounds=(1, 65536), doc="Anchor samples per step.")
    epochs = param.Integer(
        0,
        bounds=(0, 100000),
        doc="Epochs per run unless the launch says; 0 = enough steps for the data set's size.",
    )
    checkpoint_every = param.Integer(10, bounds=(1, None), doc="Save a checkpoint every N epochs.")
    val_fraction = param.Number(
        0.1, bounds=(0, 0.5), doc="Unlabeled samples held out for validation."
    )
    val_max = param.Integer(1000, bounds=(0, None), doc="At most this many validation samples.")
    neighbours = param.Integer(
        15, bounds=(1, 200), doc="Neighbours per sample in the data graph the map follows."
    )
    propagation_neighbours = param.Integer(
        5, bounds=(1, 200), doc="Of those, the nearest that spread the labels."
    )
    labeled_per_batch = param.Integer(
        128, bounds=(0, 65536), doc="Labeled samples added to every step (all when fewer)."
    )
    seed = param.Integer(0, doc="Seed for initialisation, splits and shuffling.")
    threads = param.Integer(0, bounds=(0, 256), doc="Torch threads (0 = cores - 1).")
    device = param.String(
        "auto",
        doc="Where to train: auto (a CUDA GPU when the worker has one, else the CPU), cpu, "
        "cuda or cuda:N.",
    )
    precision: param.Selector[str] = param.Selector(
        default="auto",
        objects=["auto", *PRECISIONS],
        doc="Number format of the network's forward pass: fp32, or bf16 mixed precision "
        "(weights, losses and optimizer stay fp32; 1.1x-1.9x faster on CPUs with AMX or "
        "AVX512-BF16 and on recent GPUs, more for wider networks) or fp16 (CUDA only, with loss "
        "scaling). auto: bf16 for the convolutional network where the hardware computes bf16 "
        "natively (hard digits at 50 labels, one seed: 91.7 % vs 91.9 % in fp32, rounds 1.55x "
        "faster on AVX512-BF16); else fp32.",
    )
    log_every = param.Integer(1, bounds=(1, None), doc="Log step losses every N steps.")
    log_model = param.Boolean(
        True,
        doc="Log the final model as an MLflow pyfunc (predict on images or files, register, "
        "serve). "
        "Off, a run ends ~5 s sooner in a fresh worker (the model export and MLflow's "
        "environment check); checkpoints hold the weights either way.",
    )
    recon_images = param.Integer(8, bounds=(0, 64), doc="Samples in the reconstruction grid.")

    # A fresh run takes about this many steps, a continued one half, at most MAX_AUTO_EPOCHS.
    AUTO_STEPS = 600
    MIN_AUTO_EPOCHS = 3
    MAX_AUTO_EPOCHS = 100
    # Reconstruction grids per run (MLflow's image grid; one per epoch would be 50 on digits).
    IMAGES_PER_RUN = 10
    # The per-epoch whole-data figures read at most this many samples (the same ones every
    # epoch); the run's final accuracy on every unlabeled sample comes from its predictions.
    # the per-epoch `eval/` figures read this many samples at most (about a point of standard
    # error; the final accuracy reads every sample)
    EVAL_MAX = 2000
    # A latent data graph is rebuilt about this often (graph_every=0).
    GRAPH_STEPS = 150
    # A graph that recovers at least this share of hidden labels spreads them at full
    # certainty; a worse one in proportion (pixel graphs of digits: 0.7-1.0, so digits learns
    # as before; of rotated, noisy digits: 0.36-0.64).
    TRUSTED_GRAPH_ACCURACY = 0.7

    @classmethod
    def check_value(cls, pname: str, value: Any) -> None:
        super().check_value(pname, value)
        if pname == "hidden_dims" and any(width < 1 for width in value):
            raise InvalidConfigError(
                f"ssvae parameter 'hidden_dims': {value!r} has a layer narrower than 1; "
                "give positive widths, e.g. [256, 256]."
            )
        if pname == "hidden_dims" and not value:
            raise InvalidConfigError("ssvae parameter 'hidden_dims': give at least one layer.")
        if pname == "device" and not DEVICE_NAME.fullmatch(str(value)):
            raise InvalidConfigError(
                f"ssvae parameter 'device': {value!r} is not a device; use auto, cpu, cuda or "
                "cuda:N (N = the GPU's number)."
            )

    def resolve_device(self) -> Any:
        """The torch device to train on; a clear error when the worker has no such GPU."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda"):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            number = int(self.device.partition(":")[2] or 0)
            if number >= count:
                has = f"GPUs cuda:0 to cuda:{count - 1}" if count else "no CUDA GPU"
                raise TrainingError(
                    f"device={self.device} was asked for, but this worker has {has}; use "
                    "device=auto (a GPU when there is one) or device=cpu."
                )
        return torch.device(self.device)

    def resolved_precision(self, device: Any, network_kind: str) -> str:
        """`precision`, with auto resolved: bf16 where it pays (see the parameter)."""
        if self.precision != "auto":
            return str(self.precision)
        return "bf16" if network_kind == "conv" and native_bf16(device) else "fp32"

    def mixed_precision(self, device: Any, network_kind: str) -> MixedPrecision:
        """Autocast and loss scaling for `precision` on `device`; a clear error where the
        format cannot run."""
        import torch

        precision = self.resolved_precision(device, network_kind)
        log.info("forward pass in %s (precision=%s)", precision, self.precision)
        if precision == "fp16" and device.type != "cuda":
            raise TrainingError(
                "precision=fp16 needs a CUDA GPU (this run trains on the CPU); use "
                "precision=bf16 on the CPU, or fp32."
            )
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise TrainingError(
                f"precision=bf16: the GPU {device} has no bfloat16 support; use fp16 or fp32."
            )
        return MixedPrecision(device.type, PRECISIONS[precision])

    def default_epochs(self, info: DatasetInfo, resuming: bool) -> int:
        if self.epochs > 0:
            return int(self.epochs)
        trained = info.size - min(self.val_max, int(info.size * self.val_fraction))
        steps_per_epoch = max(1, math.ceil(trained / self.batch_size))
        wanted = self.AUTO_STEPS // 2 if resuming else self.AUTO_STEPS
        epochs = math.ceil(wanted / steps_per_epoch)
        return int(min(self.MAX_AUTO_EPOCHS, max(self.MIN_AUTO_EPOCHS, epochs)))

    def build_model(self, info: DatasetInfo, tasks: list[Task]) -> Any:
        """The network plus the modules the tasks own, as one SSVAEModule (seeded)."""
        import torch

        from activelab.tasks.ssvae_network import SSVAEModule, SSVAENetwork

        torch.manual_seed(self.seed)
        network = SSVAENetwork(
            info.image_shape,
            list(self.hidden_dims),
            self.latent_dim,
            encoder=self.encoder_kind(info),
            conv_width=self.conv_width,
            input_shape=(self.feature_width(),) if self.features else None,
        )
        network.map_shapes_latent = self.map_shapes_latent == "yes" or (
            self.map_shapes_latent == "auto" and network.kind == "mlp"
        )
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

    def encoder_kind(self, info: DatasetInfo) -> str:
        """`encoder`, with auto resolved from the data's shape (pretrained features: mlp)."""
        if self.features:
            return "mlp"
        if self.encoder != "auto":
            return str(self.encoder)
        return "conv" if is_image_data(info) else "mlp"

    def uses_latent_graph(self, tasks: list[Task]) -> bool:
        """`graph`, with auto resolved from the tasks (pretrained features: their graph)."""
        if self.graph == "auto" and self.features:
            return False
        if self.graph != "auto":
            return self.graph == "latent"
        return any(getattr(task, "invariant_latent", False) for task in tasks)

    def extractor(self) -> Any:
        """The frozen pretrained network (`features`), loaded from its weights file."""
        from activelab.tasks.features import FrozenFeatures, weights_file

        weights = weights_file(self.features, self.features_weights)
        return FrozenFeatures(self.features, weights, self.features_size)

    def feature_width(self) -> int:
        """Width of the pretrained features (what the encoder reads)."""
        key = (self.features, self.features_weights, self.features_size)
        if key not in _FEATURE_WIDTHS:
            import torch

            probe = torch.zeros(1, 3, self.features_size, self.features_size)
            _FEATURE_WIDTHS[key] = int(self.extractor()(probe).shape[1])
        return _FEATURE_WIDTHS[key]

    def features_of(self, bundle: DataBundle) -> np.ndarray | None:
        """The data's pretrained features (computed once, then from the data directory's
        cache), or None when the model reads pixels."""
        if not self.features:
            return None
        from activelab.settings import data_dir
        from activelab.tasks.features import features_of, weights_file

        weights = weights_file(self.features, self.features_weights)
        cache = data_dir() / "datasets" / "feature-cache"
        found = features_of(bundle.images, self.features, weights, self.features_size, cache)
        _FEATURE_WIDTHS[(self.features, self.features_weights, self.features_size)] = found.shape[1]
        return found

    def inputs_of(self, bundle: DataBundle) -> np.ndarray:
        """What the network reads of a data set: its images, or their pretrained features."""
        features = self.features_of(bundle)
        return bundle.images if features is None else features

    def load_model(self, info: DatasetInfo, tasks: list[Task], state: dict | None) -> Any:
        """`build_model` with a checkpoint's weights (if any), in eval mode."""
        model = self.build_model(info, tasks)
        if state is not None:
            self.load_weights(model, state)
        model.eval()
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
        torch = _torch(self.threads)
        device = self.resolve_device()
        log.info("training on %s", device)
        latent_graph = self.uses_latent_graph(session.tasks)
        trained = session.resume is not None
        # a trained model's latent replaces the pixel graph at once: skip building that
        data = self.training_data(
            session.data, session.labels, session.tasks, with_graph=not (latent_graph and trained)
        ).to(device)
        loop = self.start_loop(session, device)
        session.log_metrics(self.graph_figures(data), step=session.start_epoch)
        steps_per_epoch = max(1, math.ceil(len(data.train_idx) / self.batch_size))
        session.begin(steps_per_epoch, modules=loop.model, batch_size=self.batch_size)
        rng = np.random.default_rng(self.seed + session.start_epoch)
        first, last = session.start_epoch + 1, session.start_epoch + session.epochs
        image_every = max(1, session.epochs // self.IMAGES_PER_RUN)
        rebuild_every = self.graph_every or max(1, round(self.GRAPH_STEPS / steps_per_epoch))
        for epoch in range(first, last + 1):
            since = epoch - first
            if latent_graph and (trained or since > 0) and since % rebuild_every == 0:
                self.rebuild_graph(session, data, loop.model, epoch - 1)
            sums, steps = self.train_epoch(session, data, loop, epoch, rng)
            if steps < steps_per_epoch:
                # A stop mid-epoch: keep the work in a checkpoint; the epoch does not count.
                state = self.state(loop.model, loop.optimizer, epoch - 1, loop.global_step)
                session.save_checkpoint(state, epoch - 1, loop.global_step, partial=True)
                break
            figures = {f"epoch/{key}": total / steps for key, total in sums.items()}
            figures.update(self.evaluate(session.tasks, loop.model, data))
            session.end_epoch(epoch, figures, loop.global_step)
            done = epoch == last or session.stop_requested
            if self.recon_images and (done or (epoch - first) % image_every == 0):
                session.log_image(
                    "reconstructions", self.reconstruction_grid(loop.model, data), epoch
                )
            if done or (epoch - session.start_epoch) % self.checkpoint_every == 0:
                state = self.state(loop.model, loop.optimizer, epoch, loop.global_step)
                session.save_checkpoint(state, epoch, loop.global_step)
            if session.stop_requested:
                break
        with torch.no_grad():
            frame = self.predict_frame(session.tasks, loop.model, data.inputs, data.truth)
        session.log_predictions(frame)
        self.log_final_accuracy(session, frame)
        # logged for the CPU: it loads anywhere (torch.export traces it with a CPU example)
        if self.log_model:
            logged = loop.model.to("cpu")
            if self.features:  # the logged model takes images, as the data set gives them
                logged.image_features = self.extractor()
            session.log_model(logged, example=session.data.images[:2].copy())

    # --- pieces of the loop ------------------------------------------------------------------

    @staticmethod
    def log_final_accuracy(session: TrainingSession, frame: Any) -> None:
        """`eval/<classifier>/unlabeled_accuracy` over every sample that has a true class and
        no label (the per-epoch figure reads at most EVAL_MAX of them)."""
        predictor = next((t for t in session.tasks if t.predicts_classes), None)
        if predictor is None or "true_label" not in frame or session.epochs_done == 0:
            return
        unlabeled = (session.labels < 0) & (frame["true_label"].to_numpy() >= 0)
        if not unlabeled.any():
            return
        right = (
            frame["predicted"].to_numpy()[unlabeled] == frame["true_label"].to_numpy()[unlabeled]
        )
        epoch = session.start_epoch + session.epochs_done
        session.log_metrics(
            {f"eval/{predictor.name}/unlabeled_accuracy": float(right.mean())}, step=epoch
        )

    def training_data(
        self, bundle: DataBundle, labels: np.ndarray, tasks: list[Task], with_graph: bool = True
    ) -> TrainingData:
        """Tensors, the split, the pixel graph of the training samples and, when a task
        predicts classes, the labels propagated over it (`with_graph=False`: neither)."""
        import torch

        from activelab.tasks.neighbors import neighbours_of

        train_idx, val_idx = self.split(labels)
        features = self.features_of(bundle)
        data = TrainingData(
            images=torch.from_numpy(bundle.images),
            labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
            truth=torch.from_numpy(bundle.true_labels) if bundle.true_labels is not None else None,
            propagated=None,
            certainty=None,
            train_idx=train_idx,
            val_idx=val_idx,
            graph=np.empty((len(train_idx), 0), dtype=np.int64),
            features=torch.from_numpy(features) if features is not None else None,
        )
        if with_graph and len(train_idx) > 1:
            # the pixels' graph, or the pretrained features' (what they are for)
            points = bundle.images if features is None else features
            graph = neighbours_of(points[train_idx], self.neighbours)
            self.use_graph(data, graph, tasks, bundle.info.num_classes)
        return data

    def use_graph(
        self,
        data: TrainingData,
        graph: np.ndarray,
        tasks: list[Task],
        num_classes: int,
        from_latent: bool = False,
    ) -> None:
        """Make `graph` the data graph of `data`, and propagate the labels over it.

        A pixel graph is trusted as far as it recovers hidden labels. A latent graph is not
        checked that way: the latent learned from those very labels, so they cluster by class
        whatever the unlabeled samples do (its propagated labels' accuracy is logged)."""
        import torch

        from activelab.tasks.neighbors import heldout_accuracy, propagate_labels

        data.graph = graph
        labels = data.labels.cpu().numpy()
        if not (graph.shape[1] and any(t.predicts_classes for t in tasks) and (labels >= 0).any()):
            return
        nearest = graph[:, : self.propagation_neighbours]
        spread = propagate_labels(nearest, labels[data.train_idx], num_classes)
        # Guard against a pixel graph that mixes the classes: its held-out accuracy scales
        # every certainty.
        data.heldout_accuracy = None
        data.graph_trust = 1.0
        if not from_latent:
            data.heldout_accuracy = heldout_accuracy(
                nearest, labels[data.train_idx], num_classes, seed=self.seed
            )
        if data.heldout_accuracy is not None:
            data.graph_trust = min(1.0, data.heldout_accuracy / self.TRUSTED_GRAPH_ACCURACY)
        classes = np.full(len(labels), -1, dtype=np.int64)
        sure = np.zeros(len(labels), dtype=np.float32)
        classes[data.train_idx] = spread.classes
        sure[data.train_idx] = spread.certainty * data.graph_trust
        device = data.images.device
        data.propagated = torch.from_numpy(classes).to(device)
        data.certainty = torch.from_numpy(sure).to(device)

    def rebuild_graph(
        self, session: TrainingSession, data: TrainingData, model: Any, epoch: int
    ) -> None:
        """The data graph from the model's own latent (Iscen et al. 2019: neighbours in a
        representation that has learned what stays the same under augmentation), its labels
        propagated again. Propagated labels feed the classifier that shapes the latent, so
        their accuracy on samples with a known class is logged (`graph/propagated_accuracy`):
        confirmation bias shows there first."""
        import torch

        from activelab.tasks.neighbors import nearest_neighbours

        was_training = model.training
        model.eval()
        with torch.no_grad():
            latent = torch.cat(
                [
                    model.network.encode(data.inputs[chunk])[0]
                    for chunk in torch.from_numpy(data.train_idx).split(INFERENCE_CHUNK)
                ]
            )
        model.train(was_training)
        points = torch.nn.functional.normalize(latent, dim=1).cpu().numpy()
        graph = nearest_neighbours(points, self.neighbours, seed=self.seed)
        self.use_graph(data, graph, session.tasks, session.data.info.num_classes, from_latent=True)
        session.log_metrics(self.graph_figures(data), step=epoch)

    @staticmethod
    def graph_figures(data: TrainingData) -> dict[str, float]:
        """How right the propagated labels are where the true class is known (unlabeled
        training samples only), and how much of them is certain."""
        if data.propagated is None or data.certainty is None:
            return {}
        figures = {"graph/trust": data.graph_trust}
        if data.heldout_accuracy is not None:
            figures["graph/heldout_accuracy"] = data.heldout_accuracy
        if data.truth is None:
            return figures
        rows = data.train_idx[data.labels.cpu().numpy()[data.train_idx] < 0]
        truth = data.truth.cpu().numpy()[rows]
        known = truth >= 0
        if not known.any():
            return figures
        guessed = data.propagated.cpu().numpy()[rows][known]
        certainty = data.certainty.cpu().numpy()[rows][known]
        sure = certainty >= 0.5
        figures["graph/propagated_accuracy"] = float((guessed == truth[known]).mean())
        figures["graph/certain_share"] = float(sure.mean())
        if sure.any():
            figures["graph/certain_accuracy"] = float((guessed[sure] == truth[known][sure]).mean())
        return figures

    def start_loop(self, session: TrainingSession, device: Any = "cpu") -> LoopState:
        """The model and optimizer, from the checkpoint the run continues when there is one."""
        import torch

        model = self.build_model(session.data.info, session.tasks).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        precision = self.mixed_precision(torch.device(device), model.network.kind)
        loop = LoopState(model, optimizer, precision=precision)
        if session.resume is not None:
            self.load_weights(model, session.resume)
            if "optimizer" in session.resume and session.resume.get("trainer") == self.kind:
                # If the task list changed since, the optimizer simply starts afresh.
                with contextlib.suppress(ValueError):
                    optimizer.load_state_dict(session.resume["optimizer"])
            loop.global_step = int(session.resume.get("global_step", 0))
        return loop

    def batches(self, data: TrainingData, rng: np.random.Generator) -> Iterator[Batch]:
        """One epoch: every training sample once as an anchor, each with one random graph
        neighbour (the pair the map keeps together), plus the labeled samples."""
        labeled = data.train_idx[data.labels.cpu().numpy()[data.train_idx] >= 0]
        order = rng.permutation(len(data.train_idx))
        k = data.graph.shape[1]
        for start in range(0, len(order), self.batch_size):
            anchors = order[start : start + self.batch_size]
            partners = data.graph[anchors, rng.integers(0, k, len(anchors))]
            extra = labeled
            if len(labeled) > self.labeled_per_batch:
                extra = rng.choice(labeled, self.labeled_per_batch, replace=False)
            idx = np.concatenate([data.train_idx[anchors], data.train_idx[partners], extra])
            rows = np.arange(len(anchors))
            yield data.batch(idx, np.stack([rows, rows + len(anchors)], axis=1))

    def train_epoch(
        self,
        session: TrainingSession,
        data: TrainingData,
        loop: LoopState,
        epoch: int,
        rng: np.random.Generator,
    ) -> tuple[dict[str, float], int]:
        """Steps until the epoch ends or a stop is asked; returns the summed figures and
        the number of steps taken."""
        loop.model.train()
        network, heads = loop.model.network, loop.model.heads
        sums: dict[str, float] = {}
        steps = 0
        precision = loop.precision or MixedPrecision("cpu", None)
        classify = classifier_of(session.tasks, heads)
        reads_images = data.features is None
        # the decoder costs a quarter of a conv step: only when a task reads its output
        decode = any(task.reads_reconstruction for task in session.tasks)
        for batch in self.batches(data, rng):
            if reads_images:  # augmented views of images mean nothing to a features model
                batch.forward = lambda x: precision.forward(network, x, decode=False)
            batch.classify = classify
            out = precision.forward(network, network_input(batch), decode=decode)
            terms = self.loss_terms(session.tasks, heads, batch, out)
            total = session.total_loss(terms, epoch, loop.global_step + 1)
            loop.optimizer.zero_grad(set_to_none=True)
            precision.step(total, loop.optimizer)
            loop.global_step += 1
            steps += 1
            figures = {f"loss/{name}": value.item() for name, value in terms.items()}
            figures["loss/total"] = total.item()
            for key, value in figures.items():
                sums[key] = sums.get(key, 0.0) + value
            if loop.global_step % self.log_every == 0:
                session.log_metrics(figures, step=loop.global_step)
            session.step_done(epoch, loop.global_step)
            if session.stop_requested:
                break
        return sums, steps

    def split(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hold out unlabeled samples for validation; labeled ones always train."""
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
        return np.flatnonzero(mask).astype(np.int64), val.astype(np.int64)

    @staticmethod
    def loss_terms(tasks: list[Task], heads: Any, batch: Batch, out: Outputs) -> dict[str, Any]:
        terms: dict[str, Any] = {}
        for task in tasks:
            terms.update(task.terms(batch, out, head_of(heads, task)))
        return terms

    def evaluate(self, tasks: list[Task], model: Any, data: TrainingData) -> dict[str, float]:
        """`val/loss/<term>` and `val/<task>/<metric>` on the held-out samples, and
        `eval/<task>/<metric>` on every sample (e.g. the accuracy on all unlabeled samples
        that have a true class; at most EVAL_MAX samples, the same ones every epoch)."""
        import torch

        figures: dict[str, float] = {}
        network, heads = model.network, model.heads
        was_training = model.training
        model.eval()
        with torch.no_grad():
            if len(data.val_idx):
                batch = data.batch(data.val_idx)
                batch.classify = classifier_of(tasks, heads)
                out = outputs_in_chunks(network, network_input(batch))
                measured = [t for t in tasks if t.has_validation_loss]
                terms = self.loss_terms(measured, heads, batch, out)
                figures.update({f"val/loss/{k}": float(v) for k, v in terms.items()})
                figures["val/loss/total"] = float(sum(terms.values()))
                figures.update(self.task_metrics(tasks, heads, batch, out, "val"))
            everything = np.arange(len(data.labels))
            if len(everything) > self.EVAL_MAX:
                everything = np.sort(
                    np.random.default_rng(self.seed).choice(everything, self.EVAL_MAX, False)
                )
            batch = data.batch(everything)
            batch.classify = classifier_of(tasks, heads)
            out = outputs_in_chunks(network, network_input(batch))
            figures.update(self.task_metrics(tasks, heads, batch, out, "eval"))
        model.train(was_training)
        return figures

    @staticmethod
    def task_metrics(
        tasks: list[Task], heads: Any, batch: Batch, out: Outputs, prefix: str
    ) -> dict[str, float]:
        figures = {}
        for task in tasks:
            for name, value in task.metrics(batch, out, head_of(heads, task)).items():
                figures[f"{prefix}/{task.name}/{name}"] = value
        return figures

    def reconstruction_grid(self, model: Any, data: TrainingData) -> np.ndarray:
        import torch

        pool = data.val_idx if len(data.val_idx) >= self.recon_images else data.train_idx
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(rng.choice(pool, size=min(self.recon_images, len(pool)), replace=False))
        rows = torch.from_numpy(chosen).to(data.images.device)
        x = data.images[rows]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            x_hat = model.network(data.inputs[rows]).x_hat
        model.train(was_training)
        scale = max(1, 64 // x.shape[-1])
        return image_grid([x.cpu().numpy(), x_hat.cpu().numpy()], scale)

    def predict_frame(self, tasks: list[Task], model: Any, images: Any, truth: Any) -> Any:
        """Per sample: the map (`z0`, `z1`), the latent (`h0..`, when wider than the map),
        predicted class, certainty and class probabilities."""
        import pandas as pd
        import torch

        network, heads = model.network, model.heads
        predictor = next((t for t in tasks if t.predicts_classes and t.name in heads), None)
        maps, latents, probabilities = [], [], []
        model.eval()
        with torch.no_grad():
            for start in range(0, len(images), INFERENCE_CHUNK):
                out = network(images[start : start + INFERENCE_CHUNK], decode=False)
                maps.append(out.map.cpu().numpy())
                latents.append(out.mu.cpu().numpy())
                if predictor is not None:
                    logits = predictor.predict(out, heads[predictor.name])
                    if logits is not None:  # a predicting task returns logits
                        probabilities.append(torch.softmax(logits, dim=1).cpu().numpy())
        points = np.concatenate(maps).astype(np.float32)
        latent = np.concatenate(latents).astype(np.float32)
        columns = {f"z{i}": points[:, i] for i in range(points.shape[1])}
        if network.to_map is not None:
            columns.update({f"h{i}": latent[:, i] for i in range(latent.shape[1])})
        frame = pd.DataFrame(columns)
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
            frame["true_label"] = truth.cpu().numpy().astype(np.int16)
        frame.index.name = "sample_index"
        return frame

    # --- outside training: the app's labeling map ---------------------------------------------

    def predictions(
        self, data: DataBundle, tasks: list[Task], state: dict[str, Any] | None = None
    ) -> Any:
        """Per-sample predictions from a checkpoint, or from the untrained model if None.

        The untrained model places samples by what its random layers see (good enough for a
        first map and for picking typical samples of its clusters), but its classes mean
        nothing: they are left out (`predicted` -1, no certainty or probabilities)."""
        torch = _torch(self.threads)
        model = self.load_model(data.info, tasks, state)
        truth = torch.from_numpy(data.true_labels) if data.true_labels is not None else None
        frame = self.predict_frame(tasks, model, torch.from_numpy(self.inputs_of(data)), truth)
        if state is None:
            frame = frame.drop(
                columns=[c for c in frame.columns if c[:1] == "p" and c[1:].isdigit()]
            )
            frame["predicted"] = np.full(len(frame), -1, dtype=np.int16)
            frame["certainty"] = np.full(len(frame), np.nan, dtype=np.float32)
        return frame

    def evaluate_state(
        self, data: DataBundle, tasks: list[Task], state: dict[str, Any] | None, labels: np.ndarray
    ) -> dict[str, float]:
        """The figures `fit` logs each epoch, for a checkpoint, on the same split."""
        _torch(self.threads)
        model = self.load_model(data.info, tasks, state)
        training = self.training_data(data, np.asarray(labels), tasks, with_graph=False)
        return self.evaluate(tasks, model, training)

    def reconstruct(
        self, data: DataBundle, tasks: list[Task], state: dict[str, Any] | None, indices: list[int]
    ) -> np.ndarray:
        """Reconstructions (N, C, H, W) in [0, 1] of the given samples."""
        torch = _torch(self.threads)
        model = self.load_model(data.info, tasks, state)
        with torch.no_grad():
            inputs = self.inputs_of(data)[np.asarray(indices)]
            out = model.network(torch.from_numpy(inputs))
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
