"""SimAM: the paper's formula, parameter-free, finite on a 1x1 map, clear errors."""

from __future__ import annotations

import pytest
import torch

from yolo_ext.nn import SimAM


def reference(x: torch.Tensor, e_lambda: float = 1e-4) -> torch.Tensor:
    """The paper's listing: n = h * w - 1, unbiased variance over the other positions, sigmoid of 1 / energy."""
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    return x * torch.sigmoid(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + e_lambda)) + 0.5)


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 3, 1, 4), (1, 16, 20, 20)])
@pytest.mark.parametrize("e_lambda", [1e-4, 0.1])
def test_matches_the_paper(shape, e_lambda):
    x = torch.randn(*shape) * 3
    torch.testing.assert_close(SimAM(shape[1], e_lambda)(x), reference(x, e_lambda))


def test_no_parameters_and_finite_on_one_position():
    m = SimAM(4)
    assert sum(p.numel() for p in m.parameters()) == 0
    x = torch.randn(2, 4, 1, 1)
    torch.testing.assert_close(m(x), x * torch.sigmoid(torch.tensor(0.5)))  # nothing stands out: neutral gate
    assert torch.isnan(reference(x)).all()  # the literal formula divides 0 by 0 there


@pytest.mark.parametrize(
    "kw, pattern", [(dict(c1=0), "c1 must be an integer >= 1"), (dict(c1=8, e_lambda=0), "e_lambda")]
)
def test_bad_arguments(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        SimAM(**kw)
