"""Training-engine robustness: safe checkpoint loading, atomic checkpoints, loss checks.

Importing this package (done by ``import mmdet_ddetr``) allow-lists the globals of MMEngine
Runner checkpoints for ``torch.load(weights_only=True)`` and registers the hooks and the
CPU-capable DDP wrapper.
"""
from .checkpoint_safety import (CheckpointLoadError, allow_runner_checkpoint_globals,
                                runner_checkpoint_safe_globals)
from .distributed import CPUDistributedDataParallel, setup_distributed
from .hooks import (AtomicCheckpointHook, EpochReseedHook, FiniteLossHook,
                    NonFiniteLossError)

allow_runner_checkpoint_globals()

__all__ = [
    'AtomicCheckpointHook', 'CheckpointLoadError', 'CPUDistributedDataParallel',
    'EpochReseedHook', 'FiniteLossHook', 'NonFiniteLossError',
    'allow_runner_checkpoint_globals', 'runner_checkpoint_safe_globals', 'setup_distributed'
]
