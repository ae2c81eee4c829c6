"""Reading foreign checkpoints and writing converted ones safely.

Every failure is a :class:`ConverterError` that names the problem and the fix, raised before
anything is written; outputs are written to a temporary file in the destination folder and
renamed into place, so a crash or a kill never leaves a partial checkpoint behind.
"""
import argparse
import os.path as osp
import re
from collections import OrderedDict
from typing import Any, Dict, Optional, Sequence

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


# A Runner checkpoint's meta.cfg names the detector type it was trained with.
_OUR_DETECTOR_TYPES = re.compile(r"type\s*=\s*'(DDETR|SMCADETR|SMCAMultiScaleDETR)'")


def refuse_our_layout(ckpt: Dict[str, Any], our_prefixes: Sequence[str]) -> None:
    """Raise when ``ckpt`` is already in mmdet_ddetr's layout: written by a converter of ours
    (``meta.converted_from``), saved by a training run of ours (``meta.cfg``), or holding a
    weight name only our layout has (one of ``our_prefixes``)."""
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    why = None
    if 'converted_from' in meta:
        why = f'converted before, from {meta["converted_from"]}'
    elif _OUR_DETECTOR_TYPES.search(str(meta.get('cfg', ''))):
        why = 'saved by an mmdet_ddetr training run'
    else:
        key = next((k for k in state_dict_of(ckpt) if k.startswith(tuple(our_prefixes))), None)
        if key is not None:
            why = f'it has the weight {key!r} of our layout'
    if why is not None:
        raise ConverterError(f'this checkpoint is already in mmdet_ddetr\'s layout ({why}): '
                             'nothing to convert, load it as it is (load_from or tools/test.py)')


def check_destination(dst: str, overwrite: bool) -> None:
    """Refuse to clobber an existing file unless asked; the folder must exist."""
    if osp.exists(dst) and not overwrite:
        raise ConverterError(f'destination {dst!r} exists; pass --overwrite to replace it')
    folder = osp.dirname(osp.abspath(dst))
    if not osp.isdir(folder):
        raise ConverterError(f'destination folder {folder!r} does not exist; create it first')


class _WriteErrorRecorder:
    """A file wrapper that remembers the ``OSError`` of a failed write: ``torch.save`` turns it
    into a ``RuntimeError`` ("unexpected pos ...") that no longer says the disk is full."""

    def __init__(self, file) -> None:
        self._file = file
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._file.flush()


def save_atomic(obj: Any, dst: str, overwrite: bool = False) -> None:
    """``torch.save`` to a temporary file beside ``dst``, then rename it into place; a failed
    write (e.g. a full disk) is a :class:`ConverterError` and leaves ``dst`` as it was."""
    check_destination(dst, overwrite)
    recorder = None
    try:
        with atomic_open(dst, 'wb') as f:
            recorder = _WriteErrorRecorder(f)
            torch.save(obj, recorder)
    except (OSError, RuntimeError) as exc:
        error = exc if isinstance(exc, OSError) else getattr(recorder, 'error', None)
        if error is None:  # not about the disk: keep the original error
            raise
        raise ConverterError(f'cannot write {dst!r} ({error.strerror or error}); nothing was '
                             'written there. Free disk space or choose another folder.') from exc


def as_mmengine_checkpoint(state_dict: Dict[str, torch.Tensor],
                           meta: Dict[str, Any]) -> Dict[str, Any]:
    """Wrap converted weights the way mmengine's ``load_from`` expects them."""
    return {'state_dict': OrderedDict(state_dict), 'meta': meta}
