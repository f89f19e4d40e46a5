"""Errors a user can cause when pruning; each message says what to do instead."""


class PruningError(ValueError):
    """A pruning request that cannot be carried out (bad option, unsupported model)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written as asked."""


class PrunedModelError(RuntimeError):
    """The pruned model is inconsistent; the message names the layer. Nothing was saved."""
