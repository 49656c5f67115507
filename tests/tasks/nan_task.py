"""A task whose loss turns into NaN (for the non-finite loss check)."""

from activelab import Task


class NotANumber(Task):
    """Returns NaN from the second batch on."""

    kind = "nan_loss"

    def loss(self, batch, out, module):
        self._seen = getattr(self, "_seen", 0) + 1
        return out.mu.sum() * 0 + (float("nan") if self._seen > 1 else 0.0)
