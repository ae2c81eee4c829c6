"""Importing this module makes MMEngine load local checkpoints safely (the one global change).

The configs name it in ``custom_imports``, so ``--resume`` and ``load_from`` work under
torch >= 2.6 in every tool that reads them -- ours, MMDetection's and ``mim``'s -- without
``weights_only=False``: local files go through
:func:`mmdet_ddetr.engine.checkpoint_safety.load_from_local`. ``import mmdet_ddetr`` alone
changes neither MMEngine's loaders nor torch's allow-list.
"""
from .checkpoint_safety import use_safe_checkpoint_loader

use_safe_checkpoint_loader()
