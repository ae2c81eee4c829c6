"""mmdet_ddetr: Deformable DETR and SMCA-DETR as MMDetection 3.x registry components.

Importing the package registers every component into mmdet's registries, which is what
``custom_imports=dict(imports=['mmdet_ddetr'], allow_failed_imports=False)`` in a config does.
"""
from .version import __version__
from . import models  # noqa: F401  (registers the models)
from . import engine  # noqa: F401  (safe checkpoint loading, training hooks)

__all__ = ['__version__']
