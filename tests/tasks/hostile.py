"""A plugin file whose every text is markup (for the injection test): class names, docs,
parameter docs, and a kind that is not a name at all."""

import param

from activelab import Task, hookimpl
from activelab.tasks.datasets import Digits

MARK = '<img src=x onerror="window.__xss = (window.__xss || 0) + 1">'


class HostileDigits(Digits):
    kind = "hostile_digits"
    __doc__ = f"digits whose classes are markup {MARK} dataset-doc"

    def info(self):
        info = super().info()
        classes = tuple(f"c{i} {MARK}" for i in range(len(info.classes)))
        return type(info)(info.kind, info.size, classes, info.image_shape, info.has_true_labels)

    def load(self, progress=None):
        bundle = super().load(progress)
        return type(bundle)(bundle.images, bundle.true_labels, self.info())


class HostileTask(Task):
    kind = "hostile_task"
    __doc__ = f"a task documented in markup {MARK} task-doc"
    weight_of_it = param.Number(0.0, bounds=(0, 1), doc=f"param doc {MARK} param-doc")

    def loss(self, batch, out, module):
        return out.mu.sum() * 0.0


class NotAName(Task):
    kind = f"bad {MARK}"

    def loss(self, batch, out, module):
        return out.mu.sum() * 0.0


@hookimpl
def register_datasets(register):
    register(HostileDigits)


@hookimpl
def register_tasks(register):
    register(HostileTask)
    register(NotAName)
