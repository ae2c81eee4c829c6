"""Stop a diverging run before it is saved: non-finite losses, gradients or weights, and
(optionally) a loss that explodes, named with the iteration and the last good checkpoint."""
from __future__ import annotations

import math
import os.path as osp
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.dist import all_gather_object, get_dist_info, is_distributed
from mmengine.hooks import Hook
from mmengine.optim import AmpOptimWrapper
from mmdet.registry import HOOKS

__all__ = ['DivergenceError', 'DivergenceGuardHook', 'FiniteLossHook', 'NonFiniteLossError',
           'NonFiniteStateError']


class DivergenceError(RuntimeError):
    """Training diverged; carries the 1-based iteration and the offending values."""

    def __init__(self, message: str, iteration: int, terms: Dict[str, float]):
        super().__init__(message)
        self.iteration = iteration
        self.terms = terms


class NonFiniteLossError(DivergenceError):
    """A loss term or the gradient norm is NaN/inf, or the loss exploded."""


class NonFiniteStateError(DivergenceError):
    """A weight or an optimizer state tensor is NaN/inf."""


def _to_float(value: Any) -> Optional[float]:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            # parse_losses already reduced every term; a vector here is a model bug, check all.
            return float('nan') if not torch.isfinite(value).all() else 0.0
        return float(value.detach().float().item())
    if isinstance(value, (int, float, np.floating, np.integer)):
        return float(value)
    return None


def _non_finite(named: Iterable[Tuple[str, torch.Tensor]]) -> List[str]:
    """Names of the floating tensors that hold a NaN/inf: one host sync per device."""
    named = [(n, t) for n, t in named if isinstance(t, torch.Tensor) and t.is_floating_point()]
    by_device: Dict[torch.device, List[int]] = {}
    for i, (_, t) in enumerate(named):
        by_device.setdefault(t.device, []).append(i)
    finite = torch.ones(len(named), dtype=torch.bool)
    for idx in by_device.values():
        finite[idx] = torch.stack([torch.isfinite(named[i][1]).all() for i in idx]).cpu()
    return [named[i][0] for i in (~finite).nonzero().flatten().tolist()]


