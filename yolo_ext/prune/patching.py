"""Temporary forwards on module instances, put back exactly as they were.

Pruning runs stand-in forwards while the graph is traced (:mod:`.leaves`) and a split forward while C2f-family blocks
are pruned (:mod:`.split`). A module may already carry an instance ``forward`` (Ultralytics' exporter sets
``m.forward = m.forward_split``; a user may have patched one), so on exit the previous instance attribute is restored,
not deleted.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from torch import nn

_NONE = object()


@contextmanager
def instance_forwards(pairs: Iterable[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Bind each ``fn`` as ``module.forward`` inside the context; restore what each module had on exit."""
    saved = []
    try:
        for module, fn in pairs:
            saved.append((module, module.__dict__.get("forward", _NONE)))
            module.forward = types.MethodType(fn, module)
        yield
    finally:
        for module, previous in reversed(saved):
            if previous is _NONE:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
