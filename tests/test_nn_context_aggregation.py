"""ContextAggregation: shapes, exact identity when fresh, an independent reference, properties, validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolo_ext.nn import ContextAggregation

CHANNELS = (1, 3, 8, 64, 96)
SIZES = ((1, 1), (7, 5), (32, 32))


def _reference(m: ContextAggregation, x: torch.Tensor) -> torch.Tensor:
    """Global context written with einsum: softmax over positions weights the values, projected and gated."""
    n, c, h, w = x.shape
    attn = torch.softmax(m.k(x).reshape(n, h * w), dim=1)  # (N, HW)
    ctx = torch.einsum("ncp,np->nc", m.v(x).reshape(n, -1, h * w), attn)  # (N, c')
    proj = torch.einsum("oc,nc->no", m.m.weight[:, :, 0, 0], ctx) + m.m.bias  # (N, C)
    return x + proj[:, :, None, None] * torch.sigmoid(m.a(x))


def _perturb(m: ContextAggregation) -> ContextAggregation:
    with torch.no_grad():
        m.m.weight.normal_(0, 0.5)
        m.m.bias.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("c", CHANNELS)
def test_shape_and_finite(c, hw, batch, train):
    m = _perturb(ContextAggregation(c, reduction=2)).train(train)
    x = torch.randn(batch, c, *hw)
    y = m(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("reduction", [1, 4])
@pytest.mark.parametrize("c", CHANNELS)
def test_fresh_block_is_exact_identity(c, reduction):
    x = torch.randn(2, c, 7, 5)
    assert torch.equal(ContextAggregation(c, reduction)(x), x)


def test_nonzero_projection_changes_output_and_matches_reference():
    torch.manual_seed(0)
    m = _perturb(ContextAggregation(16, reduction=4))
    x = torch.randn(2, 16, 9, 7)
    y = m(x)
    assert not torch.equal(y, x)
    torch.testing.assert_close(y, _reference(m, x), atol=1e-6, rtol=1e-5)


def test_zero_projection_still_learns():
    """The zero-initialised projection receives a gradient, so training moves the block off the identity."""
    m = ContextAggregation(8)
    m(torch.randn(2, 8, 6, 6)).mul(torch.randn(2, 8, 6, 6)).sum().backward()
    assert m.m.weight.grad.abs().sum() > 0 and m.m.bias.grad.abs().sum() > 0


def test_context_is_global():
    """Changing one far-away position changes the output everywhere (after the projection is non-zero)."""
    torch.manual_seed(0)
    m = _perturb(ContextAggregation(8))
    x = torch.randn(1, 8, 10, 10)
    x2 = x.clone()
    x2[:, :, 9, 9] += 5.0
    diff = (m(x2) - m(x)).abs()[0, :, 0, 0]
    assert diff.max() > 1e-4


@pytest.mark.parametrize(("c", "reduction", "inter"), [(64, 1, 64), (64, 4, 16), (3, 8, 1), (1, 1, 1)])
def test_widths(c, reduction, inter):
    m = ContextAggregation(c, reduction)
    assert (m.in_channels, m.inter_channels) == (c, inter)
    assert m.a.out_channels == m.k.out_channels == 1


def test_inter_channels_follows_weights_after_narrowing():
    m = ContextAggregation(32)
    m.v, m.m = nn.Conv2d(32, 5, 1), nn.Conv2d(5, 32, 1)
    assert m.inter_channels == 5
    assert m(torch.randn(2, 32, 4, 6)).shape == (2, 32, 4, 6)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ((0,), r"ContextAggregation: c1 .* got 0"),
        ((-2,), r"ContextAggregation: c1 .* got -2"),
        ((64, 0), r"ContextAggregation: reduction .* got 0"),
        ((64, 1.5), r"ContextAggregation: reduction .* got 1.5"),
    ],
)
def test_bad_sizes_raise(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        ContextAggregation(*args)


@pytest.mark.parametrize(("c1", "reduction", "width"), [(64, 4, 16), (6, 4, 2), (3, 8, 1), (5, 1, 5)])
def test_value_width_from_make_divisible(c1, reduction, width):
    """Nearest width (timm's make_divisible with divisor 1), never zero however large the reduction."""
    assert ContextAggregation(c1, reduction).inter_channels == width
