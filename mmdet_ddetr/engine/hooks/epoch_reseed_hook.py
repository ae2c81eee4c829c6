"""Reseed the random generators at every epoch start, so that a resumed run repeats exactly."""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmdet.registry import HOOKS

__all__ = ['EpochReseedHook', 'epoch_seed']


def epoch_seed(base_seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed derived from (base seed, epoch, rank), well spread by SeedSequence."""
    return int(np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, epoch, rank])
               .generate_state(1)[0])


@HOOKS.register_module()
class EpochReseedHook(Hook):
    """Seed ``random``, numpy and torch from ``(runner.seed, epoch, rank)`` before each epoch.

    MMEngine checkpoints do not contain generator states, and between the end of one epoch and
    the start of the next an uninterrupted run draws random numbers a resumed run does not (the
    validation dataloader draws its base seed, for example). So after ``--resume`` dropout masks
    and random augmentations differ from the uninterrupted run, and so do the final weights.
    Deriving every epoch's generator state from the epoch number alone makes an epoch-based run
    resumed from an epoch checkpoint bit-identical to an uninterrupted one (given deterministic
    kernels and ``num_workers=0`` or non-persistent workers: persistent dataloader workers keep
    their own generators across epochs and are seeded by MMEngine when they start).

    ``runner.seed`` is the config's ``randomness.seed``, or the random seed MMEngine drew and
    stored in the checkpoint. Ranks get different streams only with
    ``randomness.diff_rank_seed=True``, as in MMEngine.

    Config::

        default_hooks = dict(reseed=dict(type='EpochReseedHook'))
    """

    priority = 'VERY_HIGH'  # before any other hook of before_train_epoch may draw numbers

    def before_train_epoch(self, runner) -> None:
        """Seed all generators for ``runner.epoch``."""
        # The config's `randomness` (public) rather than the Runner's private _randomness_cfg.
        diff_rank = bool((runner.cfg.get('randomness') or {}).get('diff_rank_seed', False))
        seed = epoch_seed(runner.seed, runner.epoch, get_rank() if diff_rank else 0)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device
