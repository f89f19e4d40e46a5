"""tools/ options: both spellings of every long option, help shows one, `--steps` renamed in both tools, defaults
kept."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io

import pytest

from conftest import REPO

# the user tools (floors_smoke.py is the smoke test tools/check_floors.sh runs in a throwaway venv, not a tool)
TOOLS = sorted(p for p in (REPO / "tools").glob("*.py") if p.stem != "floors_smoke")


def parser(path) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(f"tool_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_args_parser()


def long_options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if any(s.startswith("--") for s in a.option_strings) and a.dest != "help"]


@pytest.mark.parametrize("path", TOOLS, ids=lambda p: p.stem)
def test_every_option_takes_both_spellings_and_help_shows_one(path):
    p = parser(path)
    actions = long_options(p)
    assert actions
    for action in actions:
        names = [s for s in action.option_strings if s.startswith("--")]
        hyphen = "--" + names[0][2:].replace("_", "-")
        assert {hyphen, hyphen.replace("-", "_").replace("__", "--", 1)} <= set(action.option_strings), names
    text = p.format_help()
    assert "underscores" in text
    for action in actions:
        assert all(s not in text.split() for s in action.option_strings if "_" in s), action.option_strings


@pytest.mark.parametrize("spelling", ["--batch-size", "--batch_size"])
def test_spellings_parse_to_one_value(spelling):
    args = parser(REPO / "tools" / "finetune.py").parse_args(["--model_path", "a.pt", spelling, "4"])
    assert args.batch_size == 4 and args.model_path == "a.pt"


@pytest.mark.parametrize(
    "tool, new, dest, default",
    [("prune.py", "--iterative-steps", "iterative_steps", 1), ("iterative_prune.py", "--rounds", "rounds", 3)],
)
def test_steps_has_one_meaning_per_tool(tool, new, dest, default):
    p = parser(REPO / "tools" / tool)
    base = ["--model-path", "a.pt", "--data", "d.yaml"] if tool == "iterative_prune.py" else ["--model-path", "a.pt"]
    assert getattr(p.parse_args(base), dest) == default
    assert getattr(p.parse_args([*base, new, "2"]), dest) == 2
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert getattr(p.parse_args([*base, "--steps", "5"]), dest) == 5
    assert f"--steps is deprecated; write {new}" in err.getvalue()
    assert "--steps" not in p.format_help()


def test_prefixes_of_one_option_are_not_ambiguous():
    p = parser(REPO / "tools" / "prune.py")
    assert p.parse_args(["--model", "a.pt"]).model_path == "a.pt"  # --model-path and --model_path are one option


def test_every_tool_is_a_thin_script_over_cli_commands():
    """Issue 16 item 6: the options and the work of every tool live in yolo_ext.cli.commands."""
    for path in TOOLS:
        text = path.read_text()
        assert f"from yolo_ext.cli.commands.{'iterative' if path.stem == 'iterative_prune' else path.stem} import" \
            in text, path.name
        assert "add_argument" not in text and len(text.splitlines()) < 20, path.name


@pytest.mark.parametrize("tool", ["prune.py", "finetune.py", "iterative_prune.py"])
def test_the_checkpoint_and_ratio_options_have_the_same_names_in_every_tool(tool):
    """The README's --model / --ratio / --batch work in every tool that takes them (iterative_prune --ratio exited
    2)."""
    p = parser(REPO / "tools" / tool)
    base = ["--model", "a.pt"] + (["--data", "d.yaml"] if tool != "prune.py" else [])
    args = p.parse_args(base)
    assert args.model_path == "a.pt"
    if tool != "finetune.py":
        assert p.parse_args([*base, "--ratio", "0.3"]).prune_ratio == 0.3
    assert p.parse_args([*base, "--batch", "4"]).batch_size == 4


def test_cli_and_api_defaults_are_equal():
    """Device: Ultralytics' choice (None) on every command line, as finetune() / compare_checkpoints() leave it;
    teacher: none; criterion: the tools share yolo_ext.prune.defaults."""
    import inspect

    from yolo_ext.evaluate import compare_checkpoints
    from yolo_ext.prune.defaults import default_fields
    from yolo_ext.train.finetune import finetune

    base = {"finetune.py": ["--model", "a.pt"], "iterative_prune.py": ["--model", "a.pt", "--data", "d.yaml"],
            "train.py": ["train_ch", "--data", "d.yaml"], "val.py": ["a.pt", "--data", "d.yaml"]}
    for tool, args in base.items():
        assert parser(REPO / "tools" / tool).parse_args(args).device is None, tool
    assert inspect.signature(compare_checkpoints).parameters["device"].default is None
    assert "device" not in inspect.signature(finetune).parameters  # train args: Ultralytics' own default
    teacher_api = inspect.signature(finetune).parameters["teacher"].default
    for tool in ("finetune.py", "iterative_prune.py"):
        assert parser(REPO / "tools" / tool).parse_args(base[tool]).teacher is teacher_api is None
    from yolo_ext.cli.commands.iterative import config_from_args
    from yolo_ext.cli.commands.prune import config_from_args as prune_config

    iterative = config_from_args(parser(REPO / "tools" / "iterative_prune.py").parse_args(base["iterative_prune.py"]))
    pruned = prune_config(parser(REPO / "tools" / "prune.py").parse_args(["--model", "a.pt"]))
    for key, value in default_fields().items():
        assert getattr(iterative, key) == getattr(pruned, key) == value, key
