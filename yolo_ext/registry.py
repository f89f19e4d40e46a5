"""Make yolo_ext modules resolvable in Ultralytics model YAMLs: the one file that touches Ultralytics' parser.

Ultralytics decides inside ``parse_model`` which modules receive ``c1 = ch[f]``, a width-scaled ``c2`` and a repeat
count, from two frozensets built in the function body, and keys the detection head (``legacy``) and the m/l/x ``c3k``
default off ``m is C3k2``. Nothing outside the function can extend those, and copying the parser would silently drop
whatever later 8.4 releases add. So we take the installed parser's own source, apply three small, verified AST edits
and compile it against ``ultralytics.nn.tasks``' namespace:

1. ``base_modules`` and ``repeat_modules`` also hold the ``"c3k2"``-kind modules;
2. ``m is C3k2`` also holds for them, so they get the same head and ``c3k`` default as C3k2;
3. a branch before the final ``else`` gives ``"attention"``-kind modules ``args = [ch[f], *args]``.

The edits name one frozenset per parse kind (``_yolo_ext_<kind>`` in ``ultralytics.nn.tasks``), read when the parser
runs and rebuilt from the spec table (:mod:`yolo_ext.spec`) whenever a module is registered, so a module registered
after import needs no second edit. Every edit must apply exactly once, or registration fails loudly naming the
Ultralytics line we support.

Ultralytics' YAML loader is wrapped to read YOLOv10's scale ``b`` from a file name as it reads n/s/m/l/x, and to map a
scaled name to its unscaled file by file name alone (:func:`yolo_ext.cfg_paths.read_extra_scale`).

Two YAML mistakes are reported before Ultralytics trips over them: a ``from`` index outside the layers built so far
(Ultralytics raises a bare IndexError), and a YAML without an output head (Ultralytics guesses no task and says
"'YOLO' model does not support '_new' mode for 'None' task"; its task guess is wrapped to say what is missing).
"""

from __future__ import annotations

import ast
import inspect
import linecache
import textwrap
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
import ultralytics
from ultralytics.nn import tasks
from ultralytics.nn.modules import Conv

import yolo_ext.module_specs  # noqa: F401  (fills the spec table with the shipped modules)
from yolo_ext import spec as spec_table
from yolo_ext.cfg_paths import read_extra_scale
from yolo_ext.spec import PARSE_KINDS, ModuleSpec, SpecError

SUPPORTED_ULTRALYTICS = ">=8.4,<8.5"

_LOCK = threading.RLock()


def _kind_set(kind: str) -> str:
    """Name, in ``ultralytics.nn.tasks``, of the frozenset of modules of one parse kind that the edited parser reads."""
    return f"_yolo_ext_{kind}"


class RegistrationError(RuntimeError):
    """The installed Ultralytics parser does not have the shape yolo_ext knows how to extend."""


class ModelYAMLError(ValueError):
    """A model YAML names an unknown module or gives a layer arguments it cannot be built with."""


def _yaml_specs() -> list[ModuleSpec]:
    return [spec for spec in spec_table.specs() if spec.parse is not None]


def registered_modules() -> list[str]:
    """Names of the modules yolo_ext adds to Ultralytics YAMLs (shipped and user-registered)."""
    return sorted(spec.name for spec in _yaml_specs())


def _fail(what: str) -> RegistrationError:
    return RegistrationError(
        f"yolo_ext cannot extend the model parser of ultralytics {ultralytics.__version__}: {what}. "
        f"yolo_ext needs ultralytics{SUPPORTED_ULTRALYTICS}; install it with pip install 'ultralytics{SUPPORTED_ULTRALYTICS}'."
    )


class _ParserEditor(ast.NodeTransformer):
    """Applies the three edits and counts them, so a changed parser is detected instead of half-patched."""

    def __init__(self) -> None:
        self.sets_extended: set[str] = set()
        self.c3k2_tests = 0
        self.branch_added = 0

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        target = node.targets[0]
        if (
            isinstance(target, ast.Name)
            and target.id in {"base_modules", "repeat_modules"}
            and isinstance(node.value, ast.Call)
            and node.value.args
            and isinstance(node.value.args[0], ast.Set)
        ):
            node.value.args[0].elts.append(ast.Starred(value=ast.Name(id=_kind_set("c3k2"), ctx=ast.Load()), ctx=ast.Load()))
            self.sets_extended.add(target.id)
        return self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        if (
            isinstance(node.left, ast.Name)
            and node.left.id == "m"
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.Is)
            and isinstance(node.comparators[0], ast.Name)
            and node.comparators[0].id == "C3k2"
        ):
            self.c3k2_tests += 1
            return ast.parse(f"(m is C3k2 or m in {_kind_set('c3k2')})", mode="eval").body
        return self.generic_visit(node)

    def visit_If(self, node: ast.If) -> ast.AST:
        self.generic_visit(node)
        if ast.unparse(node.test) != "m in base_modules":
            return node
        last = node
        while len(last.orelse) == 1 and isinstance(last.orelse[0], ast.If):
            last = last.orelse[0]
        branch = ast.parse(f"if m in {_kind_set('attention')}:\n    c2 = ch[f]\n    args = [c2, *args]\n").body[0]
        branch.orelse = last.orelse
        last.orelse = [branch]
        self.branch_added += 1
        return node


