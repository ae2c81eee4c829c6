"""Training hooks, registered into mmdet.registry.HOOKS on import."""
from .atomic_checkpoint_hook import AtomicCheckpointHook, atomic_replace, is_complete_checkpoint
from .data_model_check_hook import DataModelCheckHook  # noqa: F401
from .epoch_reseed_hook import EpochReseedHook
from .divergence_guard_hook import (DivergenceError, DivergenceGuardHook, FiniteLossHook,
                                    NonFiniteLossError, NonFiniteStateError)

__all__ = [
    'AtomicCheckpointHook', 'DivergenceError', 'DivergenceGuardHook', 'EpochReseedHook',
    'FiniteLossHook', 'NonFiniteLossError', 'NonFiniteStateError', 'atomic_replace',
    'is_complete_checkpoint'
]
