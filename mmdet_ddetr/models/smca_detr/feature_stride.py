"""How SMCA maps a Gaussian centre from input pixels to feature cells.

The centre is predicted in input pixels and the prior is evaluated on the cell grid of a
feature map, so ``centre_cells = centre_px / stride``. The official single-scale code divides by
a hard-coded 32 (C5); a backbone or neck of another stride (C4, DC5, C3) would then misplace
every centre without any error. Here the stride is one of:

* ``'auto'``: derived from the padded input and the feature map (the default);
* a number: the configured stride, checked against the feature map on every eager forward;
* ``'official'``: the official fixed rule (32, never checked), which the parity check uses.

Derivation: a stride-``s`` stage of ResNet-like backbones (``padding = kernel // 2``) maps ``n``
input pixels to ``ceil(n / s)`` cells, so for a power-of-two ``s <= n`` the ratio ``n / cells``
lies in ``(s / 2, s]``: ``s`` is the smallest power of two that is at least that ratio.
"""
import math
from typing import Sequence, Union

import torch
from torch import Tensor

#: The stride the official single-scale code hard-codes (C5).
OFFICIAL_STRIDE = 32
#: Accepted ``feat_stride`` settings besides a positive number.
STRIDE_MODES = ('auto', 'official')

StrideSetting = Union[str, float]
# Largest derivable stride (2**12 = 4096 px per cell).
_MAX_LOG2_STRIDE = 12


def check_stride_setting(setting: StrideSetting, where: str) -> StrideSetting:
    """Validate a ``feat_stride`` setting at build time; returns it (numbers as float)."""
    if isinstance(setting, str):
        if setting not in STRIDE_MODES:
            raise ValueError(f'{where}={setting!r}: expected a positive number or one of '
                             f'{STRIDE_MODES}')
        return setting
    if isinstance(setting, bool) or not isinstance(setting, (int, float)) or setting <= 0:
        raise ValueError(f'{where}={setting!r}: expected a positive number (input pixels per '
                         f'feature cell) or one of {STRIDE_MODES}')
    return float(setting)


def _cells(size: int, stride: float) -> int:
    """Cells a stride-``stride`` stage makes of ``size`` input pixels: ``ceil(size / stride)``."""
    return math.ceil(size / stride)


def derive_stride(input_hw: Sequence[int], feat_hw: Sequence[int]) -> int:
    """The power-of-two stride that turns the padded input ``input_hw`` into ``feat_hw``.

    Raises:
        ValueError: when no power-of-two stride explains both axes (e.g. a backbone that crops
            or a feature map that is not from this input).
    """
    # Per axis the smallest power of two >= n / cells; an axis of one cell only gives a lower
    # bound (every stride >= n yields one cell), so the largest per-axis value is the answer.
    stride = max(2**max(0, math.ceil(math.log2(n / c))) for n, c in zip(input_hw, feat_hw))
    if any(_cells(n, stride) != c for n, c in zip(input_hw, feat_hw)):
        raise ValueError(
            f'SMCA cannot derive the feature stride: a {input_hw[0]}x{input_hw[1]} padded input '
            f'gave a {feat_hw[0]}x{feat_hw[1]} feature map, which no power-of-two stride '
            'explains; set decoder.feat_stride to the number of input pixels per cell')
    return stride


def resolve_stride(setting: StrideSetting, input_hw: Sequence[int], feat_hw: Sequence[int],
                   ref: Tensor, where: str = 'decoder.feat_stride') -> Union[float, Tensor]:
    """Input pixels per cell of a ``feat_hw`` map computed from a ``input_hw`` padded input.

    Args:
        setting: ``'auto'``, ``'official'`` or a configured number (see the module docstring).
        input_hw: (H, W) of the padded batch input, in pixels.
        feat_hw: (H, W) of the feature map.
        ref: A tensor of the centres' device and dtype (for the in-graph derivation).
        where: The config key, for error messages.

    Returns:
        float | Tensor: the stride; a 0-d tensor for ``'auto'`` on symbolic shapes
        (torch.compile with dynamic shapes, dynamic export), where Python arithmetic on them
        would specialise the graph to one image size.

    Raises:
        ValueError: when a configured number contradicts the map or no stride explains it
            (checked on concrete sizes; graphs traced with symbolic sizes skip the checks).
    """
    if setting == 'official':
        return float(OFFICIAL_STRIDE)
    if any(isinstance(v, torch.SymInt) for v in (*input_hw, *feat_hw)):  # compile, export
        return _derive_in_graph(input_hw, feat_hw, ref) if setting == 'auto' else setting
    input_hw, feat_hw = tuple(map(int, input_hw)), tuple(map(int, feat_hw))
    if setting == 'auto':
        return float(derive_stride(input_hw, feat_hw))
    if any(_cells(n, setting) != c for n, c in zip(input_hw, feat_hw)):
        raise ValueError(
            f'{where}={setting:g} contradicts the feature map: a {input_hw[0]}x{input_hw[1]} '
            f'padded input gave a {feat_hw[0]}x{feat_hw[1]} map ({_describe(input_hw, feat_hw)}); '
            f"set {where}='auto' (derived from the map) or the backbone/neck's real stride")
    return setting


def _describe(input_hw: Sequence[int], feat_hw: Sequence[int]) -> str:
    try:
        return f'stride {derive_stride(input_hw, feat_hw)}'
    except ValueError:
        return 'no power-of-two stride explains it'


def _derive_in_graph(input_hw: Sequence[int], feat_hw: Sequence[int], ref: Tensor) -> Tensor:
    """:func:`derive_stride` as tensor operations (no consistency check): per axis the
    smallest power of two >= input / cells, then the largest over the axes."""
    ratio = (ref.new_tensor(list(input_hw), dtype=torch.float32) /
             ref.new_tensor(list(feat_hw), dtype=torch.float32))
    powers = 2.0**torch.arange(_MAX_LOG2_STRIDE + 1, device=ref.device, dtype=torch.float32)
    candidates = torch.where(powers[:, None] >= ratio, powers[:, None], powers[-1])
    return candidates.amin(dim=0).amax(dim=0).to(ref.dtype)
