"""CoordAtt: shapes, the factorised gate it computes, Ultralytics fusing, properties after pruning, validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv

from conftest import Host
from yolo_ext.nn import CoordAtt

CHANNELS = (1, 3, 8, 64, 96)
SIZES = ((1, 1), (7, 5), (32, 32))



def _reference(m: CoordAtt, x: torch.Tensor) -> torch.Tensor:
    """The paper's formulation written independently (pool, shared conv, split, two gates); eval mode only."""
    n, c, h, w = x.shape
    x_h = F.adaptive_avg_pool2d(x, (h, 1))
    x_w = F.adaptive_avg_pool2d(x, (1, w)).permute(0, 1, 3, 2)
    y = m.conv1(torch.cat([x_h, x_w], dim=2))
    y_h, y_w = torch.split(y, [h, w], dim=2)
    return x * torch.sigmoid(m.conv_h(y_h)) * torch.sigmoid(m.conv_w(y_w.permute(0, 1, 3, 2)))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("c", CHANNELS)
def test_shape_and_finite(c, hw, batch, train):
    m = CoordAtt(c).train(train)
    x = torch.randn(batch, c, *hw)
    y = m(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("c,hw", [(8, (7, 5)), (64, (32, 24)), (3, (1, 9))])
def test_matches_reference_formulation(c, hw):
    torch.manual_seed(0)
    m = CoordAtt(c).eval()
    x = torch.randn(2, c, *hw)
    torch.testing.assert_close(m(x), _reference(m, x), atol=1e-6, rtol=1e-5)


def test_gate_factorises_into_rows_times_columns():
    """out / x = a_h[h] * a_w[w] per channel: a rank-1 map with every entry in (0, 1)."""
    torch.manual_seed(0)
    m = CoordAtt(16).eval()
    x = torch.rand(1, 16, 9, 6) + 0.5  # away from zero so the ratio is well defined
    r = (m(x) / x)[0]
    assert ((r > 0) & (r < 1)).all()
    # rank 1: r[h, w] * r[h', w'] == r[h, w'] * r[h', w]
    lhs = r[:, :, None, :, None] * r[:, None, :, None, :]
    torch.testing.assert_close(lhs, r[:, :, None, None, :] * r[:, None, :, :, None])
    singular = torch.linalg.svdvals(r)
    assert (singular[:, 1:] < 1e-5 * singular[:, :1]).all()


@pytest.mark.parametrize(
    ("c1", "kwargs", "mid"), [(64, {}, 8), (512, {}, 16), (512, {"reduction": 8}, 64), (3, {"min_mid": 2}, 2)]
)
def test_mid_channels_rule(c1, kwargs, mid):
    m = CoordAtt(c1, **kwargs)
    assert (m.in_channels, m.mid_channels) == (c1, mid)


def test_ultralytics_fuse_folds_bn_and_keeps_output():
    torch.manual_seed(0)
    m = CoordAtt(32)
    bn = m.conv1.bn
    bn.running_mean.normal_(0, 0.2), bn.running_var.uniform_(0.5, 2.0), bn.weight.data.normal_(1, 0.2)
    host = Host(m).eval()
    x = torch.randn(2, 32, 11, 7)
    before = host(x)
    host.fuse(verbose=False)
    assert not hasattr(m.conv1, "bn")
    torch.testing.assert_close(host(x), before, atol=1e-5, rtol=1e-5)


def test_properties_follow_weights_after_narrowing():
    m = CoordAtt(32)
    m.conv1 = Conv(32, 4, 1, act=nn.Hardswish())
    m.conv_h, m.conv_w = nn.Conv2d(4, 32, 1), nn.Conv2d(4, 32, 1)
    assert (m.in_channels, m.mid_channels) == (32, 4)
    assert m(torch.randn(1, 32, 5, 3)).shape == (1, 32, 5, 3)


@pytest.mark.parametrize(
    ("args", "kwargs", "pattern"),
    [
        ((0,), {}, r"CoordAtt: c1 .* got 0"),
        ((-3,), {}, r"CoordAtt: c1 .* got -3"),
        ((8.5,), {}, r"CoordAtt: c1 .* got 8.5"),
        ((True,), {}, r"CoordAtt: c1 .* got True"),
        ((64,), {"reduction": 0}, r"CoordAtt: reduction .* got 0"),
        ((64,), {"min_mid": 0}, r"CoordAtt: min_mid .* got 0"),
    ],
)
def test_bad_sizes_raise(args, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        CoordAtt(*args, **kwargs)
