"""Whether a checkpoint's weights fit the detector, checked where they are loaded.

mmengine loads weights with ``strict=False`` almost everywhere (``Runner.load_checkpoint`` for
``tools/test.py`` and ``load_from``, ``init_detector``, ``DetInferencer``) and only *logs* the
keys that did not fit. A checkpoint of another model, with renamed keys or a classifier for
another number of classes then evaluates a partly random model and prints a mAP as if nothing
happened. :class:`WeightsFitMixin` puts the check into the detector itself, so every loading
path gets it, whoever calls it:

* ``'strict'`` (the default: evaluation, inference, export): a missing, unexpected or
  mis-shaped tensor is a :class:`WeightsMismatchError` listing the first keys of each kind and
  what to do;
* ``'resume'``: the same, worded for ``--resume`` (the checkpoint is another model's);
* ``'partial'`` (fine-tuning with ``load_from``, set by the runner): what fits is loaded, the
  tensors that did not are reported by group, and a checkpoint of which (almost) nothing fits
  is refused.

The mode is set with :func:`weights_loading_mode` around a load.
"""
from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import print_log

__all__ = ['WeightsFit', 'WeightsFitMixin', 'WeightsMismatchError', 'compare_weights',
           'weights_loading_mode']

MODES = ('strict', 'resume', 'partial')
#: ``'partial'`` refuses a checkpoint that fills fewer than this fraction of the model's tensors.
MIN_PARTIAL_FRACTION = 0.1
_SHOWN = 5  # keys listed per kind in a message


class WeightsMismatchError(RuntimeError):
    """The weights being loaded do not fit the model; the message says what to do."""


def _ignored(key: str) -> bool:
    # BatchNorm's step counter: absent from many published checkpoints, never a weight.
    return key.endswith('num_batches_tracked')


@dataclass
class WeightsFit:
    """How a state dict fits a model (keys relative to the model)."""
    total: int
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """One line per kind of misfit, with the first keys of each."""
        parts = []
        for name, keys in (('missing', self.missing), ('unexpected', self.unexpected)):
            if keys:
                shown = ', '.join(keys[:_SHOWN]) + (', ...' if len(keys) > _SHOWN else '')
                parts.append(f'{len(keys)} {name} ({shown})')
        if self.mismatched:
            shown = ', '.join(f'{k} {tuple(c)} in the checkpoint, {tuple(m)} in the model'
                              for k, c, m in self.mismatched[:_SHOWN])
            parts.append(f'{len(self.mismatched)} of another shape ({shown}'
                         f'{", ..." if len(self.mismatched) > _SHOWN else ""})')
        return '; '.join(parts)

    def not_loaded_by_group(self) -> Dict[str, int]:
        """Model tensors that were not loaded, counted by their first two name parts."""
        keys = self.missing + [k for k, _, _ in self.mismatched]
        return dict(Counter('.'.join(k.split('.')[:2]) for k in keys))


def compare_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                    prefix: str = '') -> WeightsFit:
    """Compare ``state_dict`` (keys under ``prefix``) with ``model``'s own state dict.

    Args:
        model: The module the weights are for.
        state_dict: The weights being loaded.
        prefix: The module's key prefix inside ``state_dict`` ('' for the root module).

    Returns:
        The fit, by key.
    """
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if not _ignored(k)}
    given = {k[len(prefix):]: v for k, v in state_dict.items()
             if k.startswith(prefix) and not _ignored(k)}
    fit = WeightsFit(total=len(own))
    for key, shape in own.items():
        if key not in given:
            fit.missing.append(key)
        elif not isinstance(given[key], torch.Tensor) or tuple(given[key].shape) != shape:
            fit.mismatched.append((key, tuple(getattr(given[key], 'shape', ())), shape))
        else:
            fit.loaded.append(key)
    fit.unexpected = [k for k in given if k not in own]
    return fit


