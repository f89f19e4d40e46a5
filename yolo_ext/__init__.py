"""yolo_ext: attention / RepViT modules, structured pruning and pruned-model fine-tuning for Ultralytics YOLO.

Importing the package registers its modules with Ultralytics' model parser, so ``YOLO("my-model.yaml")`` can name
them. Loading a checkpoint that contains them imports this package too (pickle resolves ``yolo_ext.nn.*``), which is
how DDP workers and fresh processes get the registration without any extra step. It also makes Ultralytics keep a
pruned network when a pruned checkpoint is trained without yolo_ext's trainer (:mod:`yolo_ext.keep_pruned`).

Your own module joins with :func:`register_module`; what yolo_ext knows about each module is one line of
:mod:`yolo_ext.module_specs`, and the module classes exported here are the YAML-named ones of that table.
:func:`set_checkpointing` / :func:`checkpointing` (or ``YOLO_EXT_CHECKPOINT=1``) trade recomputation for training
memory in the attention and RepViT blocks (:mod:`yolo_ext.grad_checkpoint`).
"""

from yolo_ext import keep_pruned
from yolo_ext.cfg_paths import model_names, model_yaml, model_yamls
from yolo_ext.grad_checkpoint import checkpointing, checkpointing_enabled, set_checkpointing
from yolo_ext.module_specs import SPECS as _SPECS
from yolo_ext.registry import (
    ModelYAMLError,
    RegistrationError,
    is_registered,
    register,
    register_module,
    registered_modules,
    unregister_module,
)
from yolo_ext.spec import ModuleSpec, SpecError

__version__ = "0.1.0"

register()
keep_pruned.install()

# The shipped modules a YAML can name, from the spec table (so a new spec line is exported without another edit).
_MODULES = {spec.name: spec.cls for spec in _SPECS if spec.parse is not None}
globals().update(_MODULES)

__all__ = sorted(
    [
        *_MODULES,
        "ModelYAMLError",
        "ModuleSpec",
        "RegistrationError",
        "SpecError",
        "__version__",
        "checkpointing",
        "checkpointing_enabled",
        "is_registered",
        "model_names",
        "model_yaml",
        "model_yamls",
        "register",
        "register_module",
        "registered_modules",
        "set_checkpointing",
        "unregister_module",
    ]
)
