"""Model components, registered into mmdet.registry.MODELS on import."""
from .dense_heads import *  # noqa: F401,F403
from .detectors import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .task_modules import *  # noqa: F401,F403
from . import smca  # noqa: F401  (SMCA-DETR)