def _tensors(obj: Any, prefix: str = '') -> Iterable[Tuple[str, torch.Tensor]]:
    """(dotted name, tensor) of every tensor inside nested dicts / lists."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f'{prefix}.{k}' if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f'{prefix}.{i}' if prefix else str(i))


@HOOKS.register_module()
class DivergenceGuardHook(Hook):
    """Stop training with one clear error as soon as it diverges, before anything is saved.

    Checks, and what each costs on a GPU:

    * every ``interval`` iterations, each logged loss term (names containing ``'loss'``, the
      ones mmengine sums) and the gradient norm that ``clip_grad`` logs: the values are read
      back from the ``MessageHub``, where mmengine's ``RuntimeInfoHook`` (which runs first) and
      ``OptimWrapper`` already copied them to the host, so no extra synchronisation. The
      gradient norm is skipped under ``AmpOptimWrapper``, whose dynamic loss scale produces
      (and skips) infinite gradients by design;
    * every ``param_interval`` iterations, the model's parameters: one synchronisation;
    * before every checkpoint is written (``before_save_checkpoint``), its weights and optimizer
      state: a checkpoint with a NaN/inf is never written, so ``last_checkpoint`` and
      ``max_keep_ckpts`` rotation only ever see good files;
    * optionally (``max_loss_ratio``), a total loss above ``max_loss_ratio`` times the median of
      the last ``window`` logged losses (host-side numbers only).

    In distributed training each rank checks its own loss terms and the verdict is all-reduced
    (one scalar per check, a synchronisation), so all ranks stop together and the message lists
    the bad values of every rank; weights are equal on every rank and are checked locally.

    It runs with ``HIGH`` priority: after ``RuntimeInfoHook`` has logged the iteration and
    before ``CheckpointHook`` could save the step's weights.

    Args:
        interval: Check losses and gradient norm every ``interval`` iterations. Defaults to 1.
        param_interval: Check the parameters every ``param_interval`` iterations (0: only
            before saving). Defaults to 50.
        max_loss_ratio: Stop when the total loss exceeds this multiple of its running median
            (None: off). Defaults to None.
        window: Iterations in the running median. Defaults to 50.
        sync_ranks: All-reduce the verdict across ranks. Defaults to True.

    Config::

        default_hooks = dict(divergence_guard=dict(type='DivergenceGuardHook'))
    """

    priority = 'HIGH'

    def __init__(self, interval: int = 1, param_interval: int = 50,
                 max_loss_ratio: Optional[float] = None, window: int = 50,
                 sync_ranks: bool = True) -> None:
        for name, value, low in (('interval', interval, 1), ('param_interval', param_interval, 0),
                                 ('window', window, 2)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(
                    f'{type(self).__name__}({name}={value!r}): {name} must be an int >= {low} '
                    '(a number of training iterations), e.g. interval=1.')
        if max_loss_ratio is not None and not max_loss_ratio > 1:
            raise ValueError(f'{type(self).__name__}(max_loss_ratio={max_loss_ratio!r}) must be '
                             '> 1 (a multiple of the running median loss) or None (off)')
        self.interval = interval
        self.param_interval = param_interval
        self.max_loss_ratio = max_loss_ratio
        self.window = window
        self.sync_ranks = sync_ranks

    # ------------------------------------------------------------------ values
    @staticmethod
    def _logged(runner, name: str, value: Any) -> Optional[float]:
        """``value`` as a float, read from the MessageHub (already on the host) if logged."""
        hub = getattr(runner, 'message_hub', None)
        key = f'train/{name}'
        if hub is not None and key in hub.log_scalars:
            return float(hub.get_scalar(key).current())
        return _to_float(value)

    def _bad_terms(self, runner, outputs: Optional[dict]) -> List[Tuple[str, float]]:
        bad = []
        for name, value in (outputs or {}).items():
            if 'loss' not in name:
                continue
            number = self._logged(runner, name, value)
            if number is not None and not math.isfinite(number):
                bad.append((name, number))
        hub = getattr(runner, 'message_hub', None)
        amp = isinstance(getattr(runner, 'optim_wrapper', None), AmpOptimWrapper)
        if hub is not None and 'train/grad_norm' in hub.log_scalars and not amp:
            norm = float(hub.get_scalar('train/grad_norm').current())
            if not math.isfinite(norm):
                bad.append(('grad_norm', norm))
        return bad

    def _exploded(self, runner, outputs: Optional[dict]) -> List[Tuple[str, float]]:
        hub = getattr(runner, 'message_hub', None)
        if self.max_loss_ratio is None or hub is None or 'train/loss' not in hub.log_scalars:
            return []
        history = np.asarray(hub.get_scalar('train/loss').data[0], dtype=np.float64)
        if len(history) <= self.window // 2:
            return []  # too few iterations for a meaningful median
        median = float(np.median(history[-self.window - 1:-1]))
        current = float(history[-1])
        if median > 0 and current > self.max_loss_ratio * median:
            return [('loss', current), (f'median of the last {self.window}', median)]
        return []

    # ------------------------------------------------------------------ verdicts
    def _any_rank(self, bad: list) -> Optional[list]:
        """None when every rank is fine, else the bad values per rank (or of this rank)."""
        if self.sync_ranks and is_distributed():
            flag = torch.tensor([float(bool(bad))])
            if torch_dist.get_backend() == 'nccl':
                flag = flag.cuda()
            torch_dist.all_reduce(flag)
            if flag.item() == 0:
                return None
            return all_gather_object(bad)  # rare path: only after a failure
        if not bad:
            return None
        rank, world = get_dist_info()
        return [[] for _ in range(rank)] + [bad] if world > 1 else [bad]

    @staticmethod
    def _last_good(runner) -> str:
        # The pointer file, not the MessageHub's last_ckpt: the checkpoint hook records the
        # name there before the file is written, i.e. possibly the one this guard refuses.
        pointer = osp.join(getattr(runner, 'work_dir', '') or '', 'last_checkpoint')
        last = None
        if osp.isfile(pointer):
            with open(pointer) as f:
                last = f.read().strip() or None
        return (f'the last good checkpoint is {last} (resume from it with a lower learning rate)'
                if last else 'no checkpoint was written yet')

    def _stop(self, runner, error_type, what: str, per_rank: list, batch_idx: Optional[int],
              advice: str) -> None:
        multi = len(per_rank) > 1
        described = '; '.join((f'rank {r}: ' if multi else '') +
                              ', '.join(f'{n}={v:.6g}' if isinstance(v, float) else str(n)
                                        for n, v in terms)
                              for r, terms in enumerate(per_rank) if terms)
        iteration = runner.iter + 1  # the 1-based number LoggerHook prints
        where = f'iteration {iteration} (epoch {runner.epoch + 1}'
        if batch_idx is not None:
            try:
                where += f', batch {batch_idx + 1}/{len(runner.train_dataloader)}'
            except TypeError:  # infinite / iterable datasets
                where += f', batch {batch_idx + 1}'
        message = (f'{what} at {where}): {described}. Training stopped before this state was '
                   f'saved; {self._last_good(runner)}. {advice} See docs/troubleshooting.md.')
        runner.logger.error(message)
        terms = {(f'rank{r}/' if multi else '') + n: v for r, t in enumerate(per_rank)
                 for n, v in t if isinstance(v, float)}
        raise error_type(message, iteration, terms)

    # ------------------------------------------------------------------ hooks
    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Optional[dict] = None) -> None:
        """Losses, gradient norm and loss explosion; the parameters every param_interval."""
        if self.every_n_train_iters(runner, self.interval):
            per_rank = self._any_rank(self._bad_terms(runner, outputs))
            if per_rank is not None:
                self._stop(runner, NonFiniteLossError, 'Non-finite loss', per_rank, batch_idx,
                           _LOSS_ADVICE)
            per_rank = self._any_rank(self._exploded(runner, outputs))
            if per_rank is not None:
                self._stop(runner, NonFiniteLossError,
                           f'Loss exploded (over {self.max_loss_ratio}x its running median)',
                           per_rank, batch_idx, _LOSS_ADVICE)
        if self.param_interval and self.every_n_train_iters(runner, self.param_interval):
            model = getattr(runner, 'model', None)
            if model is not None:
                self._check_state(runner, model.named_parameters(), 'Non-finite weights',
                                  batch_idx)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Refuse to write a checkpoint with a NaN/inf weight or optimizer state."""
        named = [*_tensors(checkpoint.get('state_dict', {}), 'state_dict'),
                 *_tensors(checkpoint.get('optimizer', {}), 'optimizer')]
        self._check_state(runner, named, 'Non-finite weights or optimizer state in the '
                          'checkpoint about to be written', None)

    def _check_state(self, runner, named, what: str, batch_idx: Optional[int]) -> None:
        # No all-reduce: weights (and optimizer state) are the same on every rank after DDP's
        # gradient averaging, so every rank reaches the same verdict; and only the main
        # process saves, so a collective in before_save_checkpoint would not be matched.
        bad = _non_finite(named)
        if bad:
            listed = [(n, 'nan/inf') for n in bad[:5]]
            if len(bad) > 5:
                listed.append((f'... {len(bad) - 5} more', ''))
            self._stop(runner, NonFiniteStateError, what, [listed], batch_idx, _LOSS_ADVICE)


_LOSS_ADVICE = ('Usual fixes: lower the learning rate (or enable auto_scale_lr when the total '
                'batch is smaller than the config\'s), keep gradient clipping on '
                '(optim_wrapper.clip_grad=dict(max_norm=0.1, norm_type=2)), check the '
                'annotations for empty/degenerate boxes, and with fp16 use AmpOptimWrapper\'s '
                'dynamic loss scale.')

#: The name configs used before the guard also checked gradients and weights.
FiniteLossHook = DivergenceGuardHook
HOOKS.register_module(name='FiniteLossHook', module=DivergenceGuardHook)
