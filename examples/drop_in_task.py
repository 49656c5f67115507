"""A drop-in activelab task: copy this file into a watched task folder and it is available
at once, without a restart:

    cp examples/drop_in_task.py ~/.activelab/tasks/
    activelab tasks add MODEL latent_norm --weight 0.5 --slice 0:2

Edit it and the next run uses the new code; delete it and it disappears.
"""

import param

from activelab import Task


class LatentNorm(Task):
    """Keeps the latent map compact: mean |z|^p of the latent means."""

    kind = "latent_norm"

    power = param.Number(2.0, bounds=(1, 4), doc="Exponent of the norm.")

    def loss(self, batch, out, module):
        return self.latent(out.mu).abs().pow(self.power).sum(dim=1).mean()

    def metrics(self, batch, out, module):
        return {"mean_norm": float(self.latent(out.mu).norm(dim=1).mean())}
