"""kill -9 at the worst moments, then resume: real training processes (toy model, fast).

The toy model trains in milliseconds through the real Runner, tools/train.py and the project's
hooks; each test still starts 2-3 Python processes (~8 s each, mostly importing mmdet), so the two
core scenarios run in the default suite and the rest are marked slow. The same scenarios with
the DDETR model are in test_ddetr_kill_resume.py (slow).
"""
from pathlib import Path

import pytest
import torch

from mmdet_ddetr.engine.hooks import atomic_replace, is_complete_checkpoint
from tests.engine._helpers import (load_checkpoint, load_state, max_abs_diff, run,
                                   run_until_marker_then_kill, train_cmd, write_toy_config)

from tests.engine._helpers import TOY_EPOCHS as EPOCHS


def pause_hook(marker: Path, epoch: int, it: int) -> str:
    return f"[dict(type='PauseForKillHook', epoch={epoch}, iter_in_epoch={it}, marker='{marker}')]"


def slow_write_hook(marker: Path, nth: int) -> str:
    return f"[dict(type='SlowCheckpointWriteHook', nth={nth}, marker='{marker}')]"


@pytest.fixture
def reference(toy_reference) -> Path:
    """The final checkpoint of the uninterrupted run every interrupted one must reproduce."""
    return toy_reference / f'epoch_{EPOCHS}.pth'


def assert_same_weights(a: Path, b: Path) -> None:
    diff = max_abs_diff(load_state(a), load_state(b))
    # Same kernels, same data order, same random streams on one CPU thread: bit-identical.
    assert diff == 0.0, f'final weights differ by up to {diff}'
    opt_a = load_checkpoint(a)['optimizer']['state']
    opt_b = load_checkpoint(b)['optimizer']['state']
    for k in opt_a:
        for name in ('exp_avg', 'exp_avg_sq'):
            assert torch.equal(opt_a[k][name], opt_b[k][name])


def test_kill_mid_epoch_then_resume_matches_uninterrupted(reference, tmp_path):
    wd = tmp_path / 'wd'
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=EPOCHS,
                           custom_hooks=pause_hook(tmp_path / 'marker', epoch=2, it=5))
    run_until_marker_then_kill(train_cmd(cfg, wd), tmp_path / 'marker', timeout=120)
    assert (wd / 'last_checkpoint').read_text().strip().endswith('epoch_1.pth')
    assert not (wd / 'epoch_2.pth').exists()

    resumed_cfg = write_toy_config(tmp_path / 'toy_resume.py', max_epochs=EPOCHS)
    out = run(train_cmd(resumed_cfg, wd, '--resume'), timeout=120).stdout
    assert 'resumed epoch: 1' in out
    assert_same_weights(reference, wd / f'epoch_{EPOCHS}.pth')


def test_kill_while_writing_a_checkpoint_leaves_nothing_resume_trips_on(reference, tmp_path):
    wd = tmp_path / 'wd'
    # max_keep_ckpts=1: mmengine's own hook deletes epoch_1.pth *before* writing epoch_2.pth.
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=EPOCHS, max_keep=1,
                           custom_hooks=slow_write_hook(tmp_path / 'marker', nth=2))
    run_until_marker_then_kill(train_cmd(cfg, wd), tmp_path / 'marker', timeout=120)

    partial = wd / '.epoch_2.pth.partial'
    assert partial.exists() and not is_complete_checkpoint(partial)  # the kill hit mid-write
    assert not (wd / 'epoch_2.pth').exists()
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'epoch_1.pth')
    assert is_complete_checkpoint(wd / 'epoch_1.pth')

    resumed_cfg = write_toy_config(tmp_path / 'toy_resume.py', max_epochs=EPOCHS, max_keep=1)
    out = run(train_cmd(resumed_cfg, wd, '--resume'), timeout=120).stdout
    assert 'resumed epoch: 1' in out and 'Removing incomplete checkpoint file' in out
    assert not partial.exists()
    assert sorted(p.name for p in wd.glob('*.pth')) == [f'epoch_{EPOCHS}.pth']  # max_keep=1
    assert_same_weights(reference, wd / f'epoch_{EPOCHS}.pth')


