"""Dropout whose CPU mask costs a quarter of the random draws of ``torch.nn.functional.dropout``.

On CPU, torch draws one Mersenne-Twister number per element for the mask and runs the
Bernoulli transform element by element (the vectorised MKL path is taken on Intel CPUs only).
In a DETR training step on CPU that was 12 % of the time. Here every 64-bit draw gives the mask
of four elements (one 16-bit slice each), and the comparison and scaling are vectorised tensor
ops. On other devices (CUDA's fused Philox dropout is already fast) ``F.dropout`` runs unchanged.

The drop probability is represented in units of 2**-16: ``p`` is rounded to the nearest
multiple (0.1 becomes 0.1000061), and the kept values are scaled by the reciprocal of the
*represented* keep probability, so the expectation of the output is still exactly the input.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The mask of one element is a 16-bit slice of a 64-bit random word.
_MASK_BITS = 16
_LEVELS = 1 << _MASK_BITS


def dropped_levels(p: float) -> int:
    """How many of the 2**16 equally likely 16-bit values drop an element, for probability p."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f'dropout probability has to be between 0 and 1, but got {p}')
    return round(p * _LEVELS)


def fast_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element of ``x`` with probability ``p`` (to 2**-16) and rescale the rest.

    Args:
        x: Any tensor.
        p: Drop probability in [0, 1].
        training: Identity when False, as ``F.dropout``.

    Returns:
        Tensor: same shape and dtype as ``x``; differentiable in ``x`` (the gradient is masked
        and scaled the same way).
    """
    dropped = dropped_levels(p)
    if not training or dropped == 0:
        return x
    if dropped == _LEVELS:
        return x * 0
    if x.device.type != 'cpu':
        return F.dropout(x, p, training=True)
    scale = _LEVELS / (_LEVELS - dropped)
    if torch.compiler.is_compiling():
        # The in-place random_ would break the graph, and inductor's own dropout draws a random
        # number per element (SMCA's compiled training step was 0.87x eager with it, 1.28x with
        # dropout off): the mask comes from the opaque op, and the product fuses.
        return x * keep_mask(x.detach(), dropped) * scale
    return x.mul(_draw_keep_mask(x, dropped)).mul_(scale)


def _draw_keep_mask(x: Tensor, dropped: int) -> Tensor:
    """Bool mask shaped like ``x``, True with probability 1 - dropped / 2**16."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
    # Full 64-bit range: each 16-bit slice is then uniform on [-2**15, 2**15).
    slices = words.random_(-2**63, None).view(torch.int16)[:n].view(x.shape)
    return slices >= dropped - _LEVELS // 2


# An operator so that torch.compile keeps the draw as one opaque call. Tagged as seeded random:
# AOTAutograd then saves the mask for the backward instead of drawing it again.
keep_mask = torch.library.custom_op(
    'mmdet_ddetr::fast_dropout_keep_mask', mutates_args=(),
    tags=(torch.Tag.nondeterministic_seeded, ))(_draw_keep_mask)


@keep_mask.register_fake
def _keep_mask_fake(x: Tensor, dropped: int) -> Tensor:
    return torch.empty(x.shape, dtype=torch.bool, device=x.device)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` drawing its CPU mask with :func:`fast_dropout` (``inplace`` is ignored:
    the result is always a new tensor)."""

    def forward(self, input: Tensor) -> Tensor:
        return fast_dropout(input, self.p, self.training)


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Replace every ``nn.Dropout`` (including mmcv's ``Dropout``) below ``module`` by a
    :class:`FastDropout` of the same probability; returns ``module``.

    The replacements hold no parameters and draw nothing at construction, so weights, state
    dicts and the initial random stream are unchanged.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.Dropout) and not isinstance(child, FastDropout):
            setattr(module, name, FastDropout(child.p))
        else:
            use_fast_dropout(child)
    return module
