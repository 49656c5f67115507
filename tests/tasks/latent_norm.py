"""A drop-in task: keep the latent near the origin."""

import param

from activelab import Task


class LatentNorm(Task):
    """Mean squared norm of the latent mean."""

    kind = "latent_norm"
    power = param.Number(2.0, bounds=(1, 4), doc="Exponent of the norm.")

    def loss(self, batch, out, module):
        return self.latent(out.mu).abs().pow(self.power).sum(dim=1).mean()
