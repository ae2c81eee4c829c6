"""Numerical parity with the official implementations, one module per model family.

Each family module exposes ``check(fixture, device='cpu') -> {name: max_abs_diff}``; fixtures are the files
under ``tests/data/official/`` (their README documents the format).
"""
import importlib
from typing import Any, Callable, Dict

# fixture meta['family'] -> module under mmdet_ddetr.parity
FAMILIES = {'deformable_detr': 'ddetr', 'smca_detr_single_scale': 'smca'}


def checker_for(fixture: Dict[str, Any]) -> Callable[..., Dict[str, float]]:
    """The ``check`` function of the fixture's model family."""
    family = fixture.get('meta', {}).get('family')
    if family not in FAMILIES:
        raise ValueError(f'unknown fixture family {family!r}; known: {sorted(FAMILIES)}')
    return importlib.import_module(f'{__name__}.{FAMILIES[family]}').check
