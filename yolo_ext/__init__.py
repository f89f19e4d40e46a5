"""yolo_ext: attention / RepViT modules, structured pruning and pruned-model fine-tuning for Ultralytics YOLO.

Importing the package registers its modules with Ultralytics' model parser, so ``YOLO("my-model.yaml")`` can name
them. Loading a checkpoint that contains them imports this package too (pickle resolves ``yolo_ext.nn.*``), which is
how DDP workers and fresh processes get the registration without any extra step. It also makes Ultralytics keep a
pruned network when a pruned checkpoint is trained without yolo_ext's trainer (:mod:`yolo_ext.keep_pruned`).
"""

from yolo_ext import keep_pruned
from yolo_ext.cfg_paths import model_yaml, model_yamls
from yolo_ext.nn import C3k2_RVB, C3k2_RVB_SE, MCA, ContextAggregation, CoordAtt
from yolo_ext.registry import ModelYAMLError, RegistrationError, is_registered, register, registered_modules

__version__ = "0.1.0"

register()
keep_pruned.install()

__all__ = [
    "MCA",
    "C3k2_RVB",
    "C3k2_RVB_SE",
    "ContextAggregation",
    "CoordAtt",
    "ModelYAMLError",
    "RegistrationError",
    "__version__",
    "is_registered",
    "model_yaml",
    "model_yamls",
    "register",
    "registered_modules",
]
