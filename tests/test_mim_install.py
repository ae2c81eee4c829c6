"""`mim train/test/run/search mmdet_ddetr ...` after the README install of a fresh clone.

The README install (`make install`) of a copy of this working tree into a new virtual env --
what a new user gets -- then mim is run from a directory outside the checkout on a tiny
dataset (2 training images, 1 iteration). Slow: the install alone takes 1-3 minutes with
pip's wheel cache warm (mmcv is compiled once per machine, then reused from the cache).
"""
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = 'deformable-detr_r18_1xb8-quickstart_synthetic.py'


def copy_working_tree(dst: Path) -> None:
    """Copy what a clone of this working tree holds: tracked and untracked-but-not-ignored
    files (so uncommitted edits are tested), no build outputs, envs or egg-info."""
    listed = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=REPO,
        check=True, capture_output=True).stdout.decode().split('\0')
    for rel in filter(None, listed):
        src = REPO / rel
        if not os.path.lexists(src):  # deleted in the working tree, not yet committed
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst / rel)
        else:
            shutil.copy2(src, dst / rel)


def clean_env(**extra: str) -> Dict[str, str]:
    """No PYTHONPATH: the clone's install alone must make the package importable."""
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1', **extra)
    return env


def run(cmd: List[str], cwd: Path, timeout: float, **env: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=clean_env(**env), timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, (f'{" ".join(cmd)} (in {cwd}) exited with '
                                  f'{proc.returncode}:\n{proc.stdout[-6000:]}')
    return proc.stdout


def tiny_data_options(data: Path) -> List[str]:
    """--cfg-options that point the synthetic config at ``data`` and shrink it to one epoch
    of one batch, evaluated once, in-process data loading."""
    root = f'{data}/'
    options = [f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader',
                                                'test_dataloader')
               for key in (f'dataset.data_root={root}', 'num_workers=0',
                           'persistent_workers=False')]
    options += [f'{ev}.ann_file={root}annotations/val.json'
                for ev in ('val_evaluator', 'test_evaluator')]
    options += ['train_dataloader.batch_size=2', 'train_cfg.max_epochs=1',
                'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1',
                'default_hooks.logger.interval=1']
    return ['--cfg-options', *options]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the install alone can take 20 min on 2 busy cores
def test_mim_train_test_run_from_another_directory(tmp_path):
    clone, venv, elsewhere = tmp_path / 'clone', tmp_path / 'venv', tmp_path / 'elsewhere'
    copy_working_tree(clone)
    elsewhere.mkdir()
    run(['make', 'install'], cwd=clone, timeout=1800, VENV=str(venv))
    mim = str(venv / 'bin' / 'mim')

    data = tmp_path / 'data'
    run([str(venv / 'bin' / 'python'), str(clone / 'tools/misc/generate_synthetic_dataset.py'),
         '--out', str(data), '--num-train', '2', '--num-val', '1', '--quiet'],
        cwd=elsewhere, timeout=300)

    work_dir = tmp_path / 'work'
    out = run([mim, 'train', 'mmdet_ddetr', CONFIG, '--work-dir', str(work_dir),
               *tiny_data_options(data)], cwd=elsewhere, timeout=900)
    # mim resolved the config name to the clone's configs/ (through the installed package).
    assert f'will use {clone / "configs" / "deformable_detr" / CONFIG}' in out
    assert 'Epoch(train) [1][1/1]' in out
    assert 'coco/bbox_mAP' in out
    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.is_file()

    out = run([mim, 'test', 'mmdet_ddetr', CONFIG, '--checkpoint', str(checkpoint),
               '--work-dir', str(tmp_path / 'test'), *tiny_data_options(data)],
              cwd=elsewhere, timeout=600)
    assert 'Epoch(test) [1/1]' in out and 'coco/bbox_mAP' in out

    # mim run finds a tool in a sub-folder of tools/ by its name.
    run([mim, 'run', 'mmdet_ddetr', 'generate_synthetic_dataset', '--out', str(tmp_path / 'run'),
         '--num-train', '1', '--num-val', '1', '--quiet'], cwd=elsewhere, timeout=300)
    assert (tmp_path / 'run' / 'annotations' / 'val.json').is_file()

    # mim search / list read the install's .mim/model-index.yml (docs/model_index.md).
    out = run([mim, 'search', 'mmdet_ddetr', '--valid-config'], cwd=elsewhere, timeout=300)
    assert f"'{CONFIG[:-3]}'" in out and "'smca-detr_r50_8xb2-50e_coco'" in out
    assert 'mmdet-ddetr' in run([mim, 'list'], cwd=elsewhere, timeout=300)

    # `pip uninstall` takes everything the install added, mim's link included.
    site = run([str(venv / 'bin' / 'python'), '-c',
                'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
               cwd=elsewhere, timeout=60).strip()
    assert os.path.islink(os.path.join(site, 'mmdet_ddetr'))
    run([str(venv / 'bin' / 'python'), '-m', 'pip', 'uninstall', '-y', 'mmdet_ddetr'],
        cwd=elsewhere, timeout=120)
    assert not os.path.lexists(os.path.join(site, 'mmdet_ddetr'))
    gone = subprocess.run([str(venv / 'bin' / 'python'), '-c', 'import mmdet_ddetr'],
                          cwd=elsewhere, env=clean_env(), capture_output=True, text=True)
    assert gone.returncode != 0 and 'ModuleNotFoundError' in gone.stderr
