"""A task file that uses hookimpls instead of bare Task subclasses."""

from activelab import Task, hookimpl


class Hooked(Task):
    """A zero loss registered through register_tasks."""

    kind = "hooked"

    def loss(self, batch, out, module):
        return out.mu.sum() * 0


@hookimpl
def register_tasks(register):
    register(Hooked)
