"""Gradient (activation) checkpointing for the attention and RepViT blocks: recompute them in backward, save memory.

Training with several attention blocks at imgsz 640 runs out of memory on small cards; with checkpointing on, a
checkpointable block keeps only its input for backward and recomputes its inner activations when backward needs
them (``torch.utils.checkpoint``, ``use_reentrant=False``). Switch it on with::

    YOLO_EXT_CHECKPOINT=1 yolo-ext train model=yolo11n-coordatt.yaml ...     # CLI, DDP workers included
    yolo_ext.set_checkpointing(True)                                         # Python, for the rest of the process
    with yolo_ext.checkpointing():                                           # Python, for a block
        model.train(...)

**Why a global setting and not a YAML argument.** Memory is a property of the training run (the card, batch size and
image size), not of the model: the same weights train with it on a small card and without it on a large one, and
the switch must never reach inference or export. A YAML argument would be baked into every layer and pickled into
every checkpoint, and the parser gives C3k2-kind modules no slot for one (see ``C3k2_RVB_SE``). The setting lives in
the environment variable ``YOLO_EXT_CHECKPOINT`` (``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``),
which :func:`set_checkpointing` writes: Ultralytics' DDP workers are fresh processes that inherit the environment and
nothing else of ours, and the ``yolo-ext`` CLI needs no key that Ultralytics' argument check would refuse. One
setting, read at every checkpointable forward, so turning it off takes effect at once.

**Which modules.** Those whose :class:`~yolo_ext.registry.spec.ModuleSpec` says ``checkpoint=True`` (one line each in
:mod:`yolo_ext.registry.modules`: CoordAtt, MCA, ContextAggregation, and RepViTBlock, the blocks inside
C3k2_RVB(_SE)). While :mod:`yolo_ext.integration` is installed, it follows the table: :func:`install` wraps the
``forward`` of every such class, and removing the spec (or uninstalling the integration) unwraps it. So a
module registered with ``yolo_ext.register_module(cls, checkpoint=True)`` opts in the same way, and no module's
forward holds checkpointing code.

**When.** Only if the switch is on, the module is in training mode, grad is enabled, nothing is tracing, exporting or
compiling (``torch.jit.is_tracing``, ``torch.onnx.is_in_onnx_export``, ``torch.compiler.is_exporting`` /
``is_compiling``: checkpoint's own context managers are not allowed under ``torch.compile``, which plans activation
memory itself), and the module is not inside another checkpointed one (the outer recomputation covers it). Eval
mode (validation, the EMA copy, prediction), ``torch.no_grad`` and ``torch.inference_mode`` pay only these checks.

**BatchNorm.** A recomputation runs the forward a second time in training mode, and torch lets every BatchNorm in it
update its running statistics again (pytorch/pytorch#96136, open): momentum applied twice, ``num_batches_tracked``
counted twice. torchvision's memory-efficient DenseNet lives with that; fairscale's ``patch_batchnorm`` updates the
stats only when grad is enabled, which fits the reentrant checkpoint (its first pass runs without grad) but not this
one; pytorch-pfn-extras lowers the momentum so that two updates compound to one (approximate, still counts twice, and
the non-reentrant checkpoint may stop a recomputation early, before later BNs run). Here the running buffers of every
training BatchNorm in the module are copied when a recomputation starts and put back when it ends (the recompute
context of ``checkpoint(context_fn=...)``, whose exit also runs on an early stop). The recomputation normalises with
the same batch statistics as the first pass, so outputs and gradients are those without checkpointing, and the
running stats are bit-identical to one update. Switching stat tracking off during the recomputation instead would
change what ``batch_norm`` saves for backward, which checkpoint refuses ("a different number of tensors was saved").
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

__all__ = [
    "ENV_VAR",
    "checkpointing",
    "checkpointing_enabled",
    "install",
    "is_installed",
    "set_checkpointing",
    "uninstall",
]

ENV_VAR = "YOLO_EXT_CHECKPOINT"
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})
_MARK = "_yolo_ext_checkpointed"  # set on our forward wrappers
# Not in every torch this package supports (>= 2.1): where one is missing, that kind of tracing does not exist there.
_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


def checkpointing_enabled() -> bool:
    """Whether checkpointable modules run under ``torch.utils.checkpoint`` while training (``YOLO_EXT_CHECKPOINT``).

    Raises:
        ValueError: the variable holds something else than an on or off word; the message says what to write.

    Examples:
        >>> with checkpointing(False):
        ...     checkpointing_enabled()
        False
    """
    raw = os.environ.get(ENV_VAR, "")
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(
        f"{ENV_VAR}={raw!r} is not understood: set it to 1 to checkpoint the attention blocks while training, "
        "to 0 (or unset it) to train without"
    )


def set_checkpointing(enabled: bool) -> None:
    """Switch checkpointing on or off for this process and the processes it starts (DDP workers).

    Writes ``YOLO_EXT_CHECKPOINT``, so children inherit it; :func:`checkpointing` puts the previous value back.

    Args:
        enabled (bool): ``True`` to checkpoint checkpointable modules while training.

    Examples:
        >>> with checkpointing(False):
        ...     set_checkpointing(True)
        ...     checkpointing_enabled()
        True
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"set_checkpointing takes True or False, got {enabled!r}")
    os.environ[ENV_VAR] = "1" if enabled else "0"


