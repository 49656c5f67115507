"""A task that fails on purpose after a few steps (for crash handling tests)."""

import param

from activelab import Task


class CrashAfter(Task):
    """Raises RuntimeError once it has seen `steps` batches."""

    kind = "crash_after"
    steps = param.Integer(3, doc="Batches before the crash.")

    def loss(self, batch, out, module):
        self._seen = getattr(self, "_seen", 0) + 1
        if self._seen > self.steps:
            raise RuntimeError("boom: the crash_after task failed on purpose")
        return out.mu.sum() * 0
