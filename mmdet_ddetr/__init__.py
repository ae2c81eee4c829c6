"""mmdet_ddetr: Deformable DETR and SMCA-DETR as MMDetection 3.x registry components.

Importing the package registers every component (models, hooks) into mmdet's registries, which
is what ``custom_imports=dict(imports=['mmdet_ddetr', ...])`` in a config does. It changes no
other global state: safe checkpoint loading is switched on by the configs, which also import
``mmdet_ddetr.engine.safe_checkpoint_loading``.
"""
from ._fork_notices import import_mmdet_without_fork_notices
from .version import __version__

import_mmdet_without_fork_notices()  # before our modules import mmdet (OneDL stack)

from . import models  # noqa: E402,F401  (registers the models)
from . import engine  # noqa: E402,F401  (registers the hooks and the CPU DDP wrapper)

__all__ = ['__version__']
