"""The one boundary to Ultralytics: install() makes every change, uninstall() puts Ultralytics and torch back exactly,
errors that are not ours pass through unchanged, and the package has no import cycles."""

from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path

import pytest
import torch
import ultralytics
from ultralytics import YOLO
from ultralytics.nn import tasks
from ultralytics.nn.tasks import DetectionModel, yaml_model_load

import yolo_ext
from conftest import REPO, run_python
from yolo_ext.integration import LayerIndexError, ModelYAMLError, NoHeadError, RegistrationError, UnknownModuleError

SNAPSHOT = '''
def snapshot():
    """Every function, name and callback of Ultralytics the integration may touch, by identity; torch's safe globals;
    the forwards of the classes a spec may wrap."""
    import sys, torch
    from ultralytics.engine import model as engine_model
    from ultralytics.utils.callbacks.base import default_callbacks
    import ultralytics.nn, ultralytics.nn.tasks as tasks
    import yolo_ext.nn as ours
    modules = {m.__name__: {k: id(v) for k, v in vars(m).items()} for m in (tasks, ultralytics.nn, engine_model)}
    model_class = {k: id(v) for k, v in vars(engine_model.Model).items()}
    callbacks = {k: [id(f) for f in v] for k, v in default_callbacks.items()}
    safe = sorted(map(repr, torch.serialization.get_safe_globals()))
    forwards = {c.__name__: id(c.__dict__.get("forward")) for c in vars(ours).values() if isinstance(c, type)}
    return {"modules": modules, "Model": model_class, "callbacks": callbacks, "safe": safe, "forwards": forwards}


def shape():
    """The installed state by name rather than identity (a new install builds new wrapper functions)."""
    import torch
    from ultralytics.engine import model as engine_model
    from ultralytics.utils.callbacks.base import default_callbacks
    import ultralytics.nn, ultralytics.nn.tasks as tasks
    name = lambda v: f"{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', type(v).__name__)}"  # noqa: E731
    return {"modules": {m.__name__: {k: name(v) for k, v in vars(m).items()}
                        for m in (tasks, ultralytics.nn, engine_model)},
            "Model": {k: name(v) for k, v in vars(engine_model.Model).items()},
            "callbacks": {k: [name(f) for f in v] for k, v in default_callbacks.items()},
            "safe": sorted(map(repr, torch.serialization.get_safe_globals()))}
'''


def test_uninstall_restores_ultralytics_exactly_and_install_applies_again():
    """In a fresh process: what Ultralytics looks like before yolo_ext is what it looks like after uninstall()."""
    code = SNAPSHOT + '''
import ultralytics.nn.tasks, ultralytics.engine.model, ultralytics.utils.callbacks.base, ultralytics.nn  # noqa
import yolo_ext.nn  # imports the package: installs
import yolo_ext
installed, installed_shape = snapshot(), shape()
yolo_ext.uninstall()
before = snapshot()
assert not yolo_ext.is_installed()
from ultralytics.nn import tasks
assert not hasattr(tasks, "CoordAtt") and not getattr(tasks.parse_model, "yolo_ext", False)
for part in ("modules", "Model", "callbacks", "safe", "forwards"):
    assert installed[part] != before[part], part
yolo_ext.install()
assert yolo_ext.is_installed() and shape() == installed_shape, "install() after uninstall() installs the same"
again = snapshot()
yolo_ext.install()  # idempotent: changes nothing once installed
assert snapshot() == again
yolo_ext.uninstall()
assert snapshot() == before, [k for k in before if snapshot()[k] != before[k]]
yolo_ext.uninstall()  # harmless twice
assert snapshot() == before
'''
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]


