"""The one way a component builds its sub-modules from config."""
import copy
from typing import Any

from torch import nn

from mmdet.registry import MODELS
from mmdet.utils import OptConfigType


def build_module(cfg: OptConfigType, default_type: str, **defaults: Any) -> nn.Module:
    """Build ``cfg`` from the registry as ``default_type`` unless it names a ``type``.

    Every sub-module of this package is built this way, so a config swaps any layer,
    attention or prior by adding ``type=...`` while the paper's component stays the default.

    Args:
        cfg (dict, optional): The sub-module's config (None: all defaults). It is deep-copied,
            never modified, so one config can build several modules.
        default_type (str): Registry name used when ``cfg`` has no ``type``.
        **defaults: Arguments the parent fills in (e.g. ``embed_dims``) unless ``cfg`` sets
            them.

    Returns:
        nn.Module: The built module.
    """
    cfg = copy.deepcopy(dict(cfg or {}))
    for key, value in defaults.items():
        cfg.setdefault(key, value)
    cfg.setdefault('type', default_type)
    return MODELS.build(cfg)


__all__ = ['build_module']
