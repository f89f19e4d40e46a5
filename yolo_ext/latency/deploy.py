"""The network as users deploy it: a fused FP32 copy in export mode, and its ONNX file.

What a runtime executes is not the training graph: BatchNorm is folded into the convs, C2f-family blocks run
``forward_split`` and the head decodes boxes in export mode. Ultralytics' exporter does exactly this before it calls
``torch.onnx.export`` (``ultralytics/engine/exporter.py``); :func:`deployed_copy` repeats those steps on a copy so a
measurement times the graph a user's ``model.export(format="onnx")`` would run, without writing files beside the
user's checkpoint or printing the exporter's banners.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.modules import C2f, Detect


@dataclass(frozen=True)
class Deployment:
    """Where a network runs: input size (h, w), batch and CPU threads (the reference is 640, 1, 1); ``channels`` of
    the input (3 for images)."""

    imgsz: tuple[int, int] = (640, 640)
    batch: int = 1
    threads: int = 1
    channels: int = 3

    def check(self) -> None:
        """Reject settings a runtime cannot be timed at, with what to pass instead."""
        from yolo_ext.latency.errors import LatencyError

        h, w = self.imgsz
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 32 or s % 32 for s in (h, w)):
            raise LatencyError(f"imgsz must be a multiple of 32 (the largest stride), e.g. 640, got {self.imgsz!r}.")
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or not 1 <= self.batch <= 256:
            raise LatencyError(f"batch must be an integer in 1..256, got {self.batch!r}: 1 is the reference.")
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or not 1 <= self.threads <= 1024:
            raise LatencyError(f"threads must be an integer >= 1, got {self.threads!r}: 1 is the reference.")

    def input(self, seed: int = 0) -> torch.Tensor:
        """A fixed random input batch (the same values in every process)."""
        return torch.rand(self.batch, self.channels, *self.imgsz, generator=torch.Generator().manual_seed(seed))

    def describe(self) -> str:
        return f"{self.imgsz[0]}x{self.imgsz[1]}, batch {self.batch}, {self.threads} thread{'s' * (self.threads > 1)}"


def deployed_copy(model: nn.Module) -> nn.Module:
    """A fused FP32 eval copy in Ultralytics' export mode (head decodes, C2f runs ``forward_split``)."""
    model = copy.deepcopy(model).float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if hasattr(model, "fuse"):
        model = model.fuse(verbose=False)
    for m in model.modules():
        if isinstance(m, Detect):
            m.export, m.format, m.dynamic, m.shape = True, "onnx", False, None
        elif isinstance(m, C2f):
            m.forward = m.forward_split
    return model


def export_onnx(model: nn.Module, path: Path, deployment: Deployment) -> Path:
    """Write ``model`` (already :func:`deployed_copy`) as ONNX at a fixed shape, with Ultralytics' opset choice and
    torch's TorchScript-based exporter, as Ultralytics' exporter does."""
    import onnx

    try:
        from ultralytics.utils.export.engine import best_onnx_opset

        opset = best_onnx_opset(onnx)
    except ImportError:  # older Ultralytics 8.4 releases: the opset every torch >= 2.1 exports
        opset = 17
    # torch >= 2.4 would pick its dynamo exporter; older releases have no such switch
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    x = torch.zeros(deployment.batch, deployment.channels, *deployment.imgsz)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes, as in every export
        torch.onnx.export(
            model, x, str(path), opset_version=opset, input_names=["images"],
            output_names=["output0"], **kwargs,  # further outputs (segment's prototypes) keep torch's names
        )
    return path
