"""`yolo-ext prune` / `yolo-ext finetune` in key=value style: the tools' options and API under Ultralytics' syntax."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, save_three_class
from yolo_ext.cli import app as cli

EXE = shutil.which("yolo-ext") or str(Path(sys.executable).with_name("yolo-ext"))
FAST = ("imgsz=64", "latency_runs=0")


def widths(path: Path) -> dict[str, int]:
    model = torch.load(path, weights_only=False)["model"]
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def yolo_ext(*args: str) -> tuple[int, str, str]:
    """``yolo-ext <args>`` in this process (as the console script calls it): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        cli.main(["yolo-ext", *args])
    return done.value.code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_three_class("yolo11n.yaml", tmp_path_factory.mktemp("modes") / "best.pt")


@pytest.fixture(scope="module")
def pruned(base) -> Path:
    """``yolo-ext prune`` with Ultralytics-style keys: an alias (ratio=), both spellings, a switch."""
    out = base.with_name("mode.pt")
    code, stdout, stderr = yolo_ext("prune", f"model={base}", "prune-type=l1", "ratio=0.3", "uniform=True",
                                    f"output={out}", *FAST)
    assert code == 0, stderr[-3000:]
    assert f"Saved {out}" in stdout
    return out


def test_prune_mode_prunes_as_the_tool_does(base, pruned):
    spec = importlib.util.spec_from_file_location("prune_tool", REPO / "tools" / "prune.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = base.with_name("tool.pt")
    args = ["--model-path", str(base), "--prune_type", "l1", "--prune-ratio", "0.3", "--uniform", "--output", str(out),
            "--imgsz", "64", "--latency-runs", "0"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert tool.main(tool.get_args_parser().parse_args(args)) == 0
    assert widths(pruned) == widths(out) != widths(base)
    (by_mode,), (by_tool,) = (torch.load(p, weights_only=False)["model"].yolo_ext_pruning for p in (pruned, out))
    assert by_mode["config"] == by_tool["config"] and by_mode["params"] == by_tool["params"]


def test_finetune_mode_trains_the_pruned_network(pruned, tiny_bccd, tmp_path):
    code, stdout, stderr = yolo_ext("finetune", f"model={pruned}", f"data={tiny_bccd}", "epochs=1", "imgsz=64",
                                    "batch=4", "workers=0", "device=cpu", f"project={tmp_path}", "name=ft")
    assert code == 0, stderr[-3000:]
    best = tmp_path / "ft" / "weights" / "best.pt"
    assert f"Fine-tuned weights: {best}" in stdout
    assert widths(best) == widths(pruned)


@pytest.mark.parametrize(
    "args, message",
    [
        (("ratoi=0.3",), "Unknown key 'ratoi'. Did you mean ratio=?"),
        (("ratio=abc",), "ratio: invalid float value: 'abc'"),
        (("prune_type=l3",), "prune_type: invalid choice: 'l3'"),
        (("overwrite=maybe",), "overwrite='maybe': overwrite is a switch; write overwrite=True or overwrite=False"),
        (("global=True", "uniform=True"), "uniform: not allowed with global"),
        (("--ratio", "0.3"), "'--ratio' is not key=value (write ratio=...)"),
        ((), "model_path= (or model=) is required"),
    ],
)
def test_prune_mode_refusals_exit_2_and_write_nothing(base, tmp_path, args, message):
    model = () if not args else (f"model={base}",)
    code, stdout, stderr = yolo_ext("prune", *model, *args, f"output={tmp_path / 'x.pt'}", *FAST)
    assert code == 2 and f"yolo-ext prune: error: {message}" in stderr, stderr
    assert not list(tmp_path.iterdir())


def test_refusals_from_the_api_exit_2(tmp_path):
    code, _, stderr = yolo_ext("prune", f"model={tmp_path / 'missing.pt'}", *FAST)
    assert code == 2 and "does not exist" in stderr
    code, _, stderr = yolo_ext("finetune", f"data={tmp_path / 'data.yaml'}")
    assert code == 2 and "model_path= (or model=) is required, or resume=" in stderr
    assert not list(tmp_path.iterdir())


def test_console_script_lists_the_keys():
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": path}
    result = subprocess.run([EXE, "prune", "help"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for key in ("model_path (model)", "prune_type", "prune_ratio (ratio)", "target_params", "output", "overwrite"):
        assert any(line.strip().startswith(key) for line in lines), key


def test_compare_and_iterative_are_yolo_ext_modes_with_the_tools_options(tmp_path):
    """yolo-ext compare / iterative: the same parser as tools/val.py / iterative_prune.py, in key=value form
    (yolo-ext val stays Ultralytics' own: tests/test_cli.py)."""
    from yolo_ext.cli.commands import iterative, val
    from yolo_ext.cli.options import parse_key_values

    args = parse_key_values(val.get_args_parser(), ["data=d.yaml", "checkpoints=[a.pt,b.pt]", "imgsz=320"])
    assert args.checkpoints == ["a.pt", "b.pt"] and args.imgsz == 320 and args.data == "d.yaml"
    args = parse_key_values(iterative.get_args_parser(), ["model=a.pt", "data=d.yaml", "ratio=0.5", "rounds=2"])
    assert (args.model_path, args.prune_ratio, args.rounds) == ("a.pt", 0.5, 2)
    code, _, err = yolo_ext("compare", "data=d.yaml")
    assert code == 2 and "checkpoints" in err
    code, out, _ = yolo_ext("iterative", "help")
    assert code == 0 and "rounds" in out and "target_params" in out