@pytest.mark.slow
def test_explicit_resume_path_after_kill(reference, tmp_path):
    """--resume <ckpt> (not auto) from the checkpoint that survived."""
    wd = tmp_path / 'wd'
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=EPOCHS,
                           custom_hooks=slow_write_hook(tmp_path / 'marker', nth=3))
    run_until_marker_then_kill(train_cmd(cfg, wd), tmp_path / 'marker', timeout=120)
    assert not (wd / 'epoch_3.pth').exists()
    resumed_cfg = write_toy_config(tmp_path / 'toy_resume.py', max_epochs=EPOCHS)
    run(train_cmd(resumed_cfg, wd, '--resume', str(wd / 'epoch_2.pth')), timeout=120)
    assert_same_weights(reference, wd / f'epoch_{EPOCHS}.pth')


@pytest.mark.slow
def test_stock_hook_breaks_resume_and_atomic_hook_recovers(tmp_path):
    """Why the hook exists: with mmengine's CheckpointHook (max_keep_ckpts=1) a kill during a
    save leaves last_checkpoint naming a deleted file and a truncated epoch_2.pth, and
    --resume crashes. The atomic hook repairs such a directory instead of crashing."""
    wd = tmp_path / 'wd'
    cfg = write_toy_config(tmp_path / 'stock.py', max_epochs=EPOCHS, max_keep=1,
                           ckpt_hook='CheckpointHook',
                           custom_hooks=slow_write_hook(tmp_path / 'marker', nth=2))
    run_until_marker_then_kill(train_cmd(cfg, wd), tmp_path / 'marker', timeout=120)
    assert not (wd / 'epoch_1.pth').exists()  # deleted before the new one was complete
    assert (wd / 'epoch_2.pth').exists() and not is_complete_checkpoint(wd / 'epoch_2.pth')

    stock = write_toy_config(tmp_path / 'stock_resume.py', max_epochs=EPOCHS,
                             ckpt_hook='CheckpointHook', max_keep=1)
    failed = run(train_cmd(stock, wd, '--resume'), timeout=120, expect_ok=False)
    assert failed.returncode != 0 and 'epoch_1.pth can not be found' in failed.stdout

    atomic = write_toy_config(tmp_path / 'atomic_resume.py', max_epochs=EPOCHS, max_keep=1)
    out = run(train_cmd(atomic, wd, '--resume'), timeout=120).stdout
    assert 'missing or incomplete' in out
    assert is_complete_checkpoint(wd / f'epoch_{EPOCHS}.pth')


@pytest.mark.slow
def test_repair_points_last_checkpoint_at_newest_complete_file(tmp_path):
    wd = tmp_path / 'wd'
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=2)
    run(train_cmd(cfg, wd), timeout=120)
    # A truncated epoch_3.pth named by last_checkpoint (as a non-atomic writer would leave it).
    data = (wd / 'epoch_2.pth').read_bytes()
    (wd / 'epoch_3.pth').write_bytes(data[:len(data) // 3])
    (wd / 'last_checkpoint').write_text(str(wd / 'epoch_3.pth'))
    cfg3 = write_toy_config(tmp_path / 'toy3.py', max_epochs=3)
    out = run(train_cmd(cfg3, wd, '--resume'), timeout=120).stdout
    assert f'resuming from {wd / "epoch_2.pth"} instead' in out
    assert 'resumed epoch: 2' in out
    assert is_complete_checkpoint(wd / 'epoch_3.pth')


def test_atomic_replace_and_completeness(tmp_path):
    good = tmp_path / 'a.pth'
    torch.save({'w': torch.ones(3)}, good)
    assert is_complete_checkpoint(good)
    tmp = tmp_path / '.b.pth.partial'
    tmp.write_bytes(good.read_bytes())
    atomic_replace(str(tmp), str(tmp_path / 'b.pth'))
    assert not tmp.exists() and is_complete_checkpoint(tmp_path / 'b.pth')
    (tmp_path / 'cut.pth').write_bytes(good.read_bytes()[:-10])
    assert not is_complete_checkpoint(tmp_path / 'cut.pth')
    assert not is_complete_checkpoint(tmp_path / 'nope.pth')


def test_failed_save_removes_its_partial_file_at_once(tmp_path):
    """A full disk during the second save: the error propagates, the half-written file is gone
    (no hidden .partial waits for the next run), last_checkpoint names the first checkpoint."""
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=3, custom_hooks=(
        "[dict(type='FullDiskCheckpointWriteHook', nth=2)]"))
    wd = tmp_path / 'wd'
    proc = run(train_cmd(cfg, wd), timeout=120, expect_ok=False)
    assert proc.returncode != 0 and 'No space left on device' in proc.stdout
    assert sorted(p.name for p in wd.iterdir() if p.suffix == '.pth' or 'partial' in p.name) \
        == ['epoch_1.pth']
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'epoch_1.pth')
