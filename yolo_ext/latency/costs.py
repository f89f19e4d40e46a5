"""What a conv costs at given channel counts: MACs, parameters, or milliseconds from a measured table.

The allocation (:mod:`yolo_ext.prune.allocate`) changes channel counts group by group and asks a :class:`CostModel`
what each change saves. Every cost here is a sum over convs of a function of the conv's (input, output) channels, so
a change is priced by re-pricing only the convs it touches. Spatial sizes come from one forward at a small input,
scaled to the deployment size (every YOLO conv and resize scales the map exactly when both sides divide by 32).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

#: small input the spatial sizes are read at (a multiple of the largest stride on both axes)
PROBE_SIZE = (64, 64)


@dataclass(frozen=True)
class ConvShape:
    """One conv of the network: its channels, kernel and the sizes of its input and output maps at the deployment."""

    name: str
    cin: int
    cout: int
    groups: int
    k: int  # kernel height x width
    hw: int  # output height x width
    in_hw: int

    @property
    def depthwise(self) -> bool:
        """Depthwise convs lose input and output channels together (groups follow the width)."""
        return self.groups > 1 and self.groups == self.cin == self.cout

    def macs(self, cin: int, cout: int) -> float:
        if self.depthwise:
            return float(cout * self.k * self.hw)
        return float(cin // self.groups * cout * self.k * self.hw)

    def params(self, cin: int, cout: int) -> float:
        per_out = 1 if self.depthwise else cin // self.groups
        return float(per_out * cout * self.k)

    def activations(self, cin: int, cout: int) -> float:
        """Elements read and written: memory traffic, what 1x1 and depthwise convs are bound by."""
        return float(cin * self.in_hw + cout * self.hw)


def conv_shapes(model: nn.Module, imgsz: tuple[int, int]) -> dict[str, ConvShape]:
    """Every ``nn.Conv2d`` that runs in ``model``'s forward, with its map sizes at ``imgsz`` (read at
    :data:`PROBE_SIZE` and scaled)."""
    sizes: dict[str, tuple[int, int]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            def hook(mod, args, out, name=name):
                sizes[name] = (args[0].shape[-2] * args[0].shape[-1], out.shape[-2] * out.shape[-1])
            handles.append(m.register_forward_hook(hook))
    p = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *PROBE_SIZE, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    scale = (imgsz[0] // PROBE_SIZE[0]) * (imgsz[1] // PROBE_SIZE[1])
    if imgsz[0] % PROBE_SIZE[0] or imgsz[1] % PROBE_SIZE[1]:  # not a multiple of 64: scale by area
        scale = imgsz[0] * imgsz[1] / (PROBE_SIZE[0] * PROBE_SIZE[1])
    modules = dict(model.named_modules())
    out = {}
    for name, (in_hw, hw) in sizes.items():
        m = modules[name]
        out[name] = ConvShape(
            name, m.in_channels, m.out_channels, m.groups, m.kernel_size[0] * m.kernel_size[1],
            round(hw * scale), round(in_hw * scale),
        )
    return out


class CostModel:
    """Cost of a network as a constant plus a sum over convs of ``conv_cost(shape, cin, cout)``."""

    unit = ""
    constant = 0.0

    def conv_cost(self, shape: ConvShape, cin: int, cout: int) -> float:
        raise NotImplementedError

    def total(self, shapes: Mapping[str, ConvShape], widths: Mapping[str, tuple[int, int]] | None = None) -> float:
        """Cost of the network with each conv at ``widths[name]`` (default: its own channels)."""
        widths = widths or {}
        return self.constant + sum(
            self.conv_cost(s, *widths.get(n, (s.cin, s.cout))) for n, s in shapes.items()
        )


class MacsCost(CostModel):
    """Multiply-accumulates (what GFLOPs counts, /2)."""

    unit = "MACs"

    def conv_cost(self, shape: ConvShape, cin: int, cout: int) -> float:
        return shape.macs(cin, cout)


class ParamsCost(CostModel):
    """Conv weights."""

    unit = "params"

    def conv_cost(self, shape: ConvShape, cin: int, cout: int) -> float:
        return shape.params(cin, cout)
