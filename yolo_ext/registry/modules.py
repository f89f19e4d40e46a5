"""Every module yolo_ext knows, one :class:`~yolo_ext.registry.spec.ModuleSpec` line each: parse, prune, check,
checkpoint.

To add a module: write its family file in ``yolo_ext/nn/`` and add one line here; a leaf's prune rule goes in
:mod:`yolo_ext.prune.leaves` and a check in :mod:`yolo_ext.prune.validate`, named on the line. The parser, the pruner,
the validator, the package exports and the tests over all modules pick it up (see :mod:`yolo_ext.registry.spec`). A
user's own module takes the same path through :func:`yolo_ext.register_module`.

The Ultralytics and torch lines (``parse=None``) are classes Ultralytics' parser already builds; they are listed for
how they prune and what the validator checks. ``checkpoint=True`` marks what training may recompute in backward to
save memory (:mod:`yolo_ext.train.grad_checkpoint`): the attention modules, and the RepViT blocks inside C3k2_RVB(_SE)
rather than the whole CSP block, whose cv1 / cv2 activations are cheap next to the blocks'.
"""

from __future__ import annotations

from torch import nn
from ultralytics.nn.modules import C2PSA, PSA, C2f
from ultralytics.nn.modules.block import AAttn, Attention

from yolo_ext.nn import MCA, C3k2_RVB, C3k2_RVB_SE, ContextAggregation, CoordAtt, RepViTBlock, SimAM
from yolo_ext.prune import leaves, validate
from yolo_ext.registry.spec import ModuleSpec, add

# YOLOv10's SCDown, C2fCIB (a C2f: split), CIB and RepVGGDW need no line: they are traced. RepVGGDW must not become
# a leaf: Torch-Pruning leaves the inside of every *instance* of a customized class untraced, subclasses included, and
# yolo_ext's RepViT RepVGGDW subclasses it (its traced stored ``dim`` is not read by any forward or fuse).
SPECS: tuple[ModuleSpec, ...] = (
    # yolo_ext modules, named in model YAMLs
    ModuleSpec(C3k2_RVB, parse="c3k2", prune="split"),
    ModuleSpec(C3k2_RVB_SE, parse="c3k2", prune="split"),
    ModuleSpec(CoordAtt, prune=leaves.CoordAttPruner, checkpoint=True),
    ModuleSpec(MCA, prune=leaves.MCAPruner, checkpoint=True),
    ModuleSpec(ContextAggregation, prune=leaves.ContextAggregationPruner, check=validate.check_context_aggregation,
               checkpoint=True),
    ModuleSpec(SimAM, prune="trace"),
    # yolo_ext inner blocks (built by the modules above, not named in YAMLs)
    ModuleSpec(RepViTBlock, parse=None, checkpoint=True),
    # Ultralytics and torch classes the parser already knows
    ModuleSpec(C2f, parse=None, prune="split", check=validate.check_split_block),
    ModuleSpec(C2PSA, parse=None, prune="split", check=validate.check_split_block),
    ModuleSpec(Attention, parse=None, prune=leaves.AttentionPruner, check=validate.check_attention),
    ModuleSpec(AAttn, parse=None, prune=leaves.AreaAttentionPruner),
    ModuleSpec(PSA, parse=None, prune="split", check=validate.check_split_block),  # YOLOv10; its attn is Attention
    ModuleSpec(nn.Conv2d, parse=None, check=validate.check_conv),
    ModuleSpec(nn.BatchNorm2d, parse=None, check=validate.check_bn),
)

for _spec in SPECS:
    add(_spec, shipped=True)
