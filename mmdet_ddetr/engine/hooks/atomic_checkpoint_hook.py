"""A CheckpointHook whose checkpoints and ``last_checkpoint`` pointer are written atomically."""
from __future__ import annotations

import glob
import os
import os.path as osp
import re
import zipfile
from typing import List, Optional, Tuple

from mmengine.dist import barrier, is_main_process
from mmengine.fileio import FileClient, LocalBackend
from mmengine.hooks import CheckpointHook
from mmdet.registry import HOOKS

from mmdet_ddetr.utils.atomic_io import atomic_open, fsync_dir

__all__ = ['AtomicCheckpointHook', 'CheckpointOverwriteError', 'atomic_replace',
           'is_complete_checkpoint']

# Suffix of in-progress files. They start with '.', so neither `ls` nor a glob such as
# 'epoch_*.pth' (what users pass to --resume / load_from by hand) ever shows them.
PARTIAL_SUFFIX = '.partial'


def atomic_replace(tmp_path: str, final_path: str) -> None:
    """Publish a fully written ``tmp_path`` under ``final_path`` in one step.

    ``os.replace`` is atomic on POSIX and Windows when both paths are on the same filesystem
    (they are: same directory), so a reader sees either the old file or the complete new one.
    The data is fsync'ed first so that after a power loss the new name cannot point at blocks
    that never reached the disk; a plain ``kill -9`` would only need the rename. (The file is
    written by ``Runner.save_checkpoint`` under a name we choose, hence not
    :func:`mmdet_ddetr.utils.atomic_io.atomic_write`, whose temporary names are random.)

    Args:
        tmp_path: The complete temporary file.
        final_path: Where it must appear.
    """
    with open(tmp_path, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(tmp_path, final_path)
    fsync_dir(osp.dirname(osp.abspath(final_path)))


def atomic_write_text(path: str, text: str) -> None:
    """Write a small text file (``last_checkpoint``) through a temporary name."""
    with atomic_open(path, 'w') as f:
        f.write(text)


def is_complete_checkpoint(path: str) -> bool:
    """Cheap completeness check for a ``torch.save`` (zip format) file.

    A zip archive ends with its central directory, so a file cut anywhere before the last bytes
    fails ``zipfile.is_zipfile``; no tensor data is read.

    Args:
        path: The file to check.

    Returns:
        Whether ``path`` is a regular file with an intact zip trailer.
    """
    try:
        return osp.isfile(path) and zipfile.is_zipfile(path)
    except OSError:
        return False


class CheckpointOverwriteError(RuntimeError):
    """Saving would replace a checkpoint that this run did not write."""


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that never lets a kill leave a file that resume picks up.

    Differences from MMEngine's ``CheckpointHook`` (all arguments are the same):

    * a checkpoint is written to ``.<name>.partial`` in the output directory and renamed to its
      final name only once complete (see :func:`atomic_replace`);
    * ``last_checkpoint`` is rewritten atomically and only after that rename, so it always names
      a complete file;
    * with ``max_keep_ckpts`` the oldest checkpoint is deleted *after* the new one is in place
      (MMEngine deletes it first, so a kill during the next save leaves ``last_checkpoint``
      pointing at a deleted file);
    * a failed save (full disk, I/O error) removes its partial file at once; saving needs room
      for one checkpoint more than are kept;
    * before an auto-resume (``--resume`` without a path: ``resume=True`` and no ``load_from``
      in the Runner's config) a ``last_checkpoint`` that names a missing or truncated file is
      repaired: a work dir that was moved (the pointer names the old absolute path) resumes
      from the same file in the work dir, a crash during a save by the stock hook from the
      newest complete checkpoint; only when there is none does training start from scratch,
      with a warning. Leftover ``*.partial`` files are removed;
    * a run never overwrites a checkpoint it did not write: when training starts (fresh or
      resumed at step N), a checkpoint of a later step already in the output directory is a
      :class:`CheckpointOverwriteError` naming the file.

    Only local output directories are written atomically; for other backends (object stores,
    whose uploads are all-or-nothing anyway) the hook behaves like ``CheckpointHook``.
    Best-checkpoint files (``save_best``) are also written through a temporary name.

    Config::

        default_hooks = dict(
            checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3))
    """

    # ---------------------------------------------------------------- helpers
    def _is_local(self) -> bool:
        backend = getattr(self, 'file_backend', None)
        if isinstance(backend, FileClient):  # deprecated `file_client_args` path
            backend = backend.client
        return isinstance(backend, LocalBackend)

    def _save_atomic(self, runner, filename: str, meta: dict) -> str:
        """Save ``runner``'s state as ``<out_dir>/<filename>`` through a temporary file.

        Returns:
            The final path.
        """
        final_path = self.file_backend.join_path(self.out_dir, filename)
        local = self._is_local()
        tmp_name = f'.{filename}{PARTIAL_SUFFIX}' if local else filename
        # Runner.save_checkpoint is master_only: on other ranks this is a no-op.
        try:
            runner.save_checkpoint(
                self.out_dir,
                tmp_name,
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
        except BaseException:
            # A full disk or a refused state (DivergenceGuardHook) leaves nothing behind.
            partial = osp.join(self.out_dir, tmp_name)
            if local and osp.lexists(partial):
                os.remove(partial)
            raise
        if local and is_main_process():
            atomic_replace(osp.join(self.out_dir, tmp_name), final_path)
        return final_path

    def _remove_ckpt(self, step: int) -> None:
        path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # deepspeed-style checkpoint directories
            self.file_backend.rmtree(path)

    def _checkpoint_candidates(self, directory: str) -> List[Tuple[int, str]]:
        """(step, path) of the complete checkpoints in ``directory`` named by
        ``filename_tmpl``, oldest first."""
        pattern = re.escape(self.filename_tmpl).replace(re.escape('{}'), r'(\d+)')
        found = []
        for path in glob.glob(osp.join(directory, '*')):
            m = re.fullmatch(pattern, osp.basename(path))
            if m and is_complete_checkpoint(path):
                found.append((int(m.group(1)), path))
        return sorted(found)

    # ------------------------------------------------------------------ hooks
    def before_run(self, runner) -> None:
        """Repair the auto-resume pointer before ``Runner.load_or_resume`` reads it."""
        super().before_run(runner)
        # The Runner's config (public) rather than its private _resume / _load_from: what
        # tools/train.py, mmdet's and mim's train tools set for --resume.
        auto_resume = runner.cfg.get('resume', False) and runner.cfg.get('load_from') is None
        if auto_resume and is_main_process():
            self._repair_last_checkpoint(runner)
        # Every rank reads last_checkpoint right after this hook.
        barrier()

    def before_train(self, runner) -> None:
        """Resolve the output directory, drop ``*.partial`` files of killed runs, and refuse
        to start where a later checkpoint of another run would be overwritten."""
        super().before_train(runner)
        if self._is_local() and is_main_process():
            for stale in glob.glob(osp.join(self.out_dir, f'.*{PARTIAL_SUFFIX}')):
                # Never complete and never named by last_checkpoint: safe to delete.
                runner.logger.warning(f'Removing incomplete checkpoint file {stale}')
                os.remove(stale)
            self._refuse_overwrites(runner)

    def _refuse_overwrites(self, runner) -> None:
        start = runner.epoch if self.by_epoch else runner.iter
        later = [path for step, path in self._checkpoint_candidates(self.out_dir) if step > start]
        if later:
            unit = 'epoch' if self.by_epoch else 'iteration'
            raise CheckpointOverwriteError(
                f'{later[0]} already exists and this run, starting at {unit} {start}, would '
                f'overwrite it: it belongs to another run (or to a later point of this one). '
                f'Resume the run that wrote it (--resume), or train into another --work-dir, '
                f'or move the old checkpoints away ({len(later)} file(s) after {unit} {start}).')

    def _repair_last_checkpoint(self, runner) -> None:
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        if not osp.isfile(pointer):
            return
        with open(pointer) as f:
            target = f.read().strip()
        if target and ('://' in target or osp.isdir(target)
                       or is_complete_checkpoint(target)):
            return  # fine, or not a local file we can judge (remote URI, deepspeed dir)
        moved = osp.join(runner.work_dir, osp.basename(target)) if target else ''
        if moved and not osp.exists(target) and is_complete_checkpoint(moved):
            runner.logger.warning(
                f'{pointer} names {target!r}, which does not exist: the work dir was moved; '
                f'resuming from {moved}.')
            atomic_write_text(pointer, moved)
            return
        directory = osp.dirname(target) if target else ''
        if not directory or not osp.isdir(directory):
            directory = runner.work_dir
        candidates = self._checkpoint_candidates(directory)
        if candidates:
            runner.logger.warning(
                f'{pointer} names {target!r}, which is missing or incomplete (a run was '
                f'probably killed while saving); resuming from {candidates[-1][1]} instead.')
            atomic_write_text(pointer, candidates[-1][1])
        else:
            runner.logger.warning(
                f'{pointer} names {target!r}, which is missing or incomplete, and no complete '
                'checkpoint was found next to it; training starts from scratch.')
            os.remove(pointer)

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        """Same bookkeeping as ``CheckpointHook``, in crash-safe order."""
        to_remove: Optional[int] = None
        if self.max_keep_ckpts > 0:
            # _save_checkpoint and _save_best_checkpoint may both save in one step.
            if not (len(self.keep_ckpt_ids) > 0 and self.keep_ckpt_ids[-1] == step):
                if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                    to_remove = self.keep_ckpt_ids.popleft()
                self.keep_ckpt_ids.append(step)
                runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     self.filename_tmpl.format(step))
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        self._save_atomic(runner, self.filename_tmpl.format(step), meta)

        if not is_main_process():
            return
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if to_remove is not None and to_remove != step:
            self._remove_ckpt(to_remove)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """Let ``CheckpointHook`` pick the best checkpoint, but write it atomically."""
        original = runner.save_checkpoint

        def save_best(out_dir, filename, *args, **kwargs):
            # Same call as CheckpointHook makes, routed through a temporary name.
            local = self._is_local() and out_dir == self.out_dir
            tmp_name = f'.{filename}{PARTIAL_SUFFIX}' if local else filename
            original(out_dir, tmp_name, *args, **kwargs)
            if local and is_main_process():
                atomic_replace(osp.join(out_dir, tmp_name), osp.join(out_dir, filename))

        runner.save_checkpoint = save_best  # instance attribute: shadows the method briefly
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            del runner.save_checkpoint
