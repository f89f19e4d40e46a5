"""RepViT family: width rounding, SE, RepVGGDW re-parameterisation, blocks, C3k2 containers under Ultralytics' fuse."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from ultralytics.nn.modules import Conv
from ultralytics.nn.modules.block import C2f
from ultralytics.nn.modules.block import RepVGGDW as UltralyticsRepVGGDW
from ultralytics.utils.torch_utils import fuse_conv_and_bn

from conftest import Host, randomize
from yolo_ext.nn import C3k2_RVB, C3k2_RVB_SE, C3k_RVB, RepVGGDW, RepViTBlock, SqueezeExcite
from yolo_ext.nn._utils import make_divisible

CHANNELS = (1, 3, 8, 64, 96)
SIZES = ((1, 1), (7, 5), (32, 32))
TOL = {"atol": 1e-4, "rtol": 1e-4}




def _host_fuse(m: nn.Module) -> Host:
    host = Host(m).eval()
    host.fuse(verbose=False)
    assert host.is_fused()
    return host


# ---------------------------------------------------------------------------------------------------- make_divisible
@pytest.mark.parametrize(
    ("v", "divisor", "min_value", "expected"),
    [(16, 8, None, 16), (0.25, 8, None, 8), (0.0, 8, None, 8), (20, 8, None, 24), (100, 8, None, 104),
     (76, 8, None, 80), (10, 8, None, 16), (24 * 0.25, 8, 4, 8), (3, 1, None, 3), (33, 16, None, 32)],
)  # fmt: skip
def test_make_divisible(v, divisor, min_value, expected):
    out = make_divisible(v, divisor, min_value)
    assert out == expected
    assert out % divisor == 0 and out >= 0.9 * v and out >= 1


@pytest.mark.parametrize(("divisor", "min_value"), [(0, None), (8, 0)])
def test_make_divisible_rejects_zero(divisor, min_value):
    with pytest.raises(ValueError, match="make_divisible"):
        make_divisible(10, divisor, min_value)


# ----------------------------------------------------------------------------------------------------- SqueezeExcite
@pytest.mark.parametrize(("c", "rd"), [(1, 8), (3, 8), (8, 8), (64, 16), (96, 24), (200, 48)])
def test_se_width_never_zero(c, rd):
    se = SqueezeExcite(c)
    assert (se.in_channels, se.rd_channels) == (c, rd)


def test_se_scales_each_channel_by_its_global_average():
    torch.manual_seed(0)
    se = randomize(SqueezeExcite(16), convs=True)
    x = torch.rand(2, 16, 5, 7) + 0.5
    y = se(x)
    s = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(y, x * s)
    ratio = y / x  # constant over H, W
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))


# ---------------------------------------------------------------------------------------------------------- RepVGGDW
def test_repvggdw_structure():
    m = RepVGGDW(8)
    assert isinstance(m, UltralyticsRepVGGDW)
    assert isinstance(m.conv, Conv) and m.conv.conv.kernel_size == (3, 3) and m.conv.conv.groups == 8
    assert m.conv1.kernel_size == (1, 1) and m.conv1.groups == 8 and m.conv1.bias is not None
    assert isinstance(m.bn, nn.BatchNorm2d) and m.dim == 8
    # the parent's __init__ ran (its attributes exist), but none of the YOLOv10 branches' weights remain
    assert isinstance(m.act, nn.Identity)
    assert {k.split(".")[0] for k in m.state_dict()} == {"conv", "conv1", "bn"}
    assert sum(p.numel() for p in m.parameters()) == 8 * 9 + 2 * 8 + 8 * 2 + 2 * 8  # dw3x3 + BN, dw1x1 + bias, BN


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("c", CHANNELS)
def test_repvggdw_fuse_equals_unfused(c, hw):
    m = randomize(RepVGGDW(c), seed=c, convs=True).eval()
    x = torch.randn(2, c, *hw)
    ref = m(x)
    m.fuse()
    assert isinstance(m.conv, nn.Conv2d) and not hasattr(m, "conv1") and not hasattr(m, "bn")
    assert m.conv.kernel_size == (3, 3) and m.conv.groups == c and m.conv.bias is not None and m.dim == c
    torch.testing.assert_close(m.forward_fuse(x), ref, **TOL)
    torch.testing.assert_close(m(x), ref, **TOL)  # forward also works without Ultralytics' swap
    m.fuse()  # second call is a no-op
    torch.testing.assert_close(m.forward_fuse(x), ref, **TOL)


def test_repvggdw_fuse_after_inner_bn_was_folded():
    """Robust to the inner Conv being fused first (other traversal orders than Ultralytics')."""
    m = randomize(RepVGGDW(16), convs=True).eval()
    x = torch.randn(1, 16, 9, 9)
    ref = m(x)
    m.conv.conv = fuse_conv_and_bn(m.conv.conv, m.conv.bn)
    del m.conv.bn
    m.conv.forward = m.conv.forward_fuse
    m.fuse()
    torch.testing.assert_close(m(x), ref, **TOL)


def test_repvggdw_fused_through_ultralytics_basemodel_twice():
    m = randomize(RepVGGDW(24), convs=True).eval()
    x = torch.randn(2, 24, 12, 10)
    ref = m(x)
    host = _host_fuse(m)
    torch.testing.assert_close(host(x), ref, **TOL)
    host.fuse(verbose=False)  # is_fused() -> nothing to do
    m.fuse()
    torch.testing.assert_close(host(x), ref, **TOL)


def test_repvggdw_fuse_keeps_dtype():
    m = randomize(RepVGGDW(8), convs=True).eval().double()
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    ref = m(x)
    m.fuse()
    assert m.conv.weight.dtype == torch.float64
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------- RepViTBlock
def _bn_modes():
    """(batch, hw, train) combinations; BatchNorm cannot train on a single value per channel (1 image, 1x1 map)."""
    return [(b, hw, t) for b in (1, 2) for hw in SIZES for t in (True, False) if not (t and b == 1 and hw == (1, 1))]


@pytest.mark.parametrize(("batch", "hw", "train"), _bn_modes())
@pytest.mark.parametrize("use_se", [True, False])
@pytest.mark.parametrize("c", CHANNELS)
def test_repvit_block_shape(c, use_se, batch, hw, train):
    m = RepViTBlock(c, use_se).train(train)
    x = torch.randn(batch, c, *hw)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_repvit_block_structure_and_identity_channel_mixer():
    b = RepViTBlock(16, use_se=True).eval()
    assert isinstance(b.token_mixer[0], RepVGGDW) and isinstance(b.token_mixer[1], SqueezeExcite) and b.use_se
    assert not RepViTBlock(16, use_se=False).use_se
    assert (b.in_channels, b.hidden_channels) == (16, 32)
    assert isinstance(b.channel_mixer[0].act, nn.GELU) and isinstance(b.channel_mixer[1].act, nn.Identity)
    assert torch.count_nonzero(b.channel_mixer[1].bn.weight) == 0
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(b(x), b.token_mixer(x))  # fresh channel mixer adds exactly zero


@pytest.mark.parametrize("use_se", [True, False])
def test_repvit_block_fused_equals_unfused(use_se):
    m = randomize(RepViTBlock(32, use_se), convs=True).eval()
    x = torch.randn(2, 32, 10, 6)
    ref = m(x)
    torch.testing.assert_close(_host_fuse(m)(x), ref, **TOL)


# ---------------------------------------------------------------------------------------------------- C3k_RVB / C3k2
def test_c3k_rvb_structure():
    m = C3k_RVB(16, 32, n=3, use_se=False, e=0.25)
    assert m.cv1.conv.out_channels == 8 and len(m.m) == 3
    assert all(isinstance(b, RepViTBlock) and b.in_channels == 8 and not b.use_se for b in m.m)
    assert m(torch.randn(1, 16, 8, 8)).shape == (1, 32, 8, 8)


@pytest.mark.parametrize(("cls", "se"), [(C3k2_RVB, False), (C3k2_RVB_SE, True)])
@pytest.mark.parametrize("c3k", [False, True])
def test_c3k2_structure(cls, se, c3k):
    m = cls(16, 32, 2, c3k, 0.5)
    assert isinstance(m, C2f) and m.use_se is se and m.c == 16 and len(m.m) == 2
    inner = C3k_RVB if c3k else RepViTBlock
    assert all(type(b) is inner for b in m.m)
    blocks = [b for b in m.modules() if isinstance(b, RepViTBlock)]
    assert len(blocks) == (4 if c3k else 2) and all(b.use_se is se for b in blocks)
    assert C3k2_RVB_SE.__mro__[1] is C3k2_RVB


@pytest.mark.parametrize(("batch", "hw", "train"), _bn_modes())
@pytest.mark.parametrize("c3k", [False, True])
@pytest.mark.parametrize("cls", [C3k2_RVB, C3k2_RVB_SE])
@pytest.mark.parametrize("c", (1, 3, 8, 64))
def test_c3k2_shape(c, cls, c3k, batch, hw, train):
    c2 = 4 * c if c3k else 2 * c  # c3k needs a hidden width of at least 2
    m = cls(c, c2, 1, c3k).train(train)
    x = torch.randn(batch, c, *hw)
    y = m(x)
    assert y.shape == (batch, c2, *hw) and torch.isfinite(y).all()


@pytest.mark.parametrize("c3k", [False, True])
@pytest.mark.parametrize("cls", [C3k2_RVB, C3k2_RVB_SE])
def test_c3k2_fused_equals_unfused_and_split(cls, c3k):
    m = randomize(cls(24, 48, 2, c3k), seed=int(c3k), convs=True).eval()
    x = torch.randn(2, 24, 13, 9)
    ref = m(x)
    torch.testing.assert_close(m.forward_split(x), ref, **TOL)
    unfused = copy.deepcopy(m)
    host = _host_fuse(m)
    dws = [d for d in m.modules() if isinstance(d, UltralyticsRepVGGDW)]
    assert len(dws) == (4 if c3k else 2) and all(d.forward == d.forward_fuse for d in dws)
    assert not any(isinstance(b, nn.BatchNorm2d) for b in m.modules())  # every BN folded
    torch.testing.assert_close(host(x), ref, **TOL)
    m.forward = m.forward_split  # what export does to C2f subclasses
    torch.testing.assert_close(m(x), ref, **TOL)
    torch.testing.assert_close(unfused(x), ref)


@pytest.mark.parametrize(
    ("factory", "pattern"),
    [
        (lambda: RepVGGDW(0), r"RepVGGDW: ed .* got 0"),
        (lambda: SqueezeExcite(0), r"SqueezeExcite: c1 .* got 0"),
        (lambda: SqueezeExcite(8, rd_ratio=0), r"SqueezeExcite: rd_ratio .* got 0"),
        (lambda: SqueezeExcite(8, rd_divisor=0), r"SqueezeExcite: rd_divisor .* got 0"),
        (lambda: RepViTBlock(-1), r"RepViTBlock: c1 .* got -1"),
        (lambda: C3k_RVB(8, 1), r"C3k_RVB: hidden width int\(c2 \* e\) = int\(1 \* 0.5\) = 0"),
        (lambda: C3k_RVB(8, 8, n=0), r"C3k_RVB: n .* got 0"),
        (lambda: C3k2_RVB(0, 8), r"C3k2_RVB: c1 .* got 0"),
        (lambda: C3k2_RVB(8, 0), r"C3k2_RVB: c2 .* got 0"),
        (lambda: C3k2_RVB(8, 16, 0), r"C3k2_RVB: n .* got 0"),
        (lambda: C3k2_RVB(8, 16, 1, False, 0.05), r"C3k2_RVB: hidden width .* = 0 must be >= 1; raise e"),
        (lambda: C3k2_RVB(8, 2, 1, True), r"C3k2_RVB: c3k=True needs a hidden width int\(c2 \* e\) >= 2, got .* = 1"),
        (lambda: C3k2_RVB_SE(8, 16, 1, True, 0.0), r"C3k2_RVB_SE: e must be a number > 0, got 0.0"),
        (lambda: C3k2_RVB_SE(8, 16, 1, True, -0.5), r"C3k2_RVB_SE: e .* got -0.5"),
    ],
)
def test_bad_sizes_raise(factory, pattern):
    with pytest.raises(ValueError, match=pattern):
        factory()



def test_repvggdw_dim_follows_the_weights():
    m = RepVGGDW(8)
    with pytest.raises(AttributeError, match="follows the weights"):
        m.dim = 4
    m.dim = 8  # what the parent's __init__ does: accepted when it agrees
