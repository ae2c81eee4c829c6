"""What both families use: building sub-modules from config, the post-norm DETR layers built
from config, padding masks and valid ratios, the set-prediction loss (with the Hungarian
matcher that refuses non-finite costs), the top-k detections, the ``TorchDefault`` initializer
and the check that a checkpoint's weights fit."""
from .build import build_module
from .init import TorchDefaultInit
from .levels import valid_ratio, valid_size
from .post_norm_layers import (PostNormDecoderLayer, PostNormEncoder, PostNormEncoderLayer,
                               add_ffn_and_norms)
from .set_prediction_loss import (FiniteCostHungarianAssigner, NonFiniteCostError,
                                  SetPredictionLossMixin)
from .weights_fit import (WeightsFitMixin, WeightsMismatchError, compare_weights,
                          weights_loading_mode)

__all__ = [
    'build_module', 'FiniteCostHungarianAssigner', 'NonFiniteCostError',
    'SetPredictionLossMixin', 'add_ffn_and_norms', 'PostNormEncoderLayer', 'PostNormEncoder',
    'PostNormDecoderLayer', 'valid_ratio', 'valid_size', 'TorchDefaultInit', 'WeightsFitMixin',
    'WeightsMismatchError', 'compare_weights', 'weights_loading_mode'
]
