"""Which modules yolo_ext knows and what it knows about each: the spec table and how your own module joins it.

- :mod:`.spec`: :class:`ModuleSpec` (parse, prune, check and checkpoint rules of one class) and the table;
- :mod:`.modules`: the shipped spec lines, one per module;
- :func:`register_module` / :func:`unregister_module`: your own module's line.

Nothing here touches Ultralytics: :mod:`yolo_ext.integration` follows the table while it is installed (``import
yolo_ext`` installs it), making every registered name resolvable in model YAMLs.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

from torch import nn

from yolo_ext.registry.spec import PARSE_KINDS, PRUNE_KINDS, ModuleSpec, SpecError, add, remove, specs

__all__ = [
    "PARSE_KINDS", "PRUNE_KINDS", "ModuleSpec", "SpecError", "register_module", "registered_modules",
    "unregister_module",
]

_LOCK = threading.RLock()


def registered_modules() -> list[str]:
    """Names of the modules yolo_ext adds to Ultralytics YAMLs (shipped and user-registered)."""
    return sorted(spec.name for spec in specs() if spec.parse is not None)


def register_module(
    cls: type[nn.Module],
    *,
    name: str | None = None,
    parse: str = "attention",
    prune: str | type | Callable | None = None,
    check: Callable[[nn.Module], str | None] | None = None,
    groups: Callable[[nn.Module], int] | None = None,
    checkpoint: bool = False,
) -> type[nn.Module]:
    """Make your own module usable in model YAMLs, pruning, the validator, checkpoints and export.

    The simplest form registers a channel-preserving module whose constructor takes its input channels first (the
    YAML args follow); pruning traces through it, so its inner convs follow the channels it is given. Returns
    ``cls``, so it also works as a class decorator (``@functools.partial(register_module, parse="c3k2")``).

    Call it in the file that defines the class: loading a checkpoint imports that file (pickle stores the import
    path), so the module is registered wherever the checkpoint is loaded.

    Args:
        cls: the ``nn.Module`` class; defined in an importable module, not in ``__main__``, or checkpoints holding it
            will not load elsewhere.
        name: the name YAMLs use; defaults to ``cls.__name__``.
        parse: ``"attention"`` (``cls(c1, *args)``, channel preserving) or ``"c3k2"`` (``cls(c1, c2, n, *args)`` with
            C3k2's width scaling, repeats, ``c3k`` for m/l/x and head); see :data:`yolo_ext.registry.spec.PARSE_KINDS`.
        prune: ``None`` to trace through the module (or inherit a registered base class's rule, e.g. C2f's split);
            a repair function ``fn(layer, idxs)`` to prune it as one channel-preserving leaf: Torch-Pruning removes
            channels ``idxs`` at its input and output and the function removes them from its weights; or a
            :class:`yolo_ext.prune.leaves.LeafPruner` subclass.
        check: ``fn(layer) -> str | None`` run by the validator after every pruning: what is inconsistent, or None.
        groups: for a leaf, ``fn(layer) -> int`` equal channel groups that must lose the same positions.
        checkpoint: recompute the module in backward instead of keeping its activations, while training with
            checkpointing switched on (``YOLO_EXT_CHECKPOINT=1``, :func:`yolo_ext.set_checkpointing`); see
            :mod:`yolo_ext.train.grad_checkpoint`.

    Returns:
        ``cls``.

    Raises:
        yolo_ext.SpecError: the class or its YAML name is registered already, the name is an Ultralytics
            module's, or an argument cannot work; the message says what to change.

    Examples:
        >>> class Gate(nn.Module):
        ...     def __init__(self, c1, r=4):
        ...         super().__init__()
        ...         self.fc = nn.Sequential(nn.Conv2d(c1, c1 // r, 1), nn.ReLU(), nn.Conv2d(c1 // r, c1, 1))
        ...     def forward(self, x):
        ...         return x * self.fc(x.mean((2, 3), keepdim=True)).sigmoid()
        >>> register_module(Gate) is Gate
        True
        >>> unregister_module(Gate)
    """
    spec = ModuleSpec(cls, parse=parse, prune=prune, check=check, groups=groups, name=name or "", checkpoint=checkpoint)
    from ultralytics.nn import tasks  # read only: which names Ultralytics' parser already resolves

    with _LOCK:
        taken = tasks.__dict__.get(spec.name) if spec.parse is not None else None
        if taken is not None and not any(other.cls is taken for other in specs()):
            raise SpecError(
                f"The YAML name {spec.name!r} is already Ultralytics' {getattr(taken, '__module__', 'ultralytics')}."
                f"{spec.name}; register {cls.__qualname__} under another name (name='My{spec.name}')."
            )
        if cls.__module__ == "__main__":
            warnings.warn(
                f"{cls.__qualname__} is defined in __main__: checkpoints that contain it will only load in this "
                "script. "
                "Move the class (and its register_module call) into an importable module.",
                stacklevel=2,
            )
        add(spec)  # the integration, while installed, follows the table (and refuses what Ultralytics cannot take)
    return cls



def unregister_module(cls: type[nn.Module]) -> None:
    """Undo :func:`register_module` for ``cls`` (shipped modules cannot be removed): its YAML name, its rules, its
    checkpointing wrapper and its place on torch's safe-load list go."""
    with _LOCK:
        remove(cls)