def _build_parser(original: Callable[..., Any]) -> Callable[..., Any]:
    try:
        source = textwrap.dedent(inspect.getsource(original))
    except (OSError, TypeError) as e:
        raise _fail(f"the source of parse_model is not available ({e})") from e
    module = ast.parse(source)
    editor = _ParserEditor()
    module = ast.fix_missing_locations(editor.visit(module))
    if editor.sets_extended != {"base_modules", "repeat_modules"}:
        raise _fail(f"expected frozensets base_modules and repeat_modules, found {sorted(editor.sets_extended)}")
    if editor.c3k2_tests != 1:
        raise _fail(f"expected one 'm is C3k2' test, found {editor.c3k2_tests}")
    if editor.branch_added != 1:
        raise _fail(f"expected one 'if m in base_modules' chain, found {editor.branch_added}")
    # Compile the edited source as text and register it with linecache, so tracebacks (and inspect.getsource) through
    # the edited parser show its real lines instead of a file that does not exist.
    edited = ast.unparse(module) + "\n"
    filename = f"<yolo_ext edit of {inspect.getsourcefile(original)}>"
    linecache.cache[filename] = (len(edited), None, edited.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(edited, filename, "exec"), tasks.__dict__, namespace)
    return namespace["parse_model"]


def _resolvable(name: str) -> bool:
    if name.startswith("nn."):
        return hasattr(torch.nn, name[3:])
    if name.startswith("torchvision.ops."):
        import torchvision

        return hasattr(torchvision.ops, name[16:])
    return name in tasks.__dict__


def _check_from(i: int, name: object, f: object) -> None:
    """Layer ``i`` may take -1 (the previous layer) or any earlier layer, by absolute (0..i-1) or relative index."""
    for j in f if isinstance(f, (list, tuple)) else [f]:
        ok = isinstance(j, int) and not isinstance(j, bool) and (j == -1 or (i > 0 and -i <= j < i))
        if not ok:
            earlier = f" or an earlier layer 0..{i - 1}" if i > 0 else " (the input image)"
            raise ModelYAMLError(
                f"Model YAML layer {i} ({name}): 'from' index {j!r} is out of range; layer {i} can take -1{earlier}. "
                "Inserting or removing a layer shifts every later index: update the later 'from' entries too."
            )


def _check_names(d: dict) -> None:
    for i, layer in enumerate(d.get("backbone", []) + d.get("head", [])):
        if not isinstance(layer, (list, tuple)) or len(layer) != 4:
            raise ModelYAMLError(f"Model YAML layer {i} must be [from, repeats, module, args], got {layer!r}.")
        name = layer[2]
        _check_from(i, name, layer[0])
        if not isinstance(name, str) or not _resolvable(name):
            import ultralytics.nn.modules as um

            raise ModelYAMLError(
                f"Unknown module {name!r} at model YAML layer {i}. yolo_ext modules: {', '.join(registered_modules())}. "
                f"Ultralytics modules: {', '.join(sorted(um.__all__))}; torch modules are written nn.Name. "
                "Check the spelling, and that `import yolo_ext` ran before the model was built."
            )
        spec = next((s for s in _yaml_specs() if s.name == name), None)
        if spec is not None and spec.parse == "c3k2" and not layer[3]:
            raise ModelYAMLError(
                f"Model YAML layer {i} ({name}) has no arguments; {name} takes {spec.yaml_args()} as Ultralytics' C3k2 "
                f"does, at least its output channels, e.g. [-1, 2, {name}, [256, False]]."
            )


