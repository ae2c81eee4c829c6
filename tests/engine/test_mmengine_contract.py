"""The private MMEngine internals our hooks still rely on, pinned so a change fails loudly.

``AtomicCheckpointHook`` re-implements ``CheckpointHook._save_checkpoint_with_step`` (same
bookkeeping, crash-safe order) and wraps ``CheckpointHook._save_best_checkpoint`` (routing its
``runner.save_checkpoint`` call through a temporary name). Neither has a public equivalent. If
MMEngine changes them, these tests fail and name what to review; everything else the hooks read
is public (``runner.cfg``, ``runner.seed``, ``runner.epoch``, ``runner.save_checkpoint``).
Supported: mmengine 0.10.7 and onedl-mmengine 0.10.12, whose versions of these are identical.
"""
import hashlib
import inspect
import textwrap

from mmengine.hooks import CheckpointHook
from mmengine.runner import Runner

from mmdet_ddetr.engine.hooks import AtomicCheckpointHook

# sha256 of the dedented source of the MMEngine methods AtomicCheckpointHook depends on.
PINNED_SOURCES = {
    '_save_checkpoint_with_step': '9b971b6cd3cc507da3041d5432ba5766d048eeebcf8b365df4417729c92d4763',
    '_save_best_checkpoint': 'b66a8a9e45854dcb8985bba7ad9de337c21b353aff56a3af8445f21bc9269744',
}


def _source_hash(fn) -> str:
    return hashlib.sha256(textwrap.dedent(inspect.getsource(fn)).encode()).hexdigest()


def test_overridden_checkpoint_hook_methods_are_unchanged():
    for name, pinned in PINNED_SOURCES.items():
        assert _source_hash(getattr(CheckpointHook, name)) == pinned, (
            f'mmengine changed CheckpointHook.{name}, which AtomicCheckpointHook overrides or '
            f'wraps (mmdet_ddetr/engine/hooks/atomic_checkpoint_hook.py): port the change, '
            f'then update the hash in this test')
        assert name in vars(AtomicCheckpointHook)


def test_checkpoint_hook_still_calls_them():
    """Our overrides only matter if MMEngine's public hook methods route through them."""
    assert 'self._save_checkpoint_with_step(' in inspect.getsource(CheckpointHook._save_checkpoint)
    assert 'self._save_best_checkpoint(' in inspect.getsource(CheckpointHook.after_val_epoch)
    assert 'runner.save_checkpoint(' in inspect.getsource(CheckpointHook._save_best_checkpoint)


def test_runner_save_checkpoint_signature():
    """The call AtomicCheckpointHook makes (and the one it intercepts for best checkpoints)."""
    params = list(inspect.signature(Runner.save_checkpoint).parameters)
    assert params[:9] == ['self', 'out_dir', 'filename', 'file_client_args', 'save_optimizer',
                          'save_param_scheduler', 'meta', 'by_epoch', 'backend_args']


def test_hooks_read_no_private_runner_attributes():
    import mmdet_ddetr.engine.hooks as hooks
    for module in (hooks.atomic_checkpoint_hook, hooks.epoch_reseed_hook,
                   hooks.divergence_guard_hook):
        source = inspect.getsource(module)
        for private in ('runner._', "runner, '_"):
            assert private not in source, f'{module.__name__} reads {private}...'
