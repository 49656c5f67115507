"""A plain FixMatch CNN (Sohn et al. 2020), the baseline `bench_learning.py --data
hard-digits` measures activelab against on the same labels. No activelab code: the paper's
recipe at a CPU's scale.

- a 5-layer CNN (3x3 convolutions, batch norm, leaky ReLU, two stride-2 layers, global mean
  pooling), the labeled batch B and mu*B unlabeled samples per step;
- weak view: a random shift of up to 12.5 %; strong view: random rotation, scale, shear and
  shift, contrast and brightness, Gaussian noise and a cutout of half the image (RandAugment's
  spirit, drawn per sample, on whole batches);
- loss: cross-entropy on the weakly augmented labeled batch plus, on the unlabeled batch, the
  cross-entropy of the strong view against the weak view's class where its confidence is at
  least 0.95;
- Adam at lr 3e-3 with the paper's cosine decay. (The paper's SGD at lr 0.03 is made for
  a million steps; on the bench's seed-0 labels SGD for 1,500 steps gave 72.2 % and Adam for
  1,824 steps 72.9 %; in a trial on 5 labels of each class Adam reached 84 % in 1,600 steps.)
"""

from __future__ import annotations

import math

import numpy as np


def network(classes: int, width: int = 16):
    from torch import nn

    def block(inputs: int, outputs: int, stride: int) -> list:
        return [
            nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.LeakyReLU(0.1),
        ]

    return nn.Sequential(
        *block(1, width, 1), *block(width, width, 2), *block(width, 2 * width, 1),
        *block(2 * width, 2 * width, 2), *block(2 * width, 4 * width, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, classes),
    )  # fmt: skip


def _affine(x, degrees: float, scale: float, shear: float, shift: float):
    import torch
    import torch.nn.functional as F

    n = x.shape[0]

    def uniform(spread: float):
        return (torch.rand(n) * 2 - 1) * spread

    angle, size, slant = uniform(math.radians(degrees)), 1 + uniform(scale), uniform(shear)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos / size, (slant * cos - sin) / size
    theta[:, 1, 0], theta[:, 1, 1] = sin / size, (cos + slant * sin) / size
    theta[:, 0, 2], theta[:, 1, 2] = uniform(2 * shift), uniform(2 * shift)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def weak(x):
    return _affine(x, 0, 0, 0, 0.125)


def strong(x):
    import torch

    x = _affine(x, 30, 0.2, 0.3, 0.125)
    n, _c, h, w = x.shape
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    gain = 0.5 + torch.rand(n, 1, 1, 1) * 0.8
    x = (x - mean) * gain + mean + (torch.rand(n, 1, 1, 1) - 0.5) * 0.4
    x = x + torch.randn_like(x) * torch.rand(n, 1, 1, 1) * 0.15
    side = h // 2
    top = torch.randint(0, h, (n, 1, 1)) - side // 2
    left = torch.randint(0, w, (n, 1, 1)) - side // 2
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    hole = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return x.masked_fill(hole[:, None], 0.5).clamp(0, 1)


def fixmatch_accuracy(
    images: np.ndarray,
    labels: dict[int, int],
    truth: np.ndarray,
    test: np.ndarray,
    steps: int,
    seed: int,
    batch: int = 32,
    mu: int = 4,
    threshold: float = 0.95,
    bf16: bool = False,
) -> float:
    """Test accuracy (%) of FixMatch trained `steps` steps from `labels` ({index: class}),
    with every sample as unlabeled data (the semi-supervised setting). `bf16`: forward passes
    in bfloat16 autocast (what activelab's conv network takes where the CPU computes it)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(images)
    labeled = np.array(sorted(labels))
    targets = torch.tensor([labels[i] for i in labeled])
    model = network(int(truth.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: math.cos(7 * math.pi * step / (16 * steps))
    )
    model.train()
    half = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    for _ in range(steps):
        picked = rng.integers(0, len(labeled), batch)
        unlabeled = x[rng.integers(0, len(x), batch * mu)]
        with torch.no_grad(), half:
            confidence, guessed = F.softmax(model(weak(unlabeled)).float(), dim=1).max(dim=1)
        with half:
            logits = model(torch.cat([weak(x[labeled[picked]]), strong(unlabeled)])).float()
        supervised = F.cross_entropy(logits[:batch], targets[picked])
        mask = (confidence >= threshold).float()
        consistency = (F.cross_entropy(logits[batch:], guessed, reduction="none") * mask).mean()
        optimizer.zero_grad(set_to_none=True)
        (supervised + consistency).backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x[test][i : i + 1024]) for i in range(0, len(test), 1024)])
    return float((predicted.argmax(dim=1).numpy() == truth[test]).mean() * 100)
