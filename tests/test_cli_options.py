"""tools/ options: both spellings of every long option, help shows one, `--steps` renamed in both tools, defaults
kept."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io

import pytest

from conftest import REPO

TOOLS = sorted((REPO / "tools").glob("*.py"))


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
