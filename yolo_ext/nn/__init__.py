"""Neural-network modules of yolo_ext: attention blocks and RepViT-based CSP blocks for Ultralytics YOLO."""

from .context_aggregation import ContextAggregation
from .coordatt import CoordAtt
from .mca import MCA, MCAGate
from .repvit import C3k2_RVB, C3k2_RVB_SE, C3k_RVB, RepVGGDW, RepViTBlock, SqueezeExcite
from .simam import SimAM

__all__ = [
    "C3k2_RVB",
    "C3k2_RVB_SE",
    "C3k_RVB",
    "ContextAggregation",
    "CoordAtt",
    "MCA",
    "MCAGate",
    "RepVGGDW",
    "RepViTBlock",
    "SimAM",
    "SqueezeExcite",
]
