"""What both families use: building sub-modules from config, the parts every DETR-style layer
builds, padding masks and valid ratios, the set-prediction loss, the Hungarian matcher that
refuses non-finite costs, the post-norm DETR layers built from config, the ``TorchDefault``
initializer and the check that a checkpoint's weights fit."""
from .build import build_module
from .finite_cost_assigner import FiniteCostHungarianAssigner, NonFiniteCostError
from .init import TorchDefaultInit
from .post_norm_layers import (PostNormDecoderLayer, PostNormEncoder, PostNormEncoderLayer,
                               add_ffn_and_norms)
from .levels import valid_ratio
from .weights_fit import (WeightsFitMixin, WeightsMismatchError, compare_weights,
                          weights_loading_mode)

__all__ = [
    'build_module', 'FiniteCostHungarianAssigner', 'NonFiniteCostError', 'add_ffn_and_norms',
    'PostNormEncoderLayer', 'PostNormEncoder', 'PostNormDecoderLayer', 'valid_ratio',
    'TorchDefaultInit', 'WeightsFitMixin', 'WeightsMismatchError', 'compare_weights', 'weights_loading_mode'
]
