"""Reading foreign checkpoints and writing converted ones safely.

Every failure is a :class:`ConverterError` that names the problem and the fix, raised before
anything is written; outputs are written to a temporary file in the destination folder and
renamed into place, so a crash or a kill never leaves a partial checkpoint behind.
"""
import argparse
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict

import torch

from ..utils.atomic_io import atomic_open


class ConverterError(RuntimeError):
    """A checkpoint cannot be converted; the message says why and what to do."""


def load_checkpoint_file(path: str) -> Dict[str, Any]:
    """Load a checkpoint with safe (weights-only) unpickling.

    Official training scripts store their ``argparse.Namespace`` next to the weights; that one
    class is allowed, nothing else beyond tensors and containers.
    """
    if not osp.isfile(path):
        raise ConverterError(f'checkpoint {path!r} does not exist (check the path)')
    if osp.getsize(path) == 0:
        raise ConverterError(f'checkpoint {path!r} is empty (0 bytes): re-download or re-copy it')
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise ConverterError(
            f'cannot read checkpoint {path!r}: it is truncated, corrupt or not a PyTorch '
            f'checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). '
            'Re-download or re-copy the file.') from exc
    if not isinstance(ckpt, dict):
        raise ConverterError(f'checkpoint {path!r} holds a {type(ckpt).__name__}, not a dict '
                             'of weights')
    return ckpt


def state_dict_of(ckpt: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The weights of a checkpoint: under ``model`` (official), ``state_dict`` (mmengine) or
    the dict itself."""
    for key in ('model', 'state_dict'):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    raise ConverterError('the checkpoint has no weights (no "model" or "state_dict" entry and '
                         'it is not a plain state_dict)')


def check_destination(dst: str, overwrite: bool) -> None:
    """Refuse to clobber an existing file unless asked; the folder must exist."""
    if osp.exists(dst) and not overwrite:
        raise ConverterError(f'destination {dst!r} exists; pass --overwrite to replace it')
    folder = osp.dirname(osp.abspath(dst))
    if not osp.isdir(folder):
        raise ConverterError(f'destination folder {folder!r} does not exist; create it first')


def save_atomic(obj: Any, dst: str, overwrite: bool = False) -> None:
    """``torch.save`` to a temporary file beside ``dst``, then rename it into place."""
    check_destination(dst, overwrite)
    with atomic_open(dst, 'wb') as f:
        torch.save(obj, f)


def as_mmengine_checkpoint(state_dict: Dict[str, torch.Tensor],
                           meta: Dict[str, Any]) -> Dict[str, Any]:
    """Wrap converted weights the way mmengine's ``load_from`` expects them."""
    return {'state_dict': OrderedDict(state_dict), 'meta': meta}
