"""The one error type of latency measurement: a backend that is missing or cannot run, or settings it cannot use."""


class LatencyError(ValueError):
    """A latency request that cannot be served (missing runtime package, no GPU, bad deployment settings)."""
