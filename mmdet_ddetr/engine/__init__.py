"""Training-engine robustness: safe checkpoint loading, atomic checkpoints, loss checks.

Importing this package registers the hooks, the CPU-capable DDP wrapper and the
:class:`RegionalCompileRunner` (the configs' ``runner_type``). Safe checkpoint
loading is switched on by importing :mod:`mmdet_ddetr.engine.safe_checkpoint_loading` (the
configs' ``custom_imports`` do), not by importing this package.
"""
from .checkpoint_safety import (CheckpointLoadError, load_from_local,
                                runner_checkpoint_globals_allowed,
                                runner_checkpoint_safe_globals, use_safe_checkpoint_loader)
from .distributed import CPUDistributedDataParallel, setup_distributed
from .hooks import (AtomicCheckpointHook, EpochReseedHook, FiniteLossHook,
                    NonFiniteLossError)
from .runner import RegionalCompileRunner

__all__ = [
    'AtomicCheckpointHook', 'CheckpointLoadError', 'CPUDistributedDataParallel',
    'EpochReseedHook', 'FiniteLossHook', 'NonFiniteLossError', 'RegionalCompileRunner',
    'load_from_local',
    'runner_checkpoint_globals_allowed', 'runner_checkpoint_safe_globals', 'setup_distributed',
    'use_safe_checkpoint_loader'
]