@contextlib.contextmanager
def weights_loading_mode(model: torch.nn.Module, mode: str,
                         source: Optional[str] = None) -> Iterator[None]:
    """Load weights into ``model`` in ``mode`` ('strict', 'resume' or 'partial') inside the
    block; ``source`` (a path or URL) is named in the messages. Models without
    :class:`WeightsFitMixin` are unaffected."""
    if mode not in MODES:
        raise ValueError(f'weights loading mode must be one of {MODES}, got {mode!r}')
    previous = getattr(model, '_weights_mode', None)
    model._weights_mode = (mode, source)
    try:
        yield
    finally:
        model._weights_mode = previous


def _mismatch_message(fit: WeightsFit, mode: str, source: Optional[str], model_name: str) -> str:
    what = f'The checkpoint {source}' if source else 'The weights'
    if mode == 'resume':
        return (f'{what} cannot be resumed: it was written by a different model than the config '
                f'builds ({model_name}): {fit.describe()}. Resume with the config that trained '
                'it, or start a new run with load_from to fine-tune from it.')
    if not fit.loaded:
        hint = ('None of its tensors belongs to this model: is it the checkpoint of another '
                'model or config? An official Deformable DETR / SMCA-DETR checkpoint must be '
                'converted first: python tools/model_converters/ddetr_to_mmdet_ddetr.py IN OUT '
                '(or smca_official_to_mmdet_ddetr.py).')
    elif fit.mismatched and not fit.missing and not fit.unexpected:
        hint = ('The architecture matches but some shapes differ (e.g. a classifier for '
                'another number of classes): use the config that trained it, or fine-tune '
                'from it with load_from.')
    else:
        hint = ('Check that the config is the one that trained this checkpoint (e.g. '
                'with_box_refine, as_two_stage, num_feature_levels, the backbone), or fine-tune '
                'from it with load_from.')
    return (f'{what} does not fit {model_name} ({len(fit.loaded)} of {fit.total} tensors fit): '
            f'{fit.describe()}. {hint}')


class WeightsFitMixin:
    """Checks, on every load, that a state dict fits the model (see the module docstring).

    Mixed into a detector (before ``nn.Module`` in the bases). The check runs in
    ``_load_from_state_dict`` of the module itself, which both ``torch.nn.Module.load_state_dict``
    and mmengine's ``load_state_dict`` call with the whole state dict before any tensor is
    copied, so nothing is loaded when the check fails.
    """

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        mode, source = getattr(self, '_weights_mode', None) or ('strict', None)
        # Before the check: keys of an earlier layout are renamed, not reported as misfits.
        self._rename_legacy_keys(state_dict, prefix)
        fit = compare_weights(self, state_dict, prefix)
        name = type(self).__name__
        if mode == 'partial':
            self._report_partial(fit, source, name)
        elif not fit.fits:
            raise WeightsMismatchError(_mismatch_message(fit, mode, source, name))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _rename_legacy_keys(self, state_dict: Dict[str, torch.Tensor], prefix: str) -> None:
        """Rename, in place, the keys of an earlier layout of this model to the current ones
        (keys under ``prefix``). None by default; a detector whose layout changed overrides
        it, so that its old checkpoints keep loading on every path."""

    @staticmethod
    def _report_partial(fit: WeightsFit, source: Optional[str], name: str) -> None:
        what = source or 'the checkpoint'
        if len(fit.loaded) < MIN_PARTIAL_FRACTION * fit.total:
            raise WeightsMismatchError(
                f'load_from: only {len(fit.loaded)} of the {fit.total} tensors of {name} are in '
                f'{what}, so fine-tuning would start from an (almost) untrained model: '
                f'{fit.describe()}. Is it the checkpoint of another model, or an official '
                'checkpoint that needs converting (tools/model_converters/)?')
        groups = fit.not_loaded_by_group()
        detail = (', '.join(f'{g} ({n})' for g, n in sorted(groups.items()))
                  if groups else 'none')
        print_log(f'load_from {what}: loaded {len(fit.loaded)} of {fit.total} tensors of '
                  f'{name}; not loaded (kept as initialised): {detail}; '
                  f'{len(fit.unexpected)} checkpoint tensors unused.', logger='current',
                  level=logging.WARNING if groups else logging.INFO)
