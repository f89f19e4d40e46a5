"""The edited model parser and the YAML checks around it: what :mod:`yolo_ext.integration` installs into Ultralytics.

Ultralytics decides inside ``parse_model`` which modules receive ``c1 = ch[f]``, a width-scaled ``c2`` and a repeat
count, from two frozensets built in the function body, and keys the detection head (``legacy``) and the m/l/x ``c3k``
default off ``m is C3k2``. Nothing outside the function can extend those, and copying the parser would silently drop
whatever later 8.4 releases add. So we take the installed parser's own source, apply three small, verified AST edits
and compile it against ``ultralytics.nn.tasks``' namespace:

1. ``base_modules`` and ``repeat_modules`` also hold the ``"c3k2"``-kind modules;
2. ``m is C3k2`` also holds for them, so they get the same head and ``c3k`` default as C3k2;
3. a branch before the final ``else`` gives ``"attention"``-kind modules ``args = [ch[f], *args]``.

The edits name one frozenset per parse kind (``_yolo_ext_<kind>`` in ``ultralytics.nn.tasks``), read when the parser
runs and kept equal to the spec table (:mod:`yolo_ext.registry.spec`) by the integration, so a module registered
after import needs no second edit. Every edit must apply exactly once, or installing fails loudly naming the
Ultralytics line we support. This module builds the functions; it assigns nothing into Ultralytics.

Errors: only failures that our edit causes, or that a YAML causes in a yolo_ext module, become
:class:`ModelYAMLError`; everything else passes through unchanged. The checks made before Ultralytics' parser runs
(a ``from`` index outside the layers built so far, an unknown module name, a yolo_ext YAML without an output head)
raise subclasses of :class:`ModelYAMLError` that are also the type Ultralytics itself raises there (``IndexError``,
``KeyError``, ``NotImplementedError``), with a message that names the layer; code that catches Ultralytics' error
still catches them.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import textwrap
from collections.abc import Callable
from typing import Any

import torch
import ultralytics
from ultralytics.nn import tasks
from ultralytics.nn.modules import Conv

from yolo_ext.registry import spec as spec_table
from yolo_ext.registry.spec import ModuleSpec

#: the Ultralytics versions yolo_ext is tested with (tools/check_floors.sh tests the lower end)
SUPPORTED_ULTRALYTICS = ">=8.4.104,<8.5"


class RegistrationError(RuntimeError):
    """The installed Ultralytics (or torch) is not one yolo_ext can extend; nothing was changed."""


class ModelYAMLError(ValueError):
    """A model YAML that cannot be built because of a yolo_ext module, or a mistake found before Ultralytics parses."""


class UnknownModuleError(ModelYAMLError, KeyError):
    """A YAML names a module that resolves to nothing (Ultralytics raises a bare ``KeyError`` there)."""

    __str__ = BaseException.__str__  # the message, not KeyError's quoted repr


class LayerIndexError(ModelYAMLError, IndexError):
    """A layer's ``from`` index is outside the layers built so far (Ultralytics raises a bare ``IndexError``)."""


class NoHeadError(ModelYAMLError, NotImplementedError):
    """A YAML ends in a layer that is no output head (Ultralytics finds no task and raises NotImplementedError)."""


def _yaml_specs() -> list[ModuleSpec]:
    return [spec for spec in spec_table.specs() if spec.parse is not None]


def registered_modules() -> list[str]:
    """Names of the modules yolo_ext adds to Ultralytics YAMLs (shipped and user-registered)."""
    return sorted(spec.name for spec in _yaml_specs())


def kind_set(kind: str) -> str:
    """Name, in ``ultralytics.nn.tasks``, of the frozenset of modules of one parse kind that the edited parser reads."""
    return f"_yolo_ext_{kind}"


