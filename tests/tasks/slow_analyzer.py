"""An analyzer that takes a few seconds and says how far it is (for progress in the app)."""

import time

from activelab import Analyzer, AnalyzerResult, hookimpl


class SlowSteps(Analyzer):
    """Three slow steps, each reported."""

    kind = "slow_steps"

    def analyze(self, inputs):
        for step in range(3):
            inputs.progress(step, 3, f"step {step + 1}")
            time.sleep(1.0)
        return AnalyzerResult("Slow steps", note="All three steps ran.")


@hookimpl
def register_analyzers(register):
    register(SlowSteps)
