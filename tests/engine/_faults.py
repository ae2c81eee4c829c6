"""Test-only hooks for training subprocesses (imported through ``custom_imports``, never by the
package).

The fault hooks stop a training process at a precise point so that a test can ``kill -9`` it:
each creates ``marker`` (holding its pid) and then sleeps, so the kill always lands where the
test wants it -- mid-epoch, or in the middle of writing a checkpoint file -- instead of wherever
a timer happens to fire. ``RecordLossHook`` logs every rank's losses for the distributed test.
"""
import json
import os
import time

import torch

from mmengine.dist import get_rank
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook

from mmdet.registry import HOOKS


def _announce_and_hang(marker: str) -> None:
    with open(marker, 'w') as f:
        f.write(str(os.getpid()))
    while True:  # the test kills us with SIGKILL
        time.sleep(60)


@HOOKS.register_module()
class PauseForKillHook(Hook):
    """Hang after training iteration ``iter_in_epoch`` (1-based) of epoch ``epoch`` (1-based)."""

    priority = 'LOWEST'  # after every other after_train_iter hook of that iteration

    def __init__(self, epoch: int, iter_in_epoch: int, marker: str) -> None:
        self.epoch, self.iter_in_epoch, self.marker = epoch, iter_in_epoch, marker

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.epoch + 1 == self.epoch and batch_idx + 1 == self.iter_in_epoch:
            _announce_and_hang(self.marker)


@HOOKS.register_module()
class SlowCheckpointWriteHook(Hook):
    """Make the ``nth`` checkpoint write stop half-way: half the bytes land on disk, then hang.

    Patches ``LocalBackend.put`` (what ``mmengine.runner.save_checkpoint`` writes through) in
    this process only.
    """

    def __init__(self, nth: int, marker: str) -> None:
        self.nth, self.marker = nth, marker

    def before_run(self, runner) -> None:
        original = LocalBackend.put
        state = dict(count=0)
        nth, marker = self.nth, self.marker

        def put(backend, obj, filepath):
            if str(filepath).endswith(('.pth', '.pth.partial')):
                state['count'] += 1
                if state['count'] == nth:
                    os.makedirs(os.path.dirname(str(filepath)), exist_ok=True)
                    with open(filepath, 'wb') as f:
                        f.write(obj[:len(obj) // 2])
                        f.flush()
                        os.fsync(f.fileno())
                    _announce_and_hang(marker)
            return original(backend, obj, filepath)

        LocalBackend.put = put


@HOOKS.register_module()
class RecordLossHook(Hook):
    """Append every rank's logged loss terms per iteration to ``<out_dir>/losses_rank<r>.jsonl``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        row = {k: float(torch.as_tensor(v).detach()) for k, v in (outputs or {}).items()}
        row['iter'] = runner.iter + 1
        with open(os.path.join(self.out_dir, f'losses_rank{get_rank()}.jsonl'), 'a') as f:
            f.write(json.dumps(row) + '\n')


@HOOKS.register_module()
class PoisonWeightsHook(Hook):
    """After training iteration ``at`` (1-based), put a NaN into one weight without touching
    the loss of that iteration: the weights diverged, the logged loss did not (yet)."""

    priority = 'VERY_HIGH'

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.at:
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float('nan')


@HOOKS.register_module()
class FullDiskCheckpointWriteHook(Hook):
    """The ``nth`` checkpoint write fails like a full disk: half the bytes land, then
    ``OSError(ENOSPC)`` (patches ``LocalBackend.put`` in this process only)."""

    def __init__(self, nth: int) -> None:
        self.nth = nth

    def before_run(self, runner) -> None:
        import errno
        original = LocalBackend.put
        state = dict(count=0)
        nth = self.nth

        def put(backend, obj, filepath):
            if str(filepath).endswith(('.pth', '.pth.partial')):
                state['count'] += 1
                if state['count'] == nth:
                    with open(filepath, 'wb') as f:
                        f.write(obj[:len(obj) // 2])
                    raise OSError(errno.ENOSPC, 'No space left on device', str(filepath))
            return original(backend, obj, filepath)

        LocalBackend.put = put
