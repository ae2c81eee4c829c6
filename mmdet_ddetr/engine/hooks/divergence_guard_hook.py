"""Stop training at the first non-finite loss, naming the iteration and every bad term."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.dist import all_gather_object, get_dist_info, is_distributed
from mmengine.hooks import Hook
from mmdet.registry import HOOKS

__all__ = ['FiniteLossHook', 'NonFiniteLossError']


class NonFiniteLossError(RuntimeError):
    """Raised by :class:`FiniteLossHook`; carries the iteration and the offending terms."""

    def __init__(self, message: str, iteration: int, terms: Dict[str, float]):
        super().__init__(message)
        self.iteration = iteration
        self.terms = terms


def _to_float(value: Any) -> Optional[float]:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            # parse_losses already reduced every term; a vector here is a model bug, check all.
            return float('nan') if not torch.isfinite(value).all() else 0.0
        return float(value.detach().float().item())
    if isinstance(value, (int, float)):
        return float(value)
    return None


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise :class:`NonFiniteLossError` as soon as any loss term is NaN or infinite.

    mmdet's ``CheckInvalidLossHook`` only looks at the summed ``loss`` every 50 iterations and
    fails with a bare assertion. This hook checks every ``interval`` iterations (default: all),
    looks at each logged term whose name contains ``'loss'`` (``loss_cls``, ``d3.loss_bbox``,
    ``enc_loss_iou``, ...; the same rule MMEngine uses to sum them), and reports the iteration,
    epoch and all non-finite terms with their values.

    It runs with ``VERY_HIGH`` priority, i.e. before ``CheckpointHook`` in the same
    ``after_train_iter``: the weights of the failing step (already updated with non-finite
    gradients) are never written to a checkpoint, so the last checkpoint stays usable.

    In distributed training every rank checks its own terms and the verdict is all-reduced, so
    all ranks stop together (a rank that raised alone would leave the others hanging in the next
    collective) and the message lists the bad terms of every rank.

    Args:
        interval: Check every ``interval`` training iterations. Defaults to 1.
        sync_ranks: All-reduce the verdict across ranks (one scalar per check). Only set it to
            False if your model already synchronises its loss terms. Defaults to True.

    Config::

        default_hooks = dict(finite_loss=dict(type='FiniteLossHook'))
    """

    priority = 'VERY_HIGH'

    def __init__(self, interval: int = 1, sync_ranks: bool = True) -> None:
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ValueError(
                f'FiniteLossHook(interval={interval!r}): interval must be a positive int '
                '(number of training iterations between checks), e.g. interval=1.')
        self.interval = interval
        self.sync_ranks = sync_ranks

    @staticmethod
    def _bad_terms(outputs: Optional[dict]) -> List[Tuple[str, float]]:
        bad = []
        for name, value in (outputs or {}).items():
            if 'loss' not in name:
                continue
            number = _to_float(value)
            if number is not None and not math.isfinite(number):
                bad.append((name, number))
        return bad

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Any = None,
                         outputs: Optional[dict] = None) -> None:
        """Check the loss terms returned by ``train_step`` for this iteration."""
        if not self.every_n_train_iters(runner, self.interval):
            return
        bad = self._bad_terms(outputs)
        synced = self.sync_ranks and is_distributed()
        if synced:
            flag = torch.tensor([float(bool(bad))])
            if torch_dist.get_backend() == 'nccl':
                flag = flag.cuda()
            torch_dist.all_reduce(flag)
            if flag.item() == 0:
                return
            per_rank = all_gather_object(bad)  # rare path: only after a failure
        elif not bad:
            return
        else:
            per_rank = None

        iteration = runner.iter + 1  # the 1-based number LoggerHook prints
        if per_rank is not None:
            parts = [f'rank {r}: ' + ', '.join(f'{n}={v}' for n, v in terms)
                     for r, terms in enumerate(per_rank) if terms]
            described = '; '.join(parts)
            terms = {f'rank{r}/{n}': v for r, t in enumerate(per_rank) for n, v in t}
        else:
            rank, world = get_dist_info()
            described = ', '.join(f'{n}={v}' for n, v in bad)
            if world > 1:
                described = f'rank {rank}: {described}'
            terms = dict(bad)
        try:
            epoch_len = f'/{len(runner.train_dataloader)}'
        except TypeError:  # infinite / iterable datasets
            epoch_len = ''
        message = (
            f'Non-finite loss at iteration {iteration} (epoch {runner.epoch + 1}, batch '
            f'{batch_idx + 1}{epoch_len}): {described}. Training stopped; this step\'s weights '
            'were not checkpointed, so the last checkpoint is still good to resume from. Usual '
            'fixes: lower the learning rate (or enable auto_scale_lr when the total batch is '
            'smaller than the config\'s), keep gradient clipping on '
            '(optim_wrapper.clip_grad=dict(max_norm=0.1, norm_type=2)), check the annotations '
            'for empty/degenerate boxes, and with fp16 use AmpOptimWrapper\'s dynamic loss '
            'scale. See docs/troubleshooting.md.')
        runner.logger.error(message)
        raise NonFiniteLossError(message, iteration, terms)
