"""What yolo_ext knows about one module class, in one place: :class:`ModuleSpec`, and the table of them.

A spec says how Ultralytics' model parser gives the module its channels and repeats (``parse``), how the pruner treats
it (``prune``: a kind, or the leaf rule itself), what the validator checks after pruning (``check``) and whether
training may recompute it to save memory (``checkpoint``). Each rule is on the spec line or named by it; the rest is
derived from the table:

- the parser edit and the YAML names (:mod:`yolo_ext.integration`, which follows the table while installed),
- Torch-Pruning's customised pruners for leaves (:func:`yolo_ext.prune.leaves.leaf_pruners`),
- which blocks get their ``cv1`` split while pruning (:func:`yolo_ext.prune.split.is_split_block`),
- the validator's per-layer checks (:func:`yolo_ext.prune.validate.check_model`),
- the package's exported module classes and the parametrized tests over all modules,
- the gradient-checkpointing wrapper on the forward of checkpointable classes (:mod:`yolo_ext.train.grad_checkpoint`,
  put on and taken off by :mod:`yolo_ext.integration`).

The shipped spec lines are in :mod:`yolo_ext.registry.modules`; :func:`yolo_ext.register_module` adds a user's own.

The table is keyed by exact class, as Torch-Pruning's ``customized_pruners`` are. Lookups for splits and checks walk
the class's MRO (a ``C3k2`` is split like the ``C2f`` it subclasses, every ``nn.Conv2d`` subclass gets the conv
check); a leaf rule applies to its exact class only, because a subclass may change the weights its repair edits.

This file imports no other yolo_ext module, so every consumer can import it without cycles. Whoever must follow the
table (the integration, while installed) subscribes with :func:`subscribe` and is called after every change.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn
from ultralytics.nn.modules import C2PSA, PSA, C2f

__all__ = [
    "PARSE_KINDS", "PRUNE_KINDS", "ModuleSpec", "SpecError", "add", "checks_for", "prune_kind", "remove", "spec_for",
    "specs", "subscribe", "unsubscribe",
]

# How Ultralytics' parser builds a layer of each kind from a YAML line [from, repeats, Name, args].
PARSE_KINDS: dict[str, str] = {
    "attention": "channel preserving: built as Name(c1, *args) with c1 the channels of the layer it follows; "
    "outputs as many channels",
    "c3k2": "exactly as Ultralytics' C3k2: Name(c1, c2 scaled by width, repeats, *args), c3k forced on for scales "
    "m/l/x, and the same (non-legacy) Detect head",
}

# How the pruner treats a module whose ``prune`` is a string; a leaf rule is a LeafPruner subclass or a function.
PRUNE_KINDS: dict[str, str] = {
    "trace": "Torch-Pruning traces through its forward: inner convs follow the channels they are given",
    "split": "a C2f / C2PSA / PSA-layout block: cv1 is split into two tied convs while pruning (chunk is mis-mapped)",
}

# The block layouts a split can reproduce (cv1 halved, ``self.c`` per half; see yolo_ext.prune.split).
SPLIT_BASES: tuple[type[nn.Module], ...] = (C2f, C2PSA, PSA)

# Positional constructor arguments the parser passes before the YAML args, per parse kind.
_LEADING_ARGS = {"attention": ("c1",), "c3k2": ("c1", "c2", "n")}


class SpecError(ValueError):
    """A module spec or registration that cannot work; the message says what to change."""


@dataclass(frozen=True)
class ModuleSpec:
    """Everything yolo_ext needs to know about one module class.

    Args:
        cls: the ``nn.Module`` class (keyed by exact class).
        parse: a :data:`PARSE_KINDS` key, or ``None`` for classes Ultralytics' parser already builds (they are listed
            for their prune rule or check only, and are not named by yolo_ext).
        prune: ``"trace"`` or ``"split"`` (:data:`PRUNE_KINDS`); a leaf rule, i.e. a
            :class:`yolo_ext.prune.leaves.LeafPruner` subclass (built by :func:`yolo_ext.prune.leaves.leaf_pruners`)
            or a repair function ``fn(layer, idxs)`` that removes
            channels ``idxs`` from the layer's weights (input and output are the same channels); or ``None``, which
            inherits the rule of the nearest registered base class (else ``"trace"``).
        check: ``fn(layer) -> str | None``: after pruning, a description of what is inconsistent, or None.
        groups: for a leaf: ``fn(layer) -> int``, the number of equal channel groups that must lose the same positions
            (heads, grouped gates). Torch-Pruning then removes position ``j`` from every group at once.
        name: the YAML name; defaults to the class name.
        checkpoint: whether training runs the module's forward under ``torch.utils.checkpoint`` when checkpointing is
            switched on (``YOLO_EXT_CHECKPOINT=1`` / :func:`yolo_ext.set_checkpointing`); see
            :mod:`yolo_ext.train.grad_checkpoint`. Worth it for blocks whose inner activations are large next to their
            input
            (attention gates, RepViT blocks). Subclasses inherit the wrapped forward unless they define their own.

    Examples:
        >>> ModuleSpec(nn.Identity).name, ModuleSpec(nn.Identity).parse
        ('Identity', 'attention')
    """

    cls: type[nn.Module]
    parse: str | None = "attention"
    prune: str | type | Callable | None = None
    check: Callable[[nn.Module], str | None] | None = None
    groups: Callable[[nn.Module], int] | None = None
    name: str = field(default="")
    checkpoint: bool = False

    def __post_init__(self) -> None:
        """Refuse a spec that cannot work, before anything is registered."""
        cls = self.cls
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise SpecError(f"A module spec needs a torch.nn.Module subclass, got {cls!r}.")
        where = f"Spec for {cls.__name__}"
        if not self.name:
            object.__setattr__(self, "name", cls.__name__)
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise SpecError(f"{where}: name must be a Python identifier (how the YAML names it), got {self.name!r}.")
        if self.parse is not None and self.parse not in PARSE_KINDS:
            raise SpecError(f"{where}: unknown parse kind {self.parse!r}; use one of {', '.join(PARSE_KINDS)}.")
        if isinstance(self.prune, str):
            if self.prune not in PRUNE_KINDS:
                raise SpecError(
                    f"{where}: unknown prune kind {self.prune!r}; use one of {', '.join(PRUNE_KINDS)}, a LeafPruner "
                    "subclass or a repair function fn(layer, idxs)."
                )
            if self.prune == "split" and not issubclass(cls, SPLIT_BASES):
                raise SpecError(
                    f"{where}: prune='split' is for C2f / C2PSA / PSA subclasses; {cls.__name__} is not one."
                )
        elif self.prune is not None and not callable(self.prune):
            raise SpecError(f"{where}: prune must be a prune kind, a LeafPruner subclass or a function, "
                            f"got {self.prune!r}.")
        if not isinstance(self.checkpoint, bool):
            raise SpecError(f"{where}: checkpoint must be True or False, got {self.checkpoint!r}.")
        if self.groups is not None and not self.leaf:
            raise SpecError(f"{where}: groups only applies to a leaf rule (prune=<repair function or LeafPruner>).")
        for arg in ("check", "groups"):
            value = getattr(self, arg)
            if value is not None and not callable(value):
                raise SpecError(f"{where}: {arg} must be a function of the layer, got {value!r}.")
        if self.parse is not None:
            _check_constructor(cls, self.parse)

    @property
    def leaf(self) -> bool:
        """Whether the module is pruned as one channel-preserving leaf with its own rule."""
        return self.prune is not None and not isinstance(self.prune, str)

    def yaml_args(self) -> str:
        """The arguments a model YAML line gives this module, from its constructor: ``[reduction=32]`` for an
        attention-kind module (its channels come from the layer it follows), ``[c2, c3k=False, e=0.5, ...]`` for a
        C3k2-kind one (as Ultralytics' C3k2: ``c1`` and the repeats come from the parser)."""
        if self.parse is None:
            return "[]"
        try:
            params = list(inspect.signature(self.cls.__init__).parameters.values())[1:]
        except (TypeError, ValueError):
            return "[...]"
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        rest = [p.name if p.default is p.empty else f"{p.name}={p.default!r}"
                for p in positional[len(_LEADING_ARGS[self.parse]):]]
        return "[" + ", ".join(["c2", *rest] if self.parse == "c3k2" else rest) + "]"

def _check_constructor(cls: type, parse: str) -> None:
    """The parser passes ``_LEADING_ARGS[parse]`` positionally; refuse a constructor that cannot take them."""
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return  # no signature to read (a C extension): the parser will say what fails
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    need = _LEADING_ARGS[parse]
    if len(positional) < len(need):
        call = f"{cls.__name__}({', '.join(need)}, *yaml_args)"
        raise SpecError(
            f"{cls.__name__} cannot be registered with parse={parse!r}: the model parser builds it as {call}, but its "
            f"constructor takes {len(positional)} positional argument(s). Give __init__ {', '.join(need)} first (they "
            "may go unused)."
        )


_LOCK = threading.RLock()
_SPECS: dict[type[nn.Module], ModuleSpec] = {}
_SHIPPED: set[type[nn.Module]] = set()  # the lines of yolo_ext.registry.modules: never removed
_LISTENERS: list[Callable[[], None]] = []


def subscribe(listener: Callable[[], None]) -> None:
    """Call ``listener()`` after every change of the table (idempotent)."""
    with _LOCK:
        if listener not in _LISTENERS:
            _LISTENERS.append(listener)


def unsubscribe(listener: Callable[[], None]) -> None:
    """Stop calling ``listener`` (nothing if it was not subscribed)."""
    with _LOCK:
        if listener in _LISTENERS:
            _LISTENERS.remove(listener)


def _changed() -> None:
    for listener in list(_LISTENERS):
        listener()


def add(spec: ModuleSpec, *, shipped: bool = False) -> None:
    """Put ``spec`` in the table; refuses a class registered already or a YAML name another class has. A ``shipped``
    spec (yolo_ext's own lines) cannot be removed.

    If a subscriber fails on the new table (Ultralytics refuses the change), the spec is taken out again and the error
    goes on up: the table and its followers never disagree.
    """
    with _LOCK:
        old = _SPECS.get(spec.cls)
        if old is not None:
            raise SpecError(
                f"{spec.cls.__module__}.{spec.cls.__qualname__} is already registered (YAML name {old.name!r}). "
                "Register each class once; to change its spec, unregister it first (yolo_ext.unregister_module)."
            )
        if spec.parse is not None:
            for other in _SPECS.values():
                if other.parse is not None and other.name == spec.name:
                    raise SpecError(
                        f"The YAML name {spec.name!r} is taken by {other.cls.__module__}.{other.cls.__qualname__}; "
                        f"register {spec.cls.__qualname__} under another name (name='My{spec.name}')."
                    )
        _SPECS[spec.cls] = spec
        if shipped:
            _SHIPPED.add(spec.cls)
        try:
            _changed()
        except BaseException:
            del _SPECS[spec.cls]
            _changed()
            raise


def remove(cls: type[nn.Module]) -> ModuleSpec:
    """Take ``cls``'s spec out of the table and return it."""
    with _LOCK:
        if cls in _SHIPPED:
            raise SpecError(f"{cls.__qualname__} ships with yolo_ext and cannot be unregistered.")
        if cls not in _SPECS:
            raise SpecError(f"{getattr(cls, '__qualname__', cls)!r} is not registered.")
        spec = _SPECS.pop(cls)
        _changed()
        return spec


def specs() -> list[ModuleSpec]:
    """All specs, in registration order (shipped ones first)."""
    with _LOCK:
        return list(_SPECS.values())


def spec_for(cls: type) -> ModuleSpec | None:
    """The spec of ``cls`` or of its nearest registered base class."""
    for base in cls.__mro__:
        if base in _SPECS:
            return _SPECS[base]
    return None


def prune_kind(cls: type) -> str:
    """``"leaf"``, ``"split"`` or ``"trace"``: the rule of the nearest class in the MRO whose spec sets one.

    A leaf rule found on a base class does not apply (Torch-Pruning matches leaves by exact class): such a subclass
    is traced unless it has its own spec.
    """
    for base in cls.__mro__:
        spec = _SPECS.get(base)
        if spec is None or spec.prune is None:
            continue
        if spec.leaf:
            return "leaf" if base is cls else "trace"
        return spec.prune
    return "trace"


def checks_for(cls: type) -> list[Callable[[nn.Module], str | None]]:
    """Every check that applies to ``cls``: its own spec's and those of its registered base classes."""
    return [_SPECS[base].check for base in cls.__mro__ if base in _SPECS and _SPECS[base].check is not None]
