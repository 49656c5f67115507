"""Starting configurations for new models."""

from __future__ import annotations

from dataclasses import dataclass, field

from activelab.errors import InvalidConfigError


@dataclass(frozen=True)
class Preset:
    description: str
    lr: float
    # task name -> weight, for the built-in tasks (reconstruction, kl, classification)
    weights: dict[str, float] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "default": Preset(
        "Balanced: a faithful reconstruction and a smooth latent map.",
        lr=1e-3,
        weights={"reconstruction": 1000.0, "kl": 0.1, "classification": 1.0},
    ),
    "high_recon": Preset(
        "Sharper reconstructions; a looser latent (KL weight 0.01).",
        lr=1e-3,
        weights={"reconstruction": 5000.0, "kl": 0.01, "classification": 1.0},
    ),
    "classification": Preset(
        "Labels shape the latent: classification weight 10.",
        lr=1e-3,
        weights={"reconstruction": 500.0, "kl": 0.1, "classification": 10.0},
    ),
}

DEFAULT_PRESET = "default"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise InvalidConfigError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    return PRESETS[name]
