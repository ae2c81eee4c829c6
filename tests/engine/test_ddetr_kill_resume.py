"""kill -9 a real DDETR training process (tiny config on synthetic data), resume, finish: the
final weights equal those of an uninterrupted run. Slow (~3 min): `make test-slow`.

The fast equivalents with a toy model are in test_atomic_checkpoint.py. This variant adds what
only the real model has: the mmcv deformable-attention op, Hungarian matching, the quickstart
config's data pipeline (random flips) and dropout, and a validation between epochs -- which is
what makes the uninterrupted and the resumed run draw different random numbers unless
EpochReseedHook reseeds every epoch.
"""
from pathlib import Path

import pytest

from mmdet_ddetr.engine.hooks import is_complete_checkpoint
from tests.engine._ddetr import make_tiny_dataset, write_ddetr_config
from tests.engine._helpers import (load_state, max_abs_diff, run, run_until_marker_then_kill,
                                   train_cmd)

pytestmark = pytest.mark.slow

EPOCHS = 3  # 8 images, batch 2: 4 iterations per epoch; validation after every epoch


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp('synthetic') / 'data')


@pytest.fixture(scope='module')
def reference(data, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp('ddetr_reference')
    cfg = write_ddetr_config(tmp / 'cfg.py', data, max_epochs=EPOCHS)
    run(train_cmd(cfg, tmp / 'wd'), timeout=600)
    return tmp / 'wd' / f'epoch_{EPOCHS}.pth'


def assert_same_weights(reference: Path, resumed: Path) -> None:
    diff = max_abs_diff(load_state(reference), load_state(resumed))
    # One CPU thread, deterministic kernels, same data order and random streams: expected to be
    # bit-identical; 1e-6 is the contract.
    assert diff <= 1e-6, f'final weights differ by up to {diff}'


def test_ddetr_kill_mid_epoch_then_resume(data, reference, tmp_path):
    wd = tmp_path / 'wd'
    marker = tmp_path / 'marker'
    cfg = write_ddetr_config(
        tmp_path / 'cfg.py', data, max_epochs=EPOCHS,
        custom_hooks=f"[dict(type='PauseForKillHook', epoch=2, iter_in_epoch=2, "
        f"marker='{marker}')]")
    run_until_marker_then_kill(train_cmd(cfg, wd), marker, timeout=600)
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'epoch_1.pth')

    resume_cfg = write_ddetr_config(tmp_path / 'resume.py', data, max_epochs=EPOCHS)
    out = run(train_cmd(resume_cfg, wd, '--resume'), timeout=600).stdout
    assert 'resumed epoch: 1' in out
    assert_same_weights(reference, wd / f'epoch_{EPOCHS}.pth')


def test_ddetr_kill_during_checkpoint_write_then_resume(data, reference, tmp_path):
    wd = tmp_path / 'wd'
    marker = tmp_path / 'marker'
    cfg = write_ddetr_config(
        tmp_path / 'cfg.py', data, max_epochs=EPOCHS,
        custom_hooks=f"[dict(type='SlowCheckpointWriteHook', nth=2, marker='{marker}')]")
    run_until_marker_then_kill(train_cmd(cfg, wd), marker, timeout=600)
    assert not (wd / 'epoch_2.pth').exists()
    assert not is_complete_checkpoint(wd / '.epoch_2.pth.partial')
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'epoch_1.pth')

    resume_cfg = write_ddetr_config(tmp_path / 'resume.py', data, max_epochs=EPOCHS)
    out = run(train_cmd(resume_cfg, wd, '--resume'), timeout=600).stdout
    assert 'resumed epoch: 1' in out
    assert_same_weights(reference, wd / f'epoch_{EPOCHS}.pth')


def test_ddetr_load_from_runner_checkpoint(data, reference, tmp_path):
    """load_from (fine-tuning start) a Runner checkpoint under weights-only loading."""
    cfg = write_ddetr_config(tmp_path / 'cfg.py', data, max_epochs=1, validate=False)
    out = run(train_cmd(cfg, tmp_path / 'wd', '--cfg-options', f'load_from={reference}'),
              timeout=600).stdout
    assert f'Load checkpoint from {reference}' in out


def test_ddetr_save_best_with_atomic_hook(data, tmp_path):
    """save_best through the atomic hook: a complete best file, no temporary file left over."""
    wd = tmp_path / 'wd'
    cfg = write_ddetr_config(tmp_path / 'cfg.py', data, max_epochs=1)
    out = run(train_cmd(cfg, wd, '--cfg-options',
                        'default_hooks.checkpoint.save_best=coco/bbox_mAP_50'),
              timeout=600).stdout
    best = wd / 'best_coco_bbox_mAP_50_epoch_1.pth'
    assert 'The best checkpoint' in out
    assert is_complete_checkpoint(best) and is_complete_checkpoint(wd / 'epoch_1.pth')
    assert not list(wd.glob('.*.partial'))
    assert load_state(best).keys() == load_state(wd / 'epoch_1.pth').keys()
