"""The one boundary between yolo_ext and Ultralytics / torch: every change made to them, done by :func:`install` and
undone by :func:`uninstall`.

``import yolo_ext`` calls :func:`install` (idempotent), because checkpoints holding yolo_ext modules must load, and
YAMLs naming them must build, in any process that imports them: a DDP worker, ``yolo`` itself loading a checkpoint.
:func:`uninstall` puts Ultralytics and torch back exactly as they were (``tests/test_integration.py`` compares every
function, name, callback and safe global before and after). What :func:`install` changes, and why:

=====================================================  ==============================================================
``ultralytics.nn.tasks.parse_model`` and its            the edited parser (:mod:`.parser`): yolo_ext modules get their
re-export ``ultralytics.nn.parse_model``                channels, repeats and head as Ultralytics' own; YAML mistakes
                                                        are named by layer
``ultralytics.nn.tasks.<Name>``, one per YAML-named     so a YAML names them; ``_yolo_ext_<kind>``: the frozensets the
module, and ``_yolo_ext_attention`` / ``_c3k2``         edited parser reads (kept equal to the spec table)
``guess_model_task`` in ``ultralytics.engine.model``    a yolo_ext YAML without an output head says so
``yaml_model_load`` in ``ultralytics.nn.tasks`` and     the scale letter ``b`` (YOLOv10), and the unscaled file found
``ultralytics.engine.model``                            by file name (:mod:`.yaml_loader`)
``default_callbacks["on_pretrain_routine_start"]``      a trainer built on a pruned checkpoint keeps the pruned network
                                                        (:func:`yolo_ext.train.keep_pruned.keep_pruned_network`)
``ultralytics.engine.model.Model.train``                the same, where that callback does not run (DDP parents,
                                                        ``YOLO`` objects made before the import)
torch's safe globals (``add_safe_globals``)             yolo_ext's pickled classes load with ULTRALYTICS_SAFE_LOAD=1
``forward`` of classes whose spec says                  gradient checkpointing while training, when switched on
``checkpoint=True``                                     (:mod:`yolo_ext.train.grad_checkpoint`)
=====================================================  ==============================================================

While installed, the integration follows the spec table (:func:`yolo_ext.register_module` adds a name, a class on
the safe-globals list and, with ``checkpoint=True``, a forward wrapper; :func:`yolo_ext.unregister_module` takes them
away). Gates: Ultralytics must be :data:`SUPPORTED_ULTRALYTICS` and its parser of the shape the edit expects, else
:class:`RegistrationError` and nothing is changed; torch without ``add_safe_globals`` (before 2.4) skips that step,
as Ultralytics' own restricted loading needs torch 2.6.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import torch
import ultralytics
from ultralytics.nn import tasks

from yolo_ext.integration.parser import (
    SUPPORTED_ULTRALYTICS,
    LayerIndexError,
    ModelYAMLError,
    NoHeadError,
    RegistrationError,
    UnknownModuleError,
    build_parser,
    kind_set,
    make_entry,
    make_task_guard,
)
from yolo_ext.integration.yaml_loader import read_extra_scale
from yolo_ext.registry import spec as spec_table
from yolo_ext.registry.spec import PARSE_KINDS
from yolo_ext.train import grad_checkpoint

__all__ = [
    "SUPPORTED_ULTRALYTICS", "LayerIndexError", "ModelYAMLError", "NoHeadError", "RegistrationError",
    "UnknownModuleError", "install", "is_installed", "uninstall",
]

_LOCK = threading.RLock()
_MISSING = object()


class _Installation:
    """What one :func:`install` changed, each with how to undo it: replaced attributes (with their originals) and
    list entries, in order, plus the safe globals and forward wrappers it added. Undone in reverse order."""

    def __init__(self) -> None:
        self.changes: dict[tuple[int, str], tuple[Any, str, Callable[[], None]]] = {}  # insertion-ordered
        self.safe_globals: list[type] = []
        self.checkpointed: set[type] = set()

    def set(self, owner: Any, name: str, value: Any) -> None:
        """``setattr(owner, name, value)`` on a module or class, remembering the original the first time."""
        key = (id(owner), name)
        if key not in self.changes:
            original = vars(owner).get(name, _MISSING)
            self.changes[key] = (owner, name, lambda: _put_back(owner, name, original))
        setattr(owner, name, value)

    def append(self, entries: list, item: Any, what: str) -> None:
        """``entries.append(item)``; undone by removing that entry."""
        entries.append(item)
        self.changes[(id(entries), what)] = (entries, what, lambda: entries.remove(item) if item in entries else None)

    def names_on(self, owner: Any) -> list[str]:
        """The attributes of ``owner`` this installation replaced or added."""
        return [name for o, name, _ in self.changes.values() if o is owner]

    def reset(self, owner: Any, name: str) -> None:
        """Put one attribute back as it was before the installation."""
        change = self.changes.pop((id(owner), name), None)
        if change is not None:
            change[2]()

    def undo(self) -> None:
        for cls in list(self.checkpointed):
            grad_checkpoint.uninstall(cls)
        self.checkpointed = set()
        _remove_safe_globals(self.safe_globals)
        self.safe_globals = []
        for _, _, undo in reversed(list(self.changes.values())):
            undo()
        self.changes = {}


def _put_back(owner: Any, name: str, original: Any) -> None:
    if original is _MISSING:
        if name in vars(owner):
            delattr(owner, name)
    else:
        setattr(owner, name, original)


_STATE: _Installation | None = None


def is_installed() -> bool:
    """Whether the integration is installed in this process and Ultralytics knows every registered module."""
    with _LOCK:
        if _STATE is None or not getattr(tasks.parse_model, "yolo_ext", False):
            return False
        specs = [s for s in spec_table.specs() if s.parse is not None]
        return all(getattr(tasks, s.name, None) is s.cls for s in specs) and all(
            getattr(tasks, kind_set(k), None) == frozenset(s.cls for s in specs if s.parse == k) for k in PARSE_KINDS
        )


def _check_versions() -> None:
    from ultralytics.utils.checks import check_version

    if not check_version(ultralytics.__version__, SUPPORTED_ULTRALYTICS):
        raise RegistrationError(
            f"yolo_ext supports ultralytics{SUPPORTED_ULTRALYTICS}, found {ultralytics.__version__}; nothing was "
            f"changed. Install a supported one: pip install 'ultralytics{SUPPORTED_ULTRALYTICS}'."
        )


def install() -> None:
    """Make every change of the table above (idempotent). All or nothing: a step that fails undoes the others.

    Raises:
        RegistrationError: an Ultralytics version or parser yolo_ext cannot extend; Ultralytics is left unchanged.
    """
    global _STATE
    with _LOCK:
        if _STATE is not None:
            _sync()
            return
        _check_versions()
        state = _Installation()
        _STATE = state
        try:
            _install(state)
            _sync()
        except BaseException:
            _STATE = None
            state.undo()
            raise
        spec_table.subscribe(_sync)


def uninstall() -> None:
    """Undo :func:`install`: Ultralytics' functions, names and callbacks, torch's safe globals and the forwards of
    checkpointable classes are as they were before. The spec table stays; :func:`install` applies it again."""
    global _STATE
    with _LOCK:
        spec_table.unsubscribe(_sync)
        state, _STATE = _STATE, None
        if state is not None:
            state.undo()


def _install(state: _Installation) -> None:
    from ultralytics.engine import model as engine_model
    from ultralytics.utils.callbacks.base import default_callbacks

    from yolo_ext.train import keep_pruned

    parser = make_entry(build_parser(tasks.parse_model))
    state.set(tasks, "parse_model", parser)
    nn_package = sys.modules.get("ultralytics.nn")
    if nn_package is not None and hasattr(nn_package, "parse_model"):
        state.set(nn_package, "parse_model", parser)  # the re-export names the same function
    state.set(engine_model, "guess_model_task", make_task_guard(engine_model.guess_model_task))
    for home in (tasks, engine_model):  # both bind the YAML loader by name
        state.set(home, "yaml_model_load", read_extra_scale(home.yaml_model_load))
    if keep_pruned.EVENT not in default_callbacks:
        raise RegistrationError(f"Ultralytics has no {keep_pruned.EVENT!r} callback event; yolo_ext needs "
                                f"ultralytics{SUPPORTED_ULTRALYTICS}.")
    state.append(default_callbacks[keep_pruned.EVENT], keep_pruned.keep_pruned_network, "keep_pruned_network")
    state.set(engine_model.Model, "train", keep_pruned.wrap_train(engine_model.Model.train))


def _pickled_classes() -> list[type]:
    """Classes a checkpoint may pickle: every nn.Module class defined in yolo_ext.nn (inner blocks included), the
    distillation wrapper a distillation run's ``last.pt`` holds, and each registered module of the user's with the
    nn.Module classes defined beside it."""
    from yolo_ext.train import distill

    homes = {name for name in sys.modules if name == "yolo_ext.nn" or name.startswith("yolo_ext.nn.")}
    homes |= {s.cls.__module__ for s in spec_table.specs() if s.parse is not None and s.cls.__module__ != "__main__"}
    classes = [
        obj
        for name in sorted(homes)
        if (mod := sys.modules.get(name)) is not None
        for obj in vars(mod).values()
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == name
    ]
    registered = [s.cls for s in spec_table.specs() if s.parse is not None and s.cls not in classes]
    return [*classes, *dict.fromkeys(registered), distill.PrunedDistillationModel, distill.DistillWeights]


def _safe_globals_supported() -> bool:
    return all(hasattr(torch.serialization, f) for f in ("add_safe_globals", "get_safe_globals", "clear_safe_globals"))


def _remove_safe_globals(ours: list[type]) -> None:
    """Take ``ours`` off torch's safe globals, leaving every other entry (torch has no call to remove one)."""
    if not ours or not _safe_globals_supported():
        return
    current = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals([g for g in current if not (isinstance(g, type) and g in ours)])


