"""Training hooks, registered into mmdet.registry.HOOKS on import."""
from .atomic_checkpoint_hook import AtomicCheckpointHook, atomic_replace, is_complete_checkpoint
from .data_model_check_hook import DataModelCheckHook  # noqa: F401
from .epoch_reseed_hook import EpochReseedHook
from .finite_loss_hook import FiniteLossHook, NonFiniteLossError

__all__ = [
    'AtomicCheckpointHook', 'EpochReseedHook', 'FiniteLossHook', 'NonFiniteLossError',
    'atomic_replace', 'is_complete_checkpoint'
]
