"""MCA: shapes, the paper's kernel rule, an independent reference, finite std on 1x1 maps, validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yolo_ext.nn import MCA, MCAGate
from yolo_ext.nn.mca import mca_channel_kernel

CHANNELS = (1, 3, 8, 64, 96)
SIZES = ((1, 1), (7, 5), (32, 32))


def _gate_reference(gate: MCAGate, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Gate ``x`` (N, C, H, W) along ``dim`` without permutes: statistics over the other two axes, 1-D conv."""
    others = tuple(d for d in (1, 2, 3) if d != dim)
    avg = x.mean(dim=others)  # (N, L)
    std = x.std(dim=others, unbiased=False)
    w0, w1 = torch.sigmoid(gate.weight)
    s = 0.5 * (avg + std) + w0 * avg + w1 * std
    k = gate.conv.weight.shape[-1]
    s = F.conv1d(s[:, None], gate.conv.weight.view(1, 1, k), padding=k // 2)[:, 0]  # (N, L)
    shape = [x.shape[0], 1, 1, 1]
    shape[dim] = x.shape[dim]
    return x * torch.sigmoid(s).view(shape)


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("c", CHANNELS)
def test_shape_finite_and_backward(c, hw, batch, no_spatial):
    m = MCA(c, no_spatial=no_spatial)
    x = torch.randn(batch, c, *hw, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y.square().sum().backward()  # the std of a single element must not give NaN gradients
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_train_and_eval_agree():
    """No batch statistics anywhere: the mode must not matter."""
    m, x = MCA(16), torch.randn(2, 16, 6, 5)
    torch.testing.assert_close(m.train()(x), m.eval()(x))


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize(("c", "hw"), [(8, (7, 5)), (64, (12, 9)), (3, (1, 6))])
def test_matches_reference(c, hw, no_spatial):
    torch.manual_seed(0)
    m = MCA(c, no_spatial=no_spatial, kernel_size=5)
    for p in m.parameters():  # non-trivial weights for every gate
        p.data.normal_(0, 0.5)
    x = torch.randn(2, c, *hw)
    parts = [_gate_reference(m.h_cw, x, 2), _gate_reference(m.w_hc, x, 3)]
    if not no_spatial:
        parts.append(_gate_reference(m.c_hw, x, 1))
    torch.testing.assert_close(m(x), sum(parts) / len(parts), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("c", "k"),
    [(1, 3), (2, 3), (8, 3), (16, 3), (64, 3), (128, 3), (256, 5), (512, 5), (1024, 5), (2048, 7), (32768, 9)],
)
def test_kernel_rule(c, k):
    assert mca_channel_kernel(c) == k
    m = MCA(c)
    assert m.kernel_size == k == m.c_hw.kernel_size
    assert m.h_cw.kernel_size == m.w_hc.kernel_size == 3


@pytest.mark.parametrize(("c", "k"), [(64, 7), (2048, 3), (8, 1), (256, 5)])
def test_explicit_kernel_kept(c, k):
    """A pruned model rebuilds with its trained kernel, whatever the rule says for the new width."""
    m = MCA(c, kernel_size=k)
    assert m.kernel_size == k
    assert m(torch.randn(1, c, 4, 4)).shape == (1, c, 4, 4)


def test_no_spatial_drops_the_channel_gate():
    m = MCA(32, no_spatial=True)
    assert m.no_spatial and m.c_hw is None and m.kernel_size is None
    x = torch.randn(1, 32, 5, 5)
    torch.testing.assert_close(m(x), 0.5 * (_gate_reference(m.h_cw, x, 2) + _gate_reference(m.w_hc, x, 3)))


def test_kernel_size_follows_weights():
    m = MCA(64)
    m.c_hw.conv = nn.Conv2d(1, 1, (1, 5), padding=(0, 2), bias=False)
    assert m.kernel_size == 5
    assert m(torch.randn(1, 64, 3, 3)).shape == (1, 64, 3, 3)


def test_one_by_one_map_statistics():
    """On a 1x1 map the channel gate sees std 0 and the spatial gates see a proper std over channels."""
    m = MCA(8)
    x = torch.randn(2, 8, 1, 1)
    y = m(x)
    assert torch.isfinite(y).all()
    parts = _gate_reference(m.h_cw, x, 2), _gate_reference(m.w_hc, x, 3), _gate_reference(m.c_hw, x, 1)
    torch.testing.assert_close(y, sum(parts) / 3)


@pytest.mark.parametrize(
    ("factory", "pattern"),
    [
        (lambda: MCA(0), r"MCA: c1 .* got 0"),
        (lambda: MCA(-1), r"MCA: c1 .* got -1"),
        (lambda: MCA(64, kernel_size=4), r"MCA: kernel_size must be odd, got 4"),
        (lambda: MCA(64, kernel_size=0), r"MCA: kernel_size .* got 0"),
        (lambda: MCA(64, kernel_size=3.0), r"MCA: kernel_size .* got 3.0"),
        (lambda: MCAGate(2), r"MCAGate: k_size must be odd, got 2"),
        (lambda: MCAGate(-3), r"MCAGate: k_size .* got -3"),
    ],
)
def test_bad_sizes_raise(factory, pattern):
    with pytest.raises(ValueError, match=pattern):
        factory()
