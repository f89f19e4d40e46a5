"""Gradient checkpointing (yolo_ext.train.grad_checkpoint): same outputs, gradients and BN stats; only while training.

Every equality test also counts the ``torch.utils.checkpoint`` calls, so it cannot pass by never checkpointing.
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch
from torch import nn
from ultralytics.nn.tasks import DetectionModel

import yolo_ext
from conftest import randomize
from yolo_ext.nn import MCA, C3k2_RVB, C3k2_RVB_SE, ContextAggregation, CoordAtt, RepViTBlock
from yolo_ext.registry import spec as spec_table
from yolo_ext.registry.spec import ModuleSpec, SpecError
from yolo_ext.train import grad_checkpoint as gc

C = 16


@pytest.fixture(autouse=True)
def no_leaks():
    """Each test leaves the switch and the installed wrappers as it found them."""
    env, installed = os.environ.get(gc.ENV_VAR), dict(gc._OWN_FORWARDS)
    yield
    assert os.environ.get(gc.ENV_VAR) == env
    assert gc._OWN_FORWARDS == installed


@pytest.fixture
def calls(monkeypatch):
    """Count the checkpoint calls the wrapper makes (and still run them)."""
    seen = []
    real = gc.checkpoint

    def counting(fn, *args, **kwargs):
        seen.append(args[0])
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(gc, "checkpoint", counting)
    return seen


def _ctx():
    m = ContextAggregation(C, reduction=2)
    nn.init.normal_(m.m.weight, 0, 0.3)  # a fresh block is an exact identity: make its output depend on every conv
    return m


MODULES = {
    "CoordAtt": (lambda: randomize(CoordAtt(C, reduction=4)), 1),
    "MCA": (lambda: MCA(C, kernel_size=5), 1),
    "MCA-no-spatial": (lambda: MCA(C, no_spatial=True), 1),
    "ContextAggregation": (_ctx, 1),
    "C3k2_RVB_SE": (lambda: randomize(C3k2_RVB_SE(C, 2 * C, 2)), 2),  # one RepViT block per repeat
    "C3k2_RVB_SE-c3k": (lambda: randomize(C3k2_RVB_SE(C, 2 * C, 1, True)), 2),  # two inside the C3k_RVB
    "C3k2_RVB": (lambda: randomize(C3k2_RVB(C, 2 * C, 1)), 1),
}


def _step(m: nn.Module, x: torch.Tensor, backwards: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-mode forward and backward of a non-trivial loss; returns (output, input grad)."""
    x = x.clone().requires_grad_()
    y = m.train()(x)
    loss = (y.sin() * torch.linspace(0.5, 1.5, y.numel()).view_as(y)).sum()
    for i in range(backwards):
        loss.backward(retain_graph=i < backwards - 1)
    return y.detach(), x.grad


def _assert_same_training(a: nn.Module, b: nn.Module) -> None:
    """Parameter grads close, buffers (BN running stats, num_batches_tracked) identical."""
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=f"grad of {name}")
    for (name, s), t in zip(a.named_buffers(), b.buffers()):
        assert torch.equal(s, t), f"buffer {name} differs"


def test_the_spec_table_says_what_is_checkpointed():
    marked = {s.cls for s in spec_table.specs() if s.checkpoint}
    assert marked == {CoordAtt, MCA, ContextAggregation, RepViTBlock}
    assert all(gc.is_installed(cls) for cls in marked)
    assert not gc.is_installed(C3k2_RVB_SE) and not gc.is_installed(yolo_ext.SimAM)
    assert CoordAtt.forward.__wrapped__.__qualname__ == "CoordAtt.forward"  # the module's own forward, wrapped once


@pytest.mark.parametrize("name", MODULES)
def test_outputs_gradients_and_bn_stats_match(name, calls):
    make, expected_calls = MODULES[name]
    torch.manual_seed(0)
    plain = make()
    ckpt = copy.deepcopy(plain)
    x = torch.randn(2, C, 12, 10, generator=torch.Generator().manual_seed(1))

    y0, g0 = _step(plain, x)
    assert not calls
    with yolo_ext.checkpointing():
        y1, g1 = _step(ckpt, x)
    assert len(calls) == expected_calls
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)
    _assert_same_training(plain, ckpt)
    for bn in (m for m in ckpt.modules() if isinstance(m, nn.BatchNorm2d)):
        assert bn.num_batches_tracked.item() == 1  # one update, not one per recomputation


