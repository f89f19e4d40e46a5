"""yolo_ext: attention / RepViT modules, structured pruning and pruned-model fine-tuning for Ultralytics YOLO.

Importing the package installs its integration with Ultralytics (:mod:`yolo_ext.integration`): the YAML names of its
modules, the parser edit that builds them, the keep-pruned hooks and the safe-load list; :func:`uninstall` takes every
change back and :func:`install` makes them again. Loading a checkpoint that contains yolo_ext modules imports this
package too (pickle resolves ``yolo_ext.nn.*``), which is how DDP workers and fresh processes get the integration
without any extra step. Training and the pruning engine are imported on first use (:mod:`yolo_ext.train`,
:mod:`yolo_ext.prune`).

Where things live: :mod:`yolo_ext.nn` the modules; :mod:`yolo_ext.registry` what yolo_ext knows per module (one
spec line each, and :func:`register_module` for yours); :mod:`yolo_ext.integration` every touch of Ultralytics and
torch; :mod:`yolo_ext.prune` pruning (the record: :mod:`yolo_ext.prune.record`); :mod:`yolo_ext.latency` measured
latency; :mod:`yolo_ext.train` trainers and fine-tuning; :mod:`yolo_ext.cli` the ``yolo-ext`` command and the tools'
options; :mod:`yolo_ext.io` file writing and checkpoint reading; :mod:`yolo_ext.cfg` the shipped model YAMLs.

:func:`set_checkpointing` / :func:`checkpointing` (or ``YOLO_EXT_CHECKPOINT=1``) trade recomputation for training
memory in the attention and RepViT blocks (:mod:`yolo_ext.train.grad_checkpoint`).
"""

import yolo_ext.registry.modules  # noqa: F401  (the shipped spec lines fill the table before the integration reads it)
from yolo_ext._version import __version__
from yolo_ext.cfg import model_names, model_yaml, model_yamls
from yolo_ext.integration import (
    ModelYAMLError,
    RegistrationError,
    install,
    is_installed,
    uninstall,
)
from yolo_ext.nn import MCA, C3k2_RVB, C3k2_RVB_SE, ContextAggregation, CoordAtt, SimAM
from yolo_ext.registry import ModuleSpec, SpecError, register_module, registered_modules, unregister_module
from yolo_ext.train.grad_checkpoint import checkpointing, checkpointing_enabled, set_checkpointing

install()

__all__ = [
    "MCA",
    "C3k2_RVB",
    "C3k2_RVB_SE",
    "ContextAggregation",
    "CoordAtt",
    "ModelYAMLError",
    "ModuleSpec",
    "RegistrationError",
    "SimAM",
    "SpecError",
    "__version__",
    "checkpointing",
    "checkpointing_enabled",
    "install",
    "is_installed",
    "model_names",
    "model_yaml",
    "model_yamls",
    "register_module",
    "registered_modules",
    "set_checkpointing",
    "uninstall",
    "unregister_module",
]