def _sync() -> None:
    """Make Ultralytics and torch match the spec table: YAML names, kind sets, safe globals, forward wrappers."""
    with _LOCK:
        state = _STATE
        if state is None:
            return
        yaml_specs = [s for s in spec_table.specs() if s.parse is not None]
        names = {s.name for s in yaml_specs}
        fixed = {"parse_model", "yaml_model_load", *(kind_set(k) for k in PARSE_KINDS)}
        for name in state.names_on(tasks):  # names of modules that were unregistered since
            if name not in fixed and name not in names:
                state.reset(tasks, name)
        for s in yaml_specs:
            if tasks.__dict__.get(s.name) is not s.cls:
                state.set(tasks, s.name, s.cls)
        for kind in PARSE_KINDS:
            members = frozenset(s.cls for s in yaml_specs if s.parse == kind)
            if tasks.__dict__.get(kind_set(kind)) != members:
                state.set(tasks, kind_set(kind), members)
        if _safe_globals_supported():
            wanted = _pickled_classes()
            gone = [c for c in state.safe_globals if c not in wanted]
            _remove_safe_globals(gone)
            present = set(g for g in torch.serialization.get_safe_globals() if isinstance(g, type))
            new = [c for c in wanted if c not in present]
            torch.serialization.add_safe_globals(new)
            state.safe_globals = [c for c in state.safe_globals if c not in gone] + new
        checkpointed = {s.cls for s in spec_table.specs() if s.checkpoint}
        for cls in state.checkpointed - checkpointed:
            grad_checkpoint.uninstall(cls)
        for cls in checkpointed - state.checkpointed:
            grad_checkpoint.install(cls)
        state.checkpointed = checkpointed
