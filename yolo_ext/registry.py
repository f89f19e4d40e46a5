"""Make yolo_ext modules resolvable in Ultralytics model YAMLs: the one file that touches Ultralytics' parser.

Ultralytics decides inside ``parse_model`` which modules receive ``c1 = ch[f]``, a width-scaled ``c2`` and a repeat
count, from two frozensets built in the function body, and keys the detection head (``legacy``) and the m/l/x ``c3k``
default off ``m is C3k2``. Nothing outside the function can extend those, and copying the parser would silently drop
whatever later 8.4 releases add. So we take the installed parser's own source, apply three small, verified AST edits
and compile it against ``ultralytics.nn.tasks``' namespace:

1. ``C3k2``-like modules are added to ``base_modules`` and ``repeat_modules``;
2. ``m is C3k2`` becomes ``m in {C3k2, <ours>}``, so our blocks get the same head and ``c3k`` default as C3k2;
3. a branch before the final ``else`` gives channel-preserving attention ``args = [ch[f], *args]``.

Every edit must apply exactly once, or registration fails loudly naming the Ultralytics line we support.

Two YAML mistakes are reported before Ultralytics trips over them: a ``from`` index outside the layers built so far
(Ultralytics raises a bare IndexError), and a YAML without an output head (Ultralytics guesses no task and says
"'YOLO' model does not support '_new' mode for 'None' task"; its task guess is wrapped to say what is missing).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import torch
import ultralytics
from ultralytics.nn import tasks
from ultralytics.nn.modules import Conv

from yolo_ext.nn import C3k2_RVB, C3k2_RVB_SE, MCA, ContextAggregation, CoordAtt

SUPPORTED_ULTRALYTICS = ">=8.4,<8.5"

# How the parser must treat each module, by YAML name. "c3k2" = channels/repeats exactly as Ultralytics' C3k2;
# "attention" = channel preserving: c1 comes from the layer it follows, YAML args are hyper-parameters only.
MODULES: dict[str, tuple[type[torch.nn.Module], str]] = {
    "C3k2_RVB": (C3k2_RVB, "c3k2"),
    "C3k2_RVB_SE": (C3k2_RVB_SE, "c3k2"),
    "CoordAtt": (CoordAtt, "attention"),
    "MCA": (MCA, "attention"),
    "ContextAggregation": (ContextAggregation, "attention"),
}

_LOCK = threading.Lock()


class RegistrationError(RuntimeError):
    """The installed Ultralytics parser does not have the shape yolo_ext knows how to extend."""


class ModelYAMLError(ValueError):
    """A model YAML names an unknown module or gives a layer arguments it cannot be built with."""


def registered_modules() -> list[str]:
    """Names of the modules yolo_ext adds to Ultralytics YAMLs."""
    return sorted(MODULES)


def _names(kind: str) -> list[str]:
    return [name for name, (_, k) in MODULES.items() if k == kind]


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
            node.value.args[0].elts.extend(ast.Name(id=n, ctx=ast.Load()) for n in _names("c3k2"))
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
            members = ", ".join(["C3k2", *_names("c3k2")])
            return ast.parse(f"m in {{{members}}}", mode="eval").body
        return self.generic_visit(node)

    def visit_If(self, node: ast.If) -> ast.AST:
        self.generic_visit(node)
        if ast.unparse(node.test) != "m in base_modules":
            return node
        last = node
        while len(last.orelse) == 1 and isinstance(last.orelse[0], ast.If):
            last = last.orelse[0]
        members = ", ".join(_names("attention"))
        branch = ast.parse(f"if m in {{{members}}}:\n    c2 = ch[f]\n    args = [c2, *args]\n").body[0]
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
    namespace: dict[str, Any] = {}
    exec(compile(module, f"<yolo_ext edit of {inspect.getsourcefile(original)}>", "exec"), tasks.__dict__, namespace)
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


def _make_entry(patched: Callable[..., Any]) -> Callable[..., Any]:
    def parse_model(d: dict, ch: int, verbose: bool = True):
        """Ultralytics' parse_model with yolo_ext modules, clear YAML errors and Conv.default_act restored on failure."""
        _check_names(d)
        default_act = Conv.default_act
        try:
            return patched(d, ch, verbose)
        except ModelYAMLError:
            raise
        except Exception as e:
            Conv.default_act = default_act
            frame_locals = _parser_locals(e.__traceback__, patched)
            if frame_locals is None or "i" not in frame_locals:
                raise
            i, m, args = frame_locals["i"], frame_locals.get("m"), frame_locals.get("args")
            name = getattr(m, "__name__", m)
            raise ModelYAMLError(
                f"Model YAML layer {i} ({name}, resolved args {args}) could not be built: {type(e).__name__}: {e}"
            ) from e

    parse_model.__wrapped__ = patched  # type: ignore[attr-defined]
    parse_model.yolo_ext = True  # type: ignore[attr-defined]
    return parse_model


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


def register() -> None:
    """Register yolo_ext modules with Ultralytics; idempotent, raises RegistrationError on an unsupported version."""
    with _LOCK:
        for name, (cls, _) in MODULES.items():
            setattr(tasks, name, cls)
        if not getattr(tasks.parse_model, "yolo_ext", False):
            tasks.parse_model = _make_entry(_build_parser(tasks.parse_model))
        from ultralytics.engine import model as engine_model  # Model._new guesses the task before parsing

        if not getattr(engine_model.guess_model_task, "yolo_ext", False):
            engine_model.guess_model_task = _make_task_guard(engine_model.guess_model_task)
        # Checkpoints pickle whole modules; ULTRALYTICS_SAFE_LOAD=1 unpickles only allow-listed classes.
        torch.serialization.add_safe_globals(_pickled_classes())


def _pickled_classes() -> list[type]:
    """Every nn.Module class defined in yolo_ext.nn, including inner blocks a checkpoint pickles."""
    import sys

    return [
        obj
        for name, mod in list(sys.modules.items())
        if name.startswith("yolo_ext.nn")
        for obj in vars(mod).values()
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == name
    ]


def is_registered() -> bool:
    """Whether Ultralytics' parser in this process knows the yolo_ext modules."""
    return getattr(tasks.parse_model, "yolo_ext", False) and all(getattr(tasks, n, None) is c for n, (c, _) in MODULES.items())