def _make_entry(patched: Callable[..., Any]) -> Callable[..., Any]:
    def parse_model(d: dict, ch: int, verbose: bool = True):
        """Ultralytics' parse_model with yolo_ext modules, clear YAML errors and Conv.default_act restored on failure."""
        _check_names(d)
        default_act = Conv.default_act
        try:
            layers, save = patched(d, ch, verbose)
        except ModelYAMLError:
            raise
        except Exception as e:
            Conv.default_act = default_act
            frame_locals = _parser_locals(e.__traceback__, patched)
            if frame_locals is None or "i" not in frame_locals:
                raise
            i, m, args = frame_locals["i"], frame_locals.get("m"), frame_locals.get("args")
            name = getattr(m, "__name__", m)
            spec = next((s for s in _yaml_specs() if s.cls is m), None)
            takes = f" Its YAML args are {spec.yaml_args()}." if spec is not None else ""
            raise ModelYAMLError(
                f"Model YAML layer {i} ({name}, resolved args {args}) could not be built: {type(e).__name__}: {e}."
                f"{takes}"
            ) from e
        _guard_channels(layers)
        return layers, save

    parse_model.__wrapped__ = patched  # type: ignore[attr-defined]
    parse_model.yolo_ext = True  # type: ignore[attr-defined]
    return parse_model


def _keeps_channels(module: torch.nn.Module, inputs: tuple, output: Any) -> None:
    """Forward hook, run once (the stride pass of the model being built): an attention-kind layer must return as
    many channels as it gets, or the next layer fails with a bare conv shape error."""
    module._yolo_ext_channel_guard.remove()
    del module._yolo_ext_channel_guard
    x = inputs[0] if inputs else None
    if not (isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor) and x.ndim == output.ndim == 4):
        return
    if output.shape[1] != x.shape[1]:
        name = getattr(module, "type", type(module).__name__).rsplit(".", 1)[-1]
        raise ModelYAMLError(
            f"Model YAML layer {getattr(module, 'i', '?')} ({name}) gets {x.shape[1]} channels and returns "
            f"{output.shape[1]}: a module registered with parse='attention' (register_module's default) must keep its "
            "channels, the layers after it are built for its input. Make it return its input channels, or register "
            "it with parse='c3k2' (built as Name(c1, c2, n, *args), c2 from the YAML)."
        )


def _guard_channels(layers: torch.nn.Module) -> None:
    """Hook :func:`_keeps_channels` onto every attention-kind layer; it removes itself at the first forward."""
    attention = tasks.__dict__.get(_kind_set("attention"), frozenset())
    for layer in layers:
        inner = layer[0] if isinstance(layer, torch.nn.Sequential) and len(layer) else layer
        if type(inner) in attention:
            layer._yolo_ext_channel_guard = layer.register_forward_hook(_keeps_channels)


def _make_task_guard(original: Callable[..., Any]) -> Callable[..., Any]:
    def guess_model_task(model: Any) -> Any:
        """Ultralytics' task guess; a model YAML it cannot place (no output head) is a clear ModelYAMLError."""
        task = original(model)
        if task is None and isinstance(model, dict):
            layers = list(model.get("backbone") or []) + list(model.get("head") or [])
            last = layers[-1][2] if layers and isinstance(layers[-1], (list, tuple)) and len(layers[-1]) == 4 else None
            raise ModelYAMLError(
                f"Model YAML has no output head: its last layer (layer {len(layers) - 1}) is {last!r}. End the head "
                "with one, e.g. [[16, 19, 22], 1, Detect, [nc]] for detection (Segment, Pose, OBB or Classify for "
                "other tasks)."
            )
        return task

    guess_model_task.__wrapped__ = original  # type: ignore[attr-defined]
    guess_model_task.yolo_ext = True  # type: ignore[attr-defined]
    return guess_model_task


def _parser_locals(tb, patched: Callable[..., Any]) -> dict | None:
    while tb is not None:
        if tb.tb_frame.f_code is patched.__code__:
            return dict(tb.tb_frame.f_locals)
        tb = tb.tb_next
    return None


def _sync() -> None:
    """Make ``ultralytics.nn.tasks`` match the spec table: YAML names resolve to the classes, kind sets are current."""
    for spec in _yaml_specs():
        setattr(tasks, spec.name, spec.cls)
    for kind in PARSE_KINDS:
        setattr(tasks, _kind_set(kind), frozenset(spec.cls for spec in _yaml_specs() if spec.parse == kind))
    # Checkpoints pickle whole modules; ULTRALYTICS_SAFE_LOAD=1 unpickles only allow-listed classes.
    torch.serialization.add_safe_globals(_pickled_classes())


def register() -> None:
    """Register yolo_ext modules with Ultralytics; idempotent, raises RegistrationError on an unsupported version."""
    with _LOCK:
        _sync()
        if not getattr(tasks.parse_model, "yolo_ext", False):
            tasks.parse_model = _make_entry(_build_parser(tasks.parse_model))
        from ultralytics.engine import model as engine_model  # Model._new guesses the task before parsing

        if not getattr(engine_model.guess_model_task, "yolo_ext", False):
            engine_model.guess_model_task = _make_task_guard(engine_model.guess_model_task)
        for home in (tasks, engine_model):  # both bind the YAML loader by name
            if not getattr(home.yaml_model_load, "yolo_ext", False):
                home.yaml_model_load = read_extra_scale(home.yaml_model_load)


