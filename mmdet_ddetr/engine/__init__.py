"""Training-engine robustness: safe checkpoint loading, atomic checkpoints, loss checks.

Importing this package registers the hooks, the CPU-capable DDP wrapper and the
:class:`RegionalCompileRunner` (the configs' ``runner_type``); ``import mmdet_ddetr`` then switches
safe checkpoint loading on (:func:`use_safe_checkpoint_loader`).
"""
from .checkpoint_safety import (CheckpointLoadError, load_from_local, load_from_url,
                                runner_checkpoint_globals_allowed,
                                runner_checkpoint_safe_globals, use_safe_checkpoint_loader)
from .distributed import CPUDistributedDataParallel, setup_distributed
from .hooks import (AtomicCheckpointHook, DivergenceError, DivergenceGuardHook,
                    EpochReseedHook, FiniteLossHook, NonFiniteLossError, NonFiniteStateError)
from .runner import RegionalCompileRunner

__all__ = [
    'AtomicCheckpointHook', 'CheckpointLoadError', 'CPUDistributedDataParallel',
    'DivergenceError', 'DivergenceGuardHook', 'EpochReseedHook', 'FiniteLossHook',
    'NonFiniteLossError', 'NonFiniteStateError', 'RegionalCompileRunner',
    'load_from_local', 'load_from_url',
    'runner_checkpoint_globals_allowed', 'runner_checkpoint_safe_globals', 'setup_distributed',
    'use_safe_checkpoint_loader'
]