def test_uninstalled_state_equals_a_process_that_never_imported_yolo_ext():
    """The 'before' of the test above is a real before: compare with a process where yolo_ext was never imported."""
    never = run_python('''
import json
import ultralytics.nn.tasks as tasks
from ultralytics.engine import model as engine_model
from ultralytics.utils.callbacks.base import default_callbacks
import torch
print(json.dumps({"tasks": sorted(vars(tasks)), "engine": sorted(vars(engine_model)),
                  "callbacks": {k: [f.__qualname__ for f in v] for k, v in default_callbacks.items()},
                  "train": engine_model.Model.train.__qualname__, "parse": tasks.parse_model.__module__,
                  "safe": len(torch.serialization.get_safe_globals())}))
''')
    after = run_python('''
import yolo_ext, json
yolo_ext.uninstall()
import ultralytics.nn.tasks as tasks
from ultralytics.engine import model as engine_model
from ultralytics.utils.callbacks.base import default_callbacks
import torch
print(json.dumps({"tasks": sorted(vars(tasks)), "engine": sorted(vars(engine_model)),
                  "callbacks": {k: [f.__qualname__ for f in v] for k, v in default_callbacks.items()},
                  "train": engine_model.Model.train.__qualname__, "parse": tasks.parse_model.__module__,
                  "safe": len(torch.serialization.get_safe_globals())}))
''')
    assert never.returncode == 0 and after.returncode == 0, (never.stderr[-2000:], after.stderr[-2000:])
    assert never.stdout.splitlines()[-1] == after.stdout.splitlines()[-1]


def test_both_parse_model_names_are_the_installed_parser():
    import ultralytics.nn

    assert ultralytics.nn.parse_model is tasks.parse_model and getattr(tasks.parse_model, "yolo_ext", False)


def test_register_module_follows_the_table_while_installed_and_not_after(tmp_path):
    class Late(torch.nn.Module):
        def __init__(self, c1: int) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(c1, c1, 1)

        def forward(self, x):
            return x + self.conv(x)

    Late.__module__ = "test_integration"
    yolo_ext.register_module(Late, checkpoint=True)
    try:
        assert tasks.Late is Late and Late in torch.serialization.get_safe_globals()
        assert getattr(Late.forward, "_yolo_ext_checkpointed", False)
        assert yolo_ext.is_installed()
    finally:
        yolo_ext.unregister_module(Late)
    assert not hasattr(tasks, "Late") and "Late" not in yolo_ext.registered_modules()
    assert Late not in torch.serialization.get_safe_globals()  # hygiene: unregistering takes it off the list too
    assert "forward" in Late.__dict__ and not getattr(Late.forward, "_yolo_ext_checkpointed", False)


def test_an_unsupported_ultralytics_version_is_refused_and_nothing_changes(monkeypatch):
    from ultralytics.utils.callbacks.base import default_callbacks

    yolo_ext.uninstall()
    try:
        parser, callbacks = tasks.parse_model, list(default_callbacks["on_pretrain_routine_start"])
        monkeypatch.setattr(ultralytics, "__version__", "8.3.99")
        with pytest.raises(RegistrationError, match=r"supports ultralytics>=8\.4.*found 8\.3\.99; nothing was changed"):
            yolo_ext.install()
        assert tasks.parse_model is parser and not hasattr(tasks, "CoordAtt")
        assert default_callbacks["on_pretrain_routine_start"] == callbacks
    finally:
        monkeypatch.undo()
        yolo_ext.install()
    assert yolo_ext.is_installed()


