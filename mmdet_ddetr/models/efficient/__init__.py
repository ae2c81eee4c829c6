"""CPU speed devices, not paper components: opt-in replacements of mmcv layers with the same
parameters and state-dict keys, faster on CPU (see docs/benchmarks.md). Nothing builds them by
default; a config names them (``type='LeanMultiheadAttention'``, ``'FastDropoutFFN'``,
``'FastDropoutMSDeformAttention'``), as the CPU quickstart configs do."""
# The module fast_dropout stays reachable as a module (its function is not re-exported here).
from .fast_dropout import FastDropout, use_fast_dropout
from .fast_dropout_layers import FastDropoutFFN, FastDropoutMSDeformAttention
from .lean_attention import LeanMultiheadAttention

__all__ = [
    'LeanMultiheadAttention', 'FastDropout', 'use_fast_dropout',
    'FastDropoutFFN', 'FastDropoutMSDeformAttention'
]