def test_recomputing_twice_still_updates_bn_once(calls):
    """backward(retain_graph=True) twice recomputes twice; grads add up as without checkpointing, stats move once."""
    torch.manual_seed(0)
    plain = randomize(RepViTBlock(C))
    nn.init.normal_(plain.channel_mixer[1].bn.weight)  # the zero-initialised BN would hide the mixer's gradients
    ckpt = copy.deepcopy(plain)
    x = torch.randn(2, C, 8, 8)
    _, g0 = _step(plain, x, backwards=2)
    with yolo_ext.checkpointing():
        _, g1 = _step(ckpt, x, backwards=2)
    assert len(calls) == 1
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)
    _assert_same_training(plain, ckpt)


@pytest.mark.parametrize("cfg", ["yolo11n-coordatt.yaml", "yolo11n-rvb-se.yaml"])
def test_a_whole_model_trains_the_same(cfg, calls):
    torch.manual_seed(0)
    plain = DetectionModel(str(yolo_ext.model_yaml(cfg)), verbose=False)
    ckpt = copy.deepcopy(plain)
    n_checkpointable = sum(gc.is_installed(type(m)) for m in ckpt.modules())
    assert n_checkpointable >= 3
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))

    def loss(model):
        out = model.train()(x)
        feats = out.values() if isinstance(out, dict) else out
        return sum((f.float() ** 2).mean() for f in feats if isinstance(f, torch.Tensor))

    l0 = loss(plain)
    l0.backward()
    with yolo_ext.checkpointing():
        l1 = loss(ckpt)
        l1.backward()
    assert len(calls) == n_checkpointable
    torch.testing.assert_close(l1, l0, rtol=1e-6, atol=0)
    _assert_same_training(plain, ckpt)


def test_not_checkpointed_at_inference_or_when_off(calls):
    m = randomize(C3k2_RVB_SE(C, C, 1))
    x = torch.randn(1, C, 8, 8)
    with yolo_ext.checkpointing():
        m.eval()(x)
        with torch.no_grad():
            m.train()(x)
        with torch.inference_mode():
            m.train()(x)
    with yolo_ext.checkpointing(False):
        m.train()(x).sum().backward()
    assert calls == []


def test_not_checkpointed_while_tracing_or_exporting(calls, tmp_path):
    """Train mode, grad on, switch on: only the tracing / export guard keeps checkpoint out of the graph."""
    onnx = pytest.importorskip("onnx")
    models = [CoordAtt(C, reduction=4), MCA(C), _ctx(), C3k2_RVB_SE(C, C, 1)]
    x = torch.randn(1, C, 8, 8)
    with yolo_ext.checkpointing():
        for i, m in enumerate(models):
            m.train()
            traced = torch.jit.trace(m, x, check_trace=False)
            assert "checkpoint" not in traced.inlined_graph.str()
            path = tmp_path / f"m{i}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's notes on dropping BN stat updates from the graph
                torch.onnx.export(m, (x,), str(path), training=torch.onnx.TrainingMode.PRESERVE, dynamo=False)
            onnx.checker.check_model(onnx.load(str(path)))
    assert calls == []


def test_nested_checkpointable_modules_checkpoint_once(calls):
    """A registered checkpointable module holding a CoordAtt: the outer recomputation covers the inner one."""

    class Outer(nn.Module):
        def __init__(self, c1):
            super().__init__()
            self.att = randomize(CoordAtt(c1, reduction=4))
            self.conv = nn.Conv2d(c1, c1, 3, padding=1)

        def forward(self, x):
            return self.conv(self.att(x))

    yolo_ext.register_module(Outer, checkpoint=True)
    try:
        torch.manual_seed(0)
        plain = Outer(C)
        ckpt = copy.deepcopy(plain)
        x = torch.randn(2, C, 8, 8)
        y0, g0 = _step(plain, x)
        with yolo_ext.checkpointing():
            y1, g1 = _step(ckpt, x)
        assert [type(m) for m in calls] == [Outer]
        torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)
        _assert_same_training(plain, ckpt)
    finally:
        yolo_ext.unregister_module(Outer)


