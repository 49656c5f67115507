"""A file that defines only an analyzer (no task): it registers through its own hook."""

from activelab import Analyzer, AnalyzerResult


class Count(Analyzer):
    """How many samples the checkpoint predicted."""

    kind = "count_only"

    def analyze(self, given):
        return AnalyzerResult(title="count", note=str(len(given.predictions)))