@contextlib.contextmanager
def checkpointing(enabled: bool = True) -> Iterator[None]:
    """Checkpointing on (or off) inside the block; the environment variable is put back as it was, even on errors.

    Examples:
        >>> with checkpointing():
        ...     checkpointing_enabled()
        True
    """
    before = os.environ.get(ENV_VAR)
    try:
        set_checkpointing(enabled)
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


# --------------------------------------------------------------------------------------------------------------------
# The forward wrapper the integration installs on checkpointable classes
# --------------------------------------------------------------------------------------------------------------------

_LOCAL = threading.local()  # depth of checkpointed forwards on this thread (recomputation may run on a backward thread)
_OWN_FORWARDS: dict[type, Any] = {}  # installed class -> the forward it defined itself before (None: it inherited one)


def _should_checkpoint(module: nn.Module) -> bool:
    """The conditions of the module docstring, cheapest first (the switch is read last: training-only cost)."""
    return (
        module.training
        and torch.is_grad_enabled()
        and not getattr(_LOCAL, "depth", 0)
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and not _is_compiling()
        and not _is_exporting()
        and checkpointing_enabled()
    )


class _KeepBatchNormStats:
    """Recompute context: running stats of the module's training BatchNorms are put back when recomputation ends.

    A class rather than a generator: backward with ``retain_graph=True`` recomputes again, entering it twice.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [
            (t, t.clone())
            for bn in self.module.modules()
            if isinstance(bn, _BatchNorm) and bn.training and bn.track_running_stats
            for t in (bn.running_mean, bn.running_var, bn.num_batches_tracked)
            if t is not None
        ]

    def __exit__(self, *exc: object) -> bool:
        with torch.no_grad():
            for t, value in self.saved:
                t.copy_(value)
        self.saved = []
        return False  # an early stop (or any error) goes on up


def _run_inside(forward: Callable[..., Any], module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The original forward, marked as running inside a checkpoint so nested checkpointable modules run plainly."""
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        return forward(module, *args, **kwargs)
    finally:
        _LOCAL.depth -= 1


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward`` run under ``torch.utils.checkpoint`` when :func:`_should_checkpoint` says so, else unchanged."""

    @functools.wraps(forward)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if not _should_checkpoint(self):
            return forward(self, *args, **kwargs)
        return checkpoint(
            functools.partial(_run_inside, forward),
            self,
            *args,
            use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), _KeepBatchNormStats(self)),
            **kwargs,
        )

    setattr(wrapper, _MARK, True)
    return wrapper


def install(cls: type[nn.Module]) -> None:
    """Wrap ``cls.forward`` so instances are checkpointed while the switch is on (idempotent).

    Called by :mod:`yolo_ext.integration` for specs with ``checkpoint=True``. An inherited forward is wrapped on
    ``cls`` itself
    (the base class is left alone); a base class's wrapper is unwrapped first, so nothing is checkpointed twice.
    """
    if cls in _OWN_FORWARDS:
        return
    forward = cls.forward
    if getattr(forward, _MARK, False):
        forward = forward.__wrapped__
    _OWN_FORWARDS[cls] = cls.__dict__.get("forward")
    cls.forward = _checkpointed(forward)


def uninstall(cls: type[nn.Module]) -> None:
    """Put back the forward ``cls`` had before :func:`install` (nothing if it was not installed)."""
    if cls not in _OWN_FORWARDS:
        return
    own = _OWN_FORWARDS.pop(cls)
    if own is None:
        del cls.forward
    else:
        cls.forward = own


def is_installed(cls: type) -> bool:
    """Whether ``cls`` itself has the checkpointing wrapper (installed for its spec)."""
    return cls in _OWN_FORWARDS
