"""Model components, registered into mmdet.registry.MODELS on import."""
from .common import FiniteCostHungarianAssigner, NonFiniteCostError  # noqa: F401  (TASK_UTILS)
from .deformable_detr import *  # noqa: F401,F403
from .efficient import *  # noqa: F401,F403
from . import smca_detr  # noqa: F401  (SMCA-DETR)
