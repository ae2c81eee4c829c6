"""Publish a trained checkpoint: the weights and what inference needs, no training state.

mmdet's convention (``tools/model_converters/publish_model.py``): drop the optimizer, the
``MessageHub`` logs and the scheduler states, keep ``state_dict`` and ``meta`` -- here with the
config, the dataset's classes and palette, so that ``DetInferencer(weights=FILE)`` builds the
model from the file alone -- and name the file after its content (``<stem>-<sha256[:8]>.pth``).
What remains is tensors and plain Python values only: ``torch.load(FILE, weights_only=True)``
reads it in any process, without mmdet_ddetr's loaders.
"""
import hashlib
import io
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, Tuple

import numpy as np
import torch

from ..utils.atomic_io import atomic_open
from ..version import __version__
from .checkpoint_io import ConverterError

__all__ = ['publish_checkpoint']

#: The ``meta`` entries a published file keeps.
KEPT_META = ('cfg', 'dataset_meta', 'epoch', 'iter', 'seed', 'experiment_name', 'time',
             'mmengine_version')


def _plain(value: Any) -> Any:
    """``value`` as plain Python data (what weights-only loading accepts), or None."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return type(value)(items) if not any(i is _DROP for i in items) else _DROP
    if isinstance(value, dict):
        items = {k: _plain(v) for k, v in value.items() if isinstance(k, (str, int))}
        return _DROP if any(v is _DROP for v in items.values()) else items
    return _DROP


_DROP = object()


def _weights(checkpoint: Any, src: str) -> 'OrderedDict[str, torch.Tensor]':
    state = checkpoint.get('state_dict') if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConverterError(
            f'{src} is not a training checkpoint of mmengine\'s Runner (no "state_dict" of '
            'tensors): publish the epoch_N.pth / iter_N.pth files that training writes')
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v.cpu())
                       for k, v in state.items())


def publish_checkpoint(src: str, out: str) -> Tuple[str, int, str]:
    """Write the published form of ``src`` as ``<out stem>-<sha256[:8]><out suffix>``.

    Args:
        src: A checkpoint written by training (``epoch_N.pth``), loaded weights-only.
        out: The requested output name; the hash is inserted before its extension.

    Returns:
        (final path, size in bytes, full sha256).

    Raises:
        ConverterError: ``src`` is not a training checkpoint, or ``out`` / the final name
            already exists, or its folder does not.
    """
    from ..engine.checkpoint_safety import load_from_local
    folder = osp.dirname(osp.abspath(out))
    if not osp.isdir(folder):
        raise ConverterError(f'output folder {folder} does not exist; create it first')
    if osp.exists(out):
        raise ConverterError(f'{out} exists; choose another output name')
    try:
        checkpoint = load_from_local(src, map_location='cpu')
    except (OSError, RuntimeError) as exc:
        raise ConverterError(f'cannot read {src}: {exc}') from exc
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    kept = {k: _plain(meta[k]) for k in KEPT_META if k in meta}
    kept = {k: v for k, v in kept.items() if v is not _DROP}
    kept.update(mmdet_ddetr_version=__version__, published_from=osp.basename(src))
    buffer = io.BytesIO()
    torch.save({'state_dict': _weights(checkpoint, src), 'meta': kept}, buffer)
    data = buffer.getvalue()
    buffer.seek(0)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(buffer)
    if unsafe:  # cannot happen with plain data; never publish a file that needs an allow-list
        raise ConverterError(f'internal error: the published file would need {unsafe}')
    digest = hashlib.sha256(data).hexdigest()
    stem, suffix = osp.splitext(out)
    final = f'{stem}-{digest[:8]}{suffix or ".pth"}'
    if osp.exists(final):
        raise ConverterError(f'{final} exists; it is this very checkpoint, published before')
    with atomic_open(final, 'wb') as f:
        f.write(data)
    return final, len(data), digest
