"""What both families use: building sub-modules from config, the parts every DETR-style layer
builds, padding masks and valid ratios, the set-prediction loss (with the Hungarian matcher
that refuses non-finite costs), the top-k detections, the fast CPU dropout, the
``TorchDefault`` initializer and the check that a checkpoint's weights fit."""
from .build import build_module
# The module fast_dropout stays reachable as a module (its function is not re-exported here).
from .fast_dropout import FastDropout, use_fast_dropout
from .init import TorchDefaultInit
from .layer_parts import add_ffn_and_norms
from .levels import valid_ratio, valid_size
from .set_prediction_loss import (FiniteCostHungarianAssigner, NonFiniteCostError,
                                  SetPredictionLossMixin)
from .weights_fit import (WeightsFitMixin, WeightsMismatchError, compare_weights,
                          weights_loading_mode)

__all__ = [
    'build_module', 'FastDropout', 'use_fast_dropout', 'FiniteCostHungarianAssigner',
    'NonFiniteCostError', 'SetPredictionLossMixin', 'add_ffn_and_norms', 'valid_ratio',
    'valid_size', 'TorchDefaultInit', 'WeightsFitMixin', 'WeightsMismatchError',
    'compare_weights', 'weights_loading_mode'
]
