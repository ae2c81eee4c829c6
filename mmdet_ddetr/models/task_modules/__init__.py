"""Training-time helpers registered into mmdet.registry.TASK_UTILS."""
from .finite_cost_assigner import FiniteCostHungarianAssigner, NonFiniteCostError

__all__ = ['FiniteCostHungarianAssigner', 'NonFiniteCostError']
