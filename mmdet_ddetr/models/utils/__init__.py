"""Helpers shared by the model components: building sub-modules from config, the parts every
DETR-style layer builds, padding masks, the fast CPU dropout and the ``TorchDefault`` initializer."""
from .build import build_module
# The module fast_dropout stays reachable as a module (its function is not re-exported here).
from .fast_dropout import FastDropout, use_fast_dropout
from .layer_parts import add_ffn_and_norms
from .masks import valid_ratio
from .torch_default_init import TorchDefaultInit
from .weights_fit import (WeightsFitMixin, WeightsMismatchError, compare_weights,
                          weights_loading_mode)

__all__ = [
    'build_module', 'FastDropout', 'use_fast_dropout', 'add_ffn_and_norms', 'valid_ratio',
    'TorchDefaultInit', 'WeightsFitMixin', 'WeightsMismatchError', 'compare_weights',
    'weights_loading_mode'
]
