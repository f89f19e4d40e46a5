"""ONNX export with dynamic batch / H / W for every module family, checked against PyTorch at two input sizes."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from ultralytics.nn.modules.block import C2f

from conftest import Host, randomize
from yolo_ext.nn import MCA, C3k2_RVB_SE, ContextAggregation, CoordAtt

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

C = 16
SHAPES = ((1, C, 32, 24), (2, C, 20, 40))




def _coordatt():
    return randomize(CoordAtt(C, reduction=4))


def _mca():
    return MCA(C, kernel_size=5)


def _mca_no_spatial():
    return MCA(C, no_spatial=True)


def _context_aggregation():
    m = ContextAggregation(C, reduction=2)
    nn.init.normal_(m.m.weight, 0, 0.3)  # a non-identity block, so the whole graph is exercised
    return m


def _c3k2_rvb_se(c3k: bool):
    def build():
        host = Host(randomize(C3k2_RVB_SE(C, 2 * C, 1, c3k))).eval()
        host.fuse(verbose=False)  # what Ultralytics' exporter does first...
        for m in host.modules():
            if isinstance(m, C2f):
                m.forward = m.forward_split  # ...and then
        return host

    return build


@pytest.mark.parametrize(
    "factory",
    [_coordatt, _mca, _mca_no_spatial, _context_aggregation, _c3k2_rvb_se(False), _c3k2_rvb_se(True)],
    ids=["CoordAtt", "MCA", "MCA-no_spatial", "ContextAggregation", "C3k2_RVB_SE-fused", "C3k2_RVB_SE-c3k-fused"],
)
def test_onnx_dynamic_shapes(factory, tmp_path):
    torch.manual_seed(0)
    model = factory().eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notices
        torch.onnx.export(
            model,
            (torch.randn(*SHAPES[0]),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "h", 3: "w"}},
        )
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in SHAPES:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = session.run(None, {"x": x.numpy()})
        assert got.shape == expected.shape
        torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), atol=1e-4, rtol=1e-4)
