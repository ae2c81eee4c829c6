"""mmdet_ddetr: Deformable DETR and SMCA-DETR as MMDetection 3.x registry components.

Importing the package -- what ``custom_imports=dict(imports=['mmdet_ddetr'])`` in a config
does -- registers every component (models, hooks, the runner) into the OpenMMLab registries and
makes one global change: MMEngine's checkpoint loaders (local files, ``http(s)://``,
``torchvision://``, ``open-mmlab://``, ``mmcls://``) become weights-only loaders that accept
what MMEngine Runner checkpoints contain (:mod:`mmdet_ddetr.engine.checkpoint_safety`). So every
checkpoint this project writes loads in mmdet's and mmengine's own APIs, and no downloaded file
can run code.
"""
from ._fork_notices import import_mmdet_without_fork_notices
from .version import __version__

import_mmdet_without_fork_notices()  # before our modules import mmdet (OneDL stack)

from . import models  # noqa: E402,F401  (registers the models)
from . import engine  # noqa: E402,F401  (registers the hooks, runner and CPU DDP wrapper)
from .datasets import checked_coco, synthetic_coco  # noqa: E402,F401  (dataset types)

engine.use_safe_checkpoint_loader()

__all__ = ['__version__']