def register_module(
    cls: type[torch.nn.Module],
    *,
    name: str | None = None,
    parse: str = "attention",
    prune: str | type | Callable | None = None,
    check: Callable[[torch.nn.Module], str | None] | None = None,
    groups: Callable[[torch.nn.Module], int] | None = None,
    checkpoint: bool = False,
) -> type[torch.nn.Module]:
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
            C3k2's width scaling, repeats, ``c3k`` for m/l/x and head); see :data:`yolo_ext.spec.PARSE_KINDS`.
        prune: ``None`` to trace through the module (or inherit a registered base class's rule, e.g. C2f's split);
            a repair function ``fn(layer, idxs)`` to prune it as one channel-preserving leaf: Torch-Pruning removes
            channels ``idxs`` at its input and output and the function removes them from its weights; or a
            :class:`yolo_ext.prune.leaves.LeafPruner` subclass.
        check: ``fn(layer) -> str | None`` run by the validator after every pruning: what is inconsistent, or None.
        groups: for a leaf, ``fn(layer) -> int`` equal channel groups that must lose the same positions.
        checkpoint: recompute the module in backward instead of keeping its activations, while training with
            checkpointing switched on (``YOLO_EXT_CHECKPOINT=1``, :func:`yolo_ext.set_checkpointing`); see
            :mod:`yolo_ext.grad_checkpoint`.

    Returns:
        ``cls``.

    Raises:
        yolo_ext.spec.SpecError: the class or its YAML name is registered already, the name is an Ultralytics
            module's, or an argument cannot work; the message says what to change.

    Examples:
        >>> class Gate(torch.nn.Module):
        ...     def __init__(self, c1, r=4):
        ...         super().__init__()
        ...         self.fc = torch.nn.Sequential(torch.nn.Conv2d(c1, c1 // r, 1), torch.nn.ReLU(), torch.nn.Conv2d(c1 // r, c1, 1))
        ...     def forward(self, x):
        ...         return x * self.fc(x.mean((2, 3), keepdim=True)).sigmoid()
        >>> register_module(Gate) is Gate
        True
        >>> unregister_module(Gate)
    """
    spec = ModuleSpec(cls, parse=parse, prune=prune, check=check, groups=groups, name=name or "", checkpoint=checkpoint)
    with _LOCK:
        taken = tasks.__dict__.get(spec.name)
        if taken is not None and not any(other.cls is taken for other in _yaml_specs()):
            raise SpecError(
                f"The YAML name {spec.name!r} is already Ultralytics' {getattr(taken, '__module__', 'ultralytics')}."
                f"{spec.name}; register {cls.__qualname__} under another name (name='My{spec.name}')."
            )
        if cls.__module__ == "__main__":
            warnings.warn(
                f"{cls.__qualname__} is defined in __main__: checkpoints that contain it will only load in this script. "
                "Move the class (and its register_module call) into an importable module.",
                stacklevel=2,
            )
        spec_table.add(spec)
        register()
    return cls


def unregister_module(cls: type[torch.nn.Module]) -> None:
    """Undo :func:`register_module` for ``cls`` (shipped modules cannot be removed)."""
    import yolo_ext.module_specs as shipped

    if any(spec.cls is cls for spec in shipped.SPECS):
        raise SpecError(f"{cls.__qualname__} ships with yolo_ext and cannot be unregistered.")
    with _LOCK:
        spec = spec_table.remove(cls)
        if spec.parse is not None and tasks.__dict__.get(spec.name) is cls:
            delattr(tasks, spec.name)
        _sync()


def _pickled_classes() -> list[type]:
    """Classes a checkpoint may pickle: every nn.Module class defined in yolo_ext.nn (inner blocks included) and,
    for each registered module of the user's, the nn.Module classes defined beside it."""
    import sys

    homes = {name for name in sys.modules if name.startswith("yolo_ext.nn")}
    homes |= {spec.cls.__module__ for spec in _yaml_specs() if spec.cls.__module__ != "__main__"}
    return [
        obj
        for name in sorted(homes)
        if (mod := sys.modules.get(name)) is not None
        for obj in vars(mod).values()
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == name
    ]


def is_registered() -> bool:
    """Whether Ultralytics' parser in this process knows every registered module."""
    specs = _yaml_specs()
    return (
        getattr(tasks.parse_model, "yolo_ext", False)
        and all(getattr(tasks, spec.name, None) is spec.cls for spec in specs)
        and all(
            getattr(tasks, _kind_set(kind), None) == frozenset(s.cls for s in specs if s.parse == kind)
            for kind in PARSE_KINDS
        )
    )
