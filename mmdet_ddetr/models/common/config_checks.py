"""Build-time checks of a detector config's sizes, so that a typo fails by key name.

Without them ``num_queries=0`` trains "successfully" with a loss of 0, and a float size such as
``embed_dims / 2`` fails deep inside a layer with ``TypeError: empty() received an invalid
combination of arguments``.
"""
import numbers
from typing import Any, Mapping

# Config keys that are counts or widths: whole numbers >= 1 wherever they appear.
SIZE_KEYS = frozenset({'num_queries', 'num_classes', 'embed_dims', 'num_heads',
                       'feedforward_channels', 'num_feats', 'num_layers', 'num_levels',
                       'num_points'})


def check_size(key: str, value: Any) -> None:
    """Raise when ``value`` (the config value at ``key``) is not a whole number >= 1.

    Raises:
        TypeError: ``value`` is not an integer (a float, a bool, a string ...).
        ValueError: ``value`` is < 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f'{key} must be a whole number, got {value!r} '
                        f'({type(value).__name__}); use // instead of / in the config')
    if value < 1:
        raise ValueError(f'{key} must be >= 1, got {value}')


def check_config_sizes(prefix: str, cfg: Any) -> None:
    """Apply :func:`check_size` to every :data:`SIZE_KEYS` entry of a nested config.

    Args:
        prefix: Dotted name of ``cfg`` in the model config, e.g. ``'model.encoder'``.
        cfg: A (nested) dict / list config; other values are ignored.
    """
    if isinstance(cfg, Mapping):
        for key, value in cfg.items():
            name = f'{prefix}.{key}'
            if key in SIZE_KEYS:
                check_size(name, value)
            else:
                check_config_sizes(name, value)
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            check_config_sizes(f'{prefix}[{i}]', value)


def check_detector_sizes(num_queries: Any, **parts: Any) -> None:
    """Check ``model.num_queries`` and the sizes inside the named sub-configs.

    Args:
        num_queries: ``model.num_queries``.
        **parts: Sub-configs by their key in ``model``, e.g. ``encoder=..., bbox_head=...``
            (None entries are skipped).
    """
    check_size('model.num_queries', num_queries)
    for name, cfg in parts.items():
        check_config_sizes(f'model.{name}', cfg)


__all__ = ['SIZE_KEYS', 'check_size', 'check_config_sizes', 'check_detector_sizes']
