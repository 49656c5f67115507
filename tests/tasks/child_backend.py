"""A launcher backend from a dropped-in file: it runs the worker as
`python -m activelab.worker -` with the spec in $ACTIVELAB_LAUNCH_SPEC, the way a cluster's
job would, in a child process whose output goes to $CHILD_LOG."""

import os
import subprocess
import sys

import activelab
from activelab.backend import Job


class ChildJob(Job):
    def __init__(self, process):
        self.process = process

    def exit_reason(self):
        code = self.process.poll()
        return None if code is None else f"the child exited with {code}"

    def wait(self, timeout):
        self.process.wait(timeout)


class Child(activelab.Backend):
    """Runs the worker in a child process, as a cluster's job would."""

    kind = "child"

    def start(self, spec, tracking):
        spec.home = ""  # the worker's own $ACTIVELAB_HOME, as on another machine
        env = {**os.environ, "ACTIVELAB_LAUNCH_SPEC": spec.to_json()}
        with open(os.environ.get("CHILD_LOG", os.devnull), "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "activelab.worker", "-"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return ChildJob(process)


@activelab.hookimpl
def register_backends(register):
    register(Child)
