"""--resume continues the right run or says why it cannot; no run overwrites another's
checkpoints; load_from fine-tunes partially through our runner (real tools/train.py runs)."""
import shutil

import torch

from tests.engine._helpers import run, train_cmd, write_toy_config

RUNNER = ['--cfg-options', 'runner_type=RegionalCompileRunner']


def _train(cfg, wd, *args, expect_ok=True):
    return run(train_cmd(cfg, wd, *args), timeout=180, expect_ok=expect_ok)


def test_moved_work_dir_resumes_from_its_own_checkpoint(tmp_path):
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=2)
    old = tmp_path / 'old'
    _train(cfg, old)
    moved = tmp_path / 'moved'
    shutil.move(str(old), str(moved))  # last_checkpoint still names old/epoch_2.pth
    assert str(old) in (moved / 'last_checkpoint').read_text()
    before = {p.name: p.stat().st_mtime_ns for p in moved.glob('*.pth')}
    longer = write_toy_config(tmp_path / 'toy3.py', max_epochs=3)
    proc = _train(longer, moved, '--resume')
    assert 'the work dir was moved; resuming from' in proc.stdout
    assert 'Epoch(train) [1]' not in proc.stdout and 'Epoch(train) [3]' in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in moved.glob('epoch_[12].pth')} == before
    assert (moved / 'last_checkpoint').read_text().strip() == str(moved / 'epoch_3.pth')


def test_a_fresh_run_never_overwrites_another_runs_checkpoints(tmp_path):
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=2)
    wd = tmp_path / 'wd'
    _train(cfg, wd)
    before = (wd / 'epoch_1.pth').read_bytes()
    proc = _train(cfg, wd, expect_ok=False)  # same work dir, no --resume
    assert proc.returncode != 0 and 'CheckpointOverwriteError' in proc.stdout
    assert f'{wd / "epoch_1.pth"} already exists' in proc.stdout
    assert (wd / 'epoch_1.pth').read_bytes() == before


def test_resume_of_a_weights_only_file_says_use_load_from(tmp_path):
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=1)
    _train(cfg, tmp_path / 'a')
    from tests.engine._helpers import load_state
    weights = tmp_path / 'weights.pth'
    torch.save({'state_dict': load_state(tmp_path / 'a' / 'epoch_1.pth'), 'meta': {}}, weights)
    proc = _train(cfg, tmp_path / 'b', '--resume', str(weights), *RUNNER, expect_ok=False)
    assert 'ResumeError' in proc.stdout and 'has no training state' in proc.stdout
    assert 'use load_from instead' in proc.stdout and "KeyError: 'epoch'" not in proc.stdout


def test_resume_with_another_model_says_the_model_differs(tmp_path):
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=1)
    _train(cfg, tmp_path / 'a')
    proc = _train(cfg, tmp_path / 'b', '--resume', str(tmp_path / 'a' / 'epoch_1.pth'),
                  '--cfg-options', 'runner_type=RegionalCompileRunner', 'model.hidden=32',
                  expect_ok=False)
    assert 'WeightsMismatchError' in proc.stdout
    assert 'cannot be resumed: it was written by a different model' in proc.stdout


def test_load_from_fine_tunes_partially_and_reports(tmp_path):
    """Through our runner, load_from fills what fits and reports the rest by group (the
    refusal of a checkpoint of which almost nothing fits: tests/models/common)."""
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=1)
    _train(cfg, tmp_path / 'a')
    ckpt = str(tmp_path / 'a' / 'epoch_1.pth')
    proc = _train(cfg, tmp_path / 'b', '--cfg-options', 'runner_type=RegionalCompileRunner',
                  'model.hidden=32', f'load_from={ckpt}')
    # hidden=32: only the last bias of the 16-wide model fits the 32-wide one.
    assert ('loaded 1 of 4 tensors of ToyRegressor; not loaded (kept as initialised): '
            'net.0 (2), net.3 (1)') in proc.stdout
    # Without our runner (mmengine's own), the same load_from is strict: an error, not a
    # silently half-loaded model.
    proc = _train(cfg, tmp_path / 'c', '--cfg-options', 'model.hidden=32', f'load_from={ckpt}',
                  expect_ok=False)
    assert 'WeightsMismatchError' in proc.stdout