def _fail(what: str) -> RegistrationError:
    return RegistrationError(
        f"yolo_ext cannot extend the model parser of ultralytics {ultralytics.__version__}: {what}. "
        f"yolo_ext needs ultralytics{SUPPORTED_ULTRALYTICS}; install it with "
        f"pip install 'ultralytics{SUPPORTED_ULTRALYTICS}'."
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
            kind = ast.Name(id=kind_set("c3k2"), ctx=ast.Load())
            node.value.args[0].elts.append(ast.Starred(value=kind, ctx=ast.Load()))
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
            return ast.parse(f"(m is C3k2 or m in {kind_set('c3k2')})", mode="eval").body
        return self.generic_visit(node)

    def visit_If(self, node: ast.If) -> ast.AST:
        self.generic_visit(node)
        if ast.unparse(node.test) != "m in base_modules":
            return node
        last = node
        while len(last.orelse) == 1 and isinstance(last.orelse[0], ast.If):
            last = last.orelse[0]
        branch = ast.parse(f"if m in {kind_set('attention')}:\n    c2 = ch[f]\n    args = [c2, *args]\n").body[0]
        branch.orelse = last.orelse
        last.orelse = [branch]
        self.branch_added += 1
        return node


def build_parser(original: Callable[..., Any]) -> Callable[..., Any]:
    """Ultralytics' ``parse_model`` with the three edits, compiled against ``ultralytics.nn.tasks``' namespace.

    Raises:
        RegistrationError: an edit did not apply exactly once (a parser of another shape), or there is no source.
    """
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


def resolve(name: object) -> type | None:
    """The class a YAML module name stands for, as Ultralytics' parser resolves it (``nn.X``, ``torchvision.ops.X``,
    else a name in ``ultralytics.nn.tasks``), or None."""
    if not isinstance(name, str):
        return None
    if name.startswith("nn."):
        return getattr(torch.nn, name[3:], None)
    if name.startswith("torchvision.ops."):
        import torchvision

        return getattr(torchvision.ops, name[16:], None)
    return tasks.__dict__.get(name)


def _ours(cls: object) -> bool:
    return any(spec.cls is cls for spec in _yaml_specs())


def _check_from(i: int, name: object, f: object) -> None:
    """Layer ``i`` may take -1 (the previous layer) or any earlier layer, by absolute (0..i-1) or relative index."""
    for j in f if isinstance(f, (list, tuple)) else [f]:
        ok = isinstance(j, int) and not isinstance(j, bool) and (j == -1 or (i > 0 and -i <= j < i))
        if not ok:
            earlier = f" or an earlier layer 0..{i - 1}" if i > 0 else " (the input image)"
            raise LayerIndexError(
                f"Model YAML layer {i} ({name}): 'from' index {j!r} is out of range; layer {i} can take -1{earlier}. "
                "Inserting or removing a layer shifts every later index: update the later 'from' entries too."
            )


def _check_names(d: dict) -> None:
    for i, layer in enumerate(d.get("backbone", []) + d.get("head", [])):
        if not isinstance(layer, (list, tuple)) or len(layer) != 4:
            raise ModelYAMLError(f"Model YAML layer {i} must be [from, repeats, module, args], got {layer!r}.")
        name = layer[2]
        _check_from(i, name, layer[0])
        if resolve(name) is None:
            import ultralytics.nn.modules as um

            raise UnknownModuleError(
                f"Unknown module {name!r} at model YAML layer {i}. yolo_ext modules: "
                f"{', '.join(registered_modules())}. "
                f"Ultralytics modules: {', '.join(sorted(um.__all__))}; torch modules are written nn.Name. "
                "Check the spelling, and that `import yolo_ext` ran before the model was built."
            )
        spec = next((s for s in _yaml_specs() if s.name == name), None)
        if spec is not None and spec.parse == "c3k2" and not layer[3]:
            raise ModelYAMLError(
                f"Model YAML layer {i} ({name}) has no arguments; {name} takes {spec.yaml_args()} as Ultralytics' C3k2 "
                f"does, at least its output channels, e.g. [-1, 2, {name}, [256, False]]."
            )


def make_entry(patched: Callable[..., Any]) -> Callable[..., Any]:
    """The ``parse_model`` the integration installs: the checks above, then the edited parser; a layer of a yolo_ext
    module that cannot be built is a :class:`ModelYAMLError` naming the layer, any other failure is Ultralytics' own
    (``Conv.default_act``, which a YAML's ``activation`` sets, is put back on any failure)."""

    def parse_model(d: dict, ch: int, verbose: bool = True):
        """Ultralytics' parse_model with yolo_ext modules, clear YAML errors, Conv.default_act restored on failure."""
        _check_names(d)
        default_act = Conv.default_act
        try:
            layers, save = patched(d, ch, verbose)
        except ModelYAMLError:
            raise
        except Exception as e:
            Conv.default_act = default_act
            frame_locals = _parser_locals(e.__traceback__, patched)
            m = None if frame_locals is None else frame_locals.get("m")
            if frame_locals is None or "i" not in frame_locals or not _ours(m):
                raise  # not a yolo_ext module's layer: Ultralytics' error, unchanged
            i, args = frame_locals["i"], frame_locals.get("args")
            spec = next(s for s in _yaml_specs() if s.cls is m)
            raise ModelYAMLError(
                f"Model YAML layer {i} ({spec.name}, resolved args {args}) could not be built: {type(e).__name__}: {e}."
                f" Its YAML args are {spec.yaml_args()}."
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
    attention = tasks.__dict__.get(kind_set("attention"), frozenset())
    for layer in layers:
        inner = layer[0] if isinstance(layer, torch.nn.Sequential) and len(layer) else layer
        if type(inner) in attention:
            layer._yolo_ext_channel_guard = layer.register_forward_hook(_keeps_channels)


def _is_head(cls: type) -> bool:
    """Whether ``cls`` is one of Ultralytics' output heads (defined in ``ultralytics.nn.modules.head``) or derives
    from one: a head Ultralytics' task guess may still not place (RTDETRDecoder), but a head."""
    from ultralytics.nn.modules import head

    heads = tuple(v for v in vars(head).values() if isinstance(v, type) and v.__module__ == head.__name__)
    return isinstance(cls, type) and issubclass(cls, heads)


def make_task_guard(original: Callable[..., Any]) -> Callable[..., Any]:
    """The ``guess_model_task`` the integration installs: Ultralytics' guess; for a YAML whose last layer is no head at
    all (a Conv, a C3k2, an attention layer), a :class:`NoHeadError` that says what is missing: a
    ``NotImplementedError``, the type Ultralytics raises a moment later for it. A head Ultralytics' guess does not place
    (RTDETRDecoder) and a name that resolves to nothing are left to Ultralytics, unchanged."""

    def guess_model_task(model: Any) -> Any:
        """Ultralytics' task guess; a YAML without an output head is a NoHeadError naming its last layer."""
        task = original(model)
        if task is not None or not isinstance(model, dict):
            return task
        layers = [*(model.get("backbone") or []), *(model.get("head") or [])]
        names = [layer[2] for layer in layers if isinstance(layer, (list, tuple)) and len(layer) == 4]
        last = resolve(names[-1]) if names and len(names) == len(layers) else None
        if last is None or _is_head(last):
            return task
        raise NoHeadError(
            f"Model YAML has no output head: its last layer (layer {len(layers) - 1}) is {names[-1]!r}. End the head "
            "with one, e.g. [[16, 19, 22], 1, Detect, [nc]] for detection (Segment, Pose, OBB or Classify for "
            "other tasks)."
        )

    guess_model_task.__wrapped__ = original  # type: ignore[attr-defined]
    guess_model_task.yolo_ext = True  # type: ignore[attr-defined]
    return guess_model_task


def _parser_locals(tb, patched: Callable[..., Any]) -> dict | None:
    while tb is not None:
        if tb.tb_frame.f_code is patched.__code__:
            return dict(tb.tb_frame.f_locals)
        tb = tb.tb_next
    return None