def test_registering_installs_and_unregistering_restores_the_forward():
    class OwnForward(nn.Module):
        def __init__(self, c1):
            super().__init__()
            self.conv = nn.Conv2d(c1, c1, 1)

        def forward(self, x):
            return self.conv(x)

    class Inherited(OwnForward):
        pass

    own = OwnForward.__dict__["forward"]
    yolo_ext.register_module(OwnForward, checkpoint=True)
    yolo_ext.register_module(Inherited, checkpoint=True)
    try:
        assert OwnForward.forward is not own and OwnForward.forward.__wrapped__ is own
        assert Inherited.forward.__wrapped__ is own  # the base's wrapper is not wrapped again
    finally:
        yolo_ext.unregister_module(Inherited)
        yolo_ext.unregister_module(OwnForward)
    assert OwnForward.__dict__["forward"] is own and "forward" not in Inherited.__dict__


def test_a_checkpointed_split_block_still_splits():
    """A C3k2-like block registered with checkpoint=True keeps its stock forward for the pruner's split."""
    from ultralytics.nn.modules import C3k2

    from yolo_ext.prune.split import is_split_block

    class MyC3k2(C3k2):
        pass

    yolo_ext.register_module(MyC3k2, parse="c3k2", checkpoint=True)
    try:
        assert gc.is_installed(MyC3k2) and is_split_block(MyC3k2(C, C, 1))
    finally:
        yolo_ext.unregister_module(MyC3k2)


def test_the_switch_and_its_errors(monkeypatch):
    monkeypatch.delenv(gc.ENV_VAR, raising=False)
    assert not yolo_ext.checkpointing_enabled()
    with yolo_ext.checkpointing():
        assert yolo_ext.checkpointing_enabled()
        with yolo_ext.checkpointing(False):
            assert not yolo_ext.checkpointing_enabled()
        assert yolo_ext.checkpointing_enabled()
        yolo_ext.set_checkpointing(False)
        assert os.environ[gc.ENV_VAR] == "0"
    assert gc.ENV_VAR not in os.environ  # put back as it was: unset

    with pytest.raises(RuntimeError, match="boom"), yolo_ext.checkpointing():
        raise RuntimeError("boom")
    assert gc.ENV_VAR not in os.environ

    for word, on in (("1", True), (" Yes", True), ("ON", True), ("0", False), ("off", False), ("", False)):
        monkeypatch.setenv(gc.ENV_VAR, word)
        assert yolo_ext.checkpointing_enabled() is on
    monkeypatch.setenv(gc.ENV_VAR, "sometimes")
    with pytest.raises(ValueError, match=r"YOLO_EXT_CHECKPOINT='sometimes' is not understood: set it to 1"):
        yolo_ext.checkpointing_enabled()
    with pytest.raises(TypeError, match="True or False"):
        yolo_ext.set_checkpointing("1")
    with pytest.raises(SpecError, match="checkpoint must be True or False"):
        ModuleSpec(nn.Identity, checkpoint="yes")


def test_yolo_ext_train_checkpoints_every_training_step(tiny_bccd, tmp_path, monkeypatch, calls):
    """The CLI with the environment variable, through Ultralytics' trainer: each training batch checkpoints every
    RepViT block once; validation (eval mode), the EMA copy and the final val never do."""
    from yolo_ext.cli import app as cli

    monkeypatch.setenv(gc.ENV_VAR, "1")
    cli.main(["yolo-ext", "train", "model=yolo11n-rvb-se.yaml", f"data={tiny_bccd}", "epochs=1", "imgsz=64", "batch=4",
              "workers=0", "device=cpu", "plots=False", f"project={tmp_path}", "name=ckpt", "exist_ok=True"])
    images = len(list((tiny_bccd.parent / "images" / "train").glob("*.jpg")))
    blocks = sum(isinstance(m, RepViTBlock) for m in DetectionModel(str(yolo_ext.model_yaml("yolo11n-rvb-se.yaml")),
                                                                    verbose=False).modules())
    assert blocks == 11 and len(calls) == -(-images // 4) * blocks
    assert {type(m) for m in calls} == {RepViTBlock}
    assert (tmp_path / "ckpt" / "weights" / "last.pt").is_file()