def test_a_failing_step_undoes_the_steps_before_it(monkeypatch):
    """All or nothing: a parser of another shape fails after nothing else was left half-done."""
    from yolo_ext import integration

    yolo_ext.uninstall()
    try:
        before = dict(vars(tasks))
        monkeypatch.setattr(integration, "read_extra_scale", lambda load: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(RuntimeError, match="boom"):
            yolo_ext.install()
        assert {k: id(v) for k, v in vars(tasks).items()} == {k: id(v) for k, v in before.items()}
        assert not yolo_ext.is_installed()
    finally:
        monkeypatch.undo()
        yolo_ext.install()
    assert yolo_ext.is_installed()


# ---------------------------------------------------------------------------------------------------------------------
# Errors: Ultralytics' own pass through unchanged; ours keep the type Ultralytics raises at the same place
# ---------------------------------------------------------------------------------------------------------------------


def _error(build) -> BaseException:
    try:
        build()
    except Exception as e:
        return e
    raise AssertionError("no error")


def _both(build) -> tuple[BaseException, BaseException]:
    """The error with yolo_ext installed, and the one plain Ultralytics raises (yolo_ext uninstalled)."""
    ours = _error(build)
    yolo_ext.uninstall()
    try:
        stock = _error(build)
    finally:
        yolo_ext.install()
    return ours, stock


def test_a_head_the_task_guess_does_not_place_is_left_to_ultralytics():
    """rtdetr-l.yaml has a head (RTDETRDecoder) that YOLO's task guess does not place: NotImplementedError, as plain
    Ultralytics says, not 'no output head'."""
    ours, stock = _both(lambda: YOLO("rtdetr-l.yaml"))
    assert type(ours) is type(stock) is NotImplementedError and str(ours) == str(stock)


def test_a_network_failure_in_an_ultralytics_layer_passes_through(monkeypatch):
    """A layer that fails for a reason of its own (here a download: URLError) is not a YAML error of ours."""
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(tasks.TorchVision, "__init__", offline)
    d = copy.deepcopy(yaml_model_load("yolo11n.yaml"))
    d["backbone"][1] = [-1, 1, "TorchVision", [64, "convnext_tiny", "DEFAULT", True, 2]]
    ours, stock = _both(lambda: DetectionModel(copy.deepcopy(d), verbose=False))
    assert type(ours) is type(stock) is URLError and str(ours) == str(stock)


def test_a_bad_argument_of_an_ultralytics_module_passes_through():
    d = copy.deepcopy(yaml_model_load("yolo11n.yaml"))
    d["backbone"][1] = [-1, 1, "Conv", [128, 3, 2, 1, "bad", "worse", 7]]
    ours, stock = _both(lambda: DetectionModel(copy.deepcopy(d), verbose=False))
    assert type(ours) is type(stock) and not isinstance(ours, ModelYAMLError) and str(ours) == str(stock)


def test_our_errors_keep_the_type_ultralytics_raises_there():
    d = copy.deepcopy(yaml_model_load(yolo_ext.model_yaml("yolo11n-coordatt.yaml")))
    unknown = copy.deepcopy(d)
    unknown["head"][6][2] = "CoordAttention"
    error = _error(lambda: DetectionModel(unknown, verbose=False))
    assert isinstance(error, UnknownModuleError) and isinstance(error, KeyError) and isinstance(error, ModelYAMLError)
    assert str(error).startswith("Unknown module 'CoordAttention' at model YAML layer 17")  # not KeyError's repr
    index = copy.deepcopy(d)
    index["head"][-1][0] = [17, 21, 99]
    error = _error(lambda: DetectionModel(index, verbose=False))
    assert isinstance(error, LayerIndexError) and isinstance(error, IndexError)
    stock_index = copy.deepcopy(yaml_model_load("yolo11n.yaml"))
    stock_index["head"][-1][0] = [16, 19, 99]
    ours, stock = _both(lambda: DetectionModel(copy.deepcopy(stock_index), verbose=False))
    assert isinstance(ours, IndexError) and isinstance(stock, IndexError)


def test_a_yaml_without_a_head_says_so_as_a_not_implemented_error(tmp_path):
    d = copy.deepcopy(yaml_model_load(yolo_ext.model_yaml("yolo11n-coordatt.yaml")))
    d["head"] = d["head"][:7]  # ends in CoordAtt
    import yaml

    path = tmp_path / "yolo11n-headless.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in d.items() if k not in {"yaml_file", "scale"}}))
    error = _error(lambda: YOLO(path))
    assert isinstance(error, NoHeadError) and isinstance(error, NotImplementedError)
    assert "no output head: its last layer (layer 17) is 'CoordAtt'" in str(error)
    stock = copy.deepcopy(yaml_model_load("yolo11n.yaml"))
    stock["head"] = stock["head"][:6]
    path = tmp_path / "yolo11n-stock-headless.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in stock.items() if k not in {"yaml_file", "scale"}}))
    ours, plain = _both(lambda: YOLO(path))  # the type Ultralytics raises, with what is missing said
    assert type(plain) is NotImplementedError
    assert isinstance(ours, NoHeadError) and isinstance(ours, NotImplementedError)
    assert "its last layer (layer 16) is 'C3k2'" in str(ours)


# ---------------------------------------------------------------------------------------------------------------------
# Layout: no import cycles (function-level imports included), layers import downwards only
# ---------------------------------------------------------------------------------------------------------------------

PACKAGE = REPO / "yolo_ext"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """yolo_ext modules ``path`` imports at run time: module level and inside functions (``if TYPE_CHECKING`` left
    out: it never runs). ``from a import b`` names ``a.b`` when that is a module, else ``a``."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "yolo_ext")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "yolo_ext":
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules) for f in files}


def test_no_import_cycles_function_level_imports_included():
    graph = import_graph()
    assert len(graph) > 50
    cycles, state = [], {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("yolo_ext.nn", ("yolo_ext.prune", "yolo_ext.train", "yolo_ext.latency", "yolo_ext.integration", "yolo_ext.cli",
                     "yolo_ext.registry")),
    ("yolo_ext.registry.spec", ("yolo_ext.",)),
    ("yolo_ext.latency", ("yolo_ext.prune", "yolo_ext.train", "yolo_ext.integration", "yolo_ext.cli")),
    ("yolo_ext.prune", ("yolo_ext.train", "yolo_ext.integration", "yolo_ext.cli")),
    ("yolo_ext.train", ("yolo_ext.integration", "yolo_ext.cli")),
])
def test_layers_import_downwards_only(layer, forbidden):
    graph = import_graph()
    for module in [m for m in graph if m == layer or m.startswith(layer + ".")]:
        bad = sorted(m for m in _reach(graph, module) if m.startswith(forbidden) and not m.startswith(layer))
        if layer == "yolo_ext.registry.spec":
            bad = sorted(_reach(graph, module))
        assert not bad, f"{module} imports {bad}"


def test_only_the_package_and_the_cli_import_the_integration():
    graph = import_graph()
    users = sorted(m for m, deps in graph.items() if any(d.startswith("yolo_ext.integration") for d in deps)
                   and not m.startswith("yolo_ext.integration"))
    assert users == ["yolo_ext", "yolo_ext.cli.app"], users


def test_the_package_imports_no_pruning_engine_and_no_trainers_and_nn_patches_nothing():
    code = '''
import sys
from yolo_ext.nn import CoordAtt
import yolo_ext
loaded = {m for m in sys.modules if m.startswith(("yolo_ext", "ultralytics.models", "ultralytics.engine.trainer"))}
heavy = {"yolo_ext.prune.engine", "yolo_ext.prune.checkpoint", "yolo_ext.latency", "yolo_ext.train.trainers",
         "yolo_ext.train.finetune", "yolo_ext.cli.app", "ultralytics.engine.trainer", "ultralytics.models.yolo"}
assert not loaded & heavy, sorted(loaded & heavy)
yolo_ext.uninstall()
from ultralytics.nn import tasks
import yolo_ext.nn.coordatt
assert not hasattr(tasks, "CoordAtt")  # the nn package itself patches nothing
'''
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_package_ships_no_symlink():
    links = [p for p in PACKAGE.rglob("*") if p.is_symlink()]
    assert not links, links


def test_liveness_on_windows_never_sends_a_signal(monkeypatch):
    """os.kill(pid, 0) on Windows sends CTRL_C_EVENT to the process group: the check must ask the kernel instead."""
    from yolo_ext.io import atomic

    sent, asked = [], []
    monkeypatch.setattr(atomic, "_WINDOWS", True)
    monkeypatch.setattr(atomic.os, "kill", lambda *a: sent.append(a))
    monkeypatch.setattr(atomic, "_alive_windows", lambda pid: asked.append(pid) or False)
    assert atomic._alive(999_999) is False and asked == [999_999] and not sent
    assert atomic._alive(atomic.os.getpid()) is True and not sent
    monkeypatch.setattr(atomic, "_WINDOWS", False)
    assert atomic._alive(atomic.os.getpid()) is True


def test_the_process_that_imported_ultralytics_first_still_gets_installed():
    assert "ultralytics" in sys.modules and yolo_ext.is_installed()
