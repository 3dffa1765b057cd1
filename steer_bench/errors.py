"""The one exception type the CLI turns into a clean message (no traceback) and exit status 2."""


class SteerBenchError(Exception):
    """A user-facing error: bad config, bad input data, missing file. The message names the culprit."""


class NonFiniteError(SteerBenchError):
    """A NaN/inf loss, gradient, weight, log-prob or logit: the run stops and keeps its last good checkpoint."""


class SelectionOverlapError(SteerBenchError):
    """``data.selection`` shares a dataset or a problem (normalized text) with a reported benchmark: a checkpoint
    selected on it would be graded on its own selection set."""
