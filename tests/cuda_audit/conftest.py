"""The audited step: one training step (loss, ``parse_losses``, backward, the divergence guard's
per-iteration check) and one predict of a small variant on fake CUDA, recorded once per
(variant, precision) and shared by the check modules. See :mod:`.fake_cuda` for how, and
tools/device/README.md for what this proves and what only a GPU can."""
import contextlib
import copy
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch

from tests.conftest import build_model, make_batch
from tests.variants import SMALL_VARIANTS
from .fake_cuda import (CpuKeyedFakeCudaTensor, FactoryRecorder, FakeCudaMode, RecordingExt,
                        all_finite, batch_to_fake_cuda, cpu_autocast_for_cuda, cuda_allowed,
                        flat_tensors, recording_ext, to_fake_cuda)

PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
#: two images of different sizes: padding masks and valid ratios are exercised. The padded
#: batch is 64 x 64 so that C5 is 2 x 2 cells: torch 2.13's CPU bfloat16 conv weight gradient
#: is non-finite now and then (not deterministic) when the input is one cell wide (the neck's
#: extra ``Conv2d(64, 32, 3, 2, 1)`` on a 1-wide C5 under CPU autocast: 21 in 200 tries on
#: 1 x 1, 64 on 2 x 1, 105 on 4 x 1, none on 2 x 2, 1 x 2, 2 x 3 or wider, measured alone),
#: which the stand-in autocast would report as ours.
SIZES = [(64, 64), (48, 40)]


@dataclass
class AuditRun:
    variant: str
    precision: str
    mode: FakeCudaMode
    ext: RecordingExt
    loss_dtypes: Dict[str, torch.dtype]
    loss_finite: bool
    grads_finite: bool
    predict_finite: bool
    #: (phase, event) pairs are in mode.events in order; phase boundaries by index
    phases: Dict[str, Tuple[int, int]] = field(default_factory=dict)

    def events(self, kind: str, phase: Optional[str] = None):
        lo, hi = self.phases[phase] if phase else (0, len(self.mode.events))
        return [e for e in self.mode.events[lo:hi] if e.kind == kind]


def _guard_check(outputs: Dict[str, torch.Tensor]) -> None:
    """The divergence guard's per-iteration check, as the runner calls it after the step: it
    reads what mmengine already logged (host floats), never the step's tensors."""
    from mmengine.logging import MessageHub

    from mmdet_ddetr.engine import DivergenceGuardHook
    hub = MessageHub(f'cuda-audit-{id(outputs)}')
    for name in outputs:
        hub.update_scalar(f'train/{name}', 1.0)
    runner = SimpleNamespace(iter=0, epoch=0, train_dataloader=[0] * 10, message_hub=hub,
                             logger=logging.getLogger('cuda_audit'), work_dir='',
                             optim_wrapper=None)
    DivergenceGuardHook().after_train_iter(runner, 0, outputs=outputs)


def run_audit(variant: str, precision: str,
              plant: Optional[Callable[[torch.nn.Module, RecordingExt], contextlib.AbstractContextManager]] = None
              ) -> AuditRun:
    """Run and record one training step and one predict. ``plant`` (tests of the audit
    itself) gets the fake-CUDA model and the kernel recorder and returns a context manager
    active during both."""
    model = build_model(SMALL_VARIANTS[variant]())
    data = model.data_preprocessor(make_batch(SIZES), training=True)
    dtype = PRECISIONS[precision]
    mode = FakeCudaMode(CpuKeyedFakeCudaTensor, record_dtypes=True)
    phases = {}
    with cuda_allowed(), recording_ext() as ext, mode, FactoryRecorder(mode):
        to_fake_cuda(model, mode, autograd=True)
        batch = batch_to_fake_cuda(data, mode)
        planted = plant(model, ext) if plant else contextlib.nullcontext()
        with planted:
            model.train()
            start = len(mode.events)
            mode.recording = True
            with cpu_autocast_for_cuda(dtype):
                losses = model.loss(batch['inputs'], batch['data_samples'])
                loss, log_vars = model.parse_losses(losses)
            loss.backward()
            _guard_check(log_vars)
            mode.recording = False
            phases['train'] = (start, len(mode.events))
            model.eval()
            start = len(mode.events)
            mode.recording = True
            with torch.no_grad(), cpu_autocast_for_cuda(dtype):
                results = model.predict(batch['inputs'], batch['data_samples'])
            mode.recording = False
            phases['predict'] = (start, len(mode.events))
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        return AuditRun(variant, precision, mode, ext,
                        loss_dtypes={k: v.dtype for k, v in losses.items()
                                     if isinstance(v, torch.Tensor)},
                        loss_finite=all_finite(flat_tensors(losses)),
                        grads_finite=bool(grads) and all_finite(grads),
                        predict_finite=all_finite(flat_tensors([r.pred_instances for r in results])),
                        phases=phases)


_RUNS: Dict[Tuple[str, str], AuditRun] = {}


def audit(variant: str, precision: str) -> AuditRun:
    """The recorded run of a variant in a precision, made once per session."""
    key = (variant, precision)
    if key not in _RUNS:
        _RUNS[key] = run_audit(variant, precision)
    return _RUNS[key]


VARIANTS = list(SMALL_VARIANTS)


def in_library(event) -> bool:
    """Made by the audited code (ours, mmdet, mmengine, mmcv), not by this harness."""
    return bool(event.ours) or event.site.startswith(('mmdet/', 'mmengine/', 'mmcv/'))


def allowed(event, table: Dict[str, str]) -> bool:
    """``table`` maps a function qualname (anywhere on the event's stack) to the reason."""
    return any(name in event.chain for name in table)
