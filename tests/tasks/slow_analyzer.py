"""An analyzer that stays half-way until the test has seen its progress (progress in the app).

It waits on a file, not on the clock: the test creates `slow_analyzer.go` beside this file
once the page shows "1 of 3 done · about … left", so a slow browser can never miss the moment.
"""

import time
from pathlib import Path

from activelab import Analyzer, AnalyzerResult, hookimpl

GO = Path(__file__).with_name("slow_analyzer.go")
WAIT_S = 120  # bounded: a test that never says go fails here with a message


class SlowSteps(Analyzer):
    """Three steps, each reported; the second waits for the test's go-ahead."""

    kind = "slow_steps"

    def analyze(self, inputs):
        inputs.progress(0, 3, "step 1")
        inputs.progress(1, 3, "step 2")
        deadline = time.monotonic() + WAIT_S
        while not GO.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{GO} did not appear within {WAIT_S} s")
            time.sleep(0.05)  # polling the file the test creates
        inputs.progress(2, 3, "step 3")
        return AnalyzerResult("Slow steps", note="All three steps ran.")


@hookimpl
def register_analyzers(register):
    register(SlowSteps)
