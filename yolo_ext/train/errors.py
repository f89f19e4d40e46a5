"""The error a fine-tuning request that cannot start raises."""


class FinetuneError(ValueError):
    """A fine-tuning request that cannot start (missing or unpruned checkpoint, wrong data); nothing was trained."""
