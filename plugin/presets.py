"""Starting configurations for new models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from activelab.errors import InvalidConfigError

# Images get consistency under augmentation: the network learns what stays the same when a
# picture is moved, turned or noisier, which pixel distances never see.
IMAGE_TASKS = {"consistency": 1.0}
# A conv step costs ~20x an MLP step on a CPU: half the batch keeps a round near a minute;
# batch norm takes a larger learning rate (one fresh run on hard digits at 50 labels: 53 %
# at lr 1e-3, 62 % at 3e-3; with consistency threshold 0.8, 72 % at 3e-3, 75 % at 6e-3).
IMAGE_TRAINER: dict[str, Any] = {"batch_size": 64, "lr": 6e-3}
# The map of the conv network only draws its latent, so its classes may pull harder: hard
# digits at 50 labels, 5-NN accuracy on the map over 3 seeds 85.0 % at 3 vs 82.7 % at 1
# (10 gave no more); the classifier is untouched.
IMAGE_TASK_PARAMS: dict[str, dict[str, Any]] = {"map": {"class_pull": 3.0}}


@dataclass(frozen=True)
class Preset:
    description: str
    lr: float
    # task name -> weight, for the built-in tasks (reconstruction, kl, classification)
    weights: dict[str, float] = field(default_factory=dict)
    # tasks added for image data (see activelab.dataset.is_image_data)
    image_weights: dict[str, float] = field(default_factory=lambda: dict(IMAGE_TASKS))
    # trainer settings for image data
    image_trainer: dict[str, Any] = field(default_factory=lambda: dict(IMAGE_TRAINER))
    # task name -> params, for image data
    image_task_params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {k: dict(v) for k, v in IMAGE_TASK_PARAMS.items()}
    )


# Task name -> weight. Reconstruction is a mean squared error per pixel, KL is summed over
# the latent, classification and map are per-sample means; the default learns from few labels.
PRESETS: dict[str, Preset] = {
    "default": Preset(
        "Learns from few labels: labels spread over the data, a map with one island per class.",
        lr=1e-3,
        weights={"reconstruction": 50.0, "kl": 0.01, "classification": 1.0, "map": 1.0},
    ),
    "high_recon": Preset(
        "Sharper reconstructions (reconstruction weight 250); classes a little less apart.",
        lr=1e-3,
        weights={"reconstruction": 250.0, "kl": 0.01, "classification": 1.0, "map": 1.0},
    ),
    "classification": Preset(
        "Labels shape the latent: classification weight 3, a light reconstruction.",
        lr=1e-3,
        weights={"reconstruction": 10.0, "kl": 0.01, "classification": 3.0, "map": 1.0},
    ),
}

DEFAULT_PRESET = "default"

# The app's Quick start: a digits model seeded with this many true labels per class.
QUICK_START_LABELS_PER_CLASS = 3


def quick_start_labels(truth: Any, per_class: int = QUICK_START_LABELS_PER_CLASS) -> dict:
    """{sample index: class} for Quick start: `per_class` samples of each class, drawn with a
    fixed seed so every Quick start begins alike."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        int(i): int(c)
        for c in np.unique(truth)
        for i in rng.choice(np.flatnonzero(truth == c), per_class, replace=False)
    }


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise InvalidConfigError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    return PRESETS[name]
