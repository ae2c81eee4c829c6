"""Kept so that configs written for mmdet_ddetr <= 0.x, which name this module in
``custom_imports``, still load: importing :mod:`mmdet_ddetr` now switches safe checkpoint
loading on by itself (:func:`mmdet_ddetr.engine.checkpoint_safety.use_safe_checkpoint_loader`).
"""
from .checkpoint_safety import use_safe_checkpoint_loader

use_safe_checkpoint_loader()
