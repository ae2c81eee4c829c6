"""Runner end to end on the GPU: ``tools/train.py --amp`` trains the synthetic quickstart
(Deformable DETR refine + two-stage) for one epoch on a small generated subset, then
``tools/test.py`` evaluates the checkpoint (COCO bbox mAP)."""
import math
import os
import re
import subprocess
import sys

import pytest

from mmdet_ddetr.engine.checkpoint_safety import load_from_local
from tests.conftest import REPO

pytestmark = pytest.mark.cuda

CONFIG = 'configs/deformable_detr/deformable-detr-refine-twostage_r18_1xb4-4e_synthetic.py'


def tool(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f'{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


def test_train_amp_one_epoch_then_test(device, tmp_path):
    if device.type != 'cuda':
        pytest.skip('the tools pick the GPU by themselves; on the CPU this is make demo')
    data = tmp_path / 'synthetic'
    tool('tools/misc/generate_synthetic_dataset.py', '--out', str(data), '--seed', '0',
         '--num-train', '32', '--num-val', '16', '--img-size', '128')
    work = tmp_path / 'work'
    loaders = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loaders += [f'{loader}.dataset.data_root={data}/', f'{loader}.num_workers=0',
                    f'{loader}.persistent_workers=False']
    evaluators = [f'{e}.ann_file={data}/annotations/val.json'
                  for e in ('val_evaluator', 'test_evaluator')]
    train = tool('tools/train.py', CONFIG, '--amp', '--work-dir', str(work), '--cfg-options',
                 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                 'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=2',
                 *loaders, *evaluators)
    log = train.stdout + train.stderr
    checkpoint = work / 'epoch_1.pth'
    assert checkpoint.is_file(), f'no checkpoint after one epoch:\n{log[-3000:]}'
    # AmpOptimWrapper (what --amp selects) saves its loss scaler with the optimizer.
    state = load_from_local(str(checkpoint), map_location='cpu')  # weights-only
    assert 'loss_scaler' in state['optimizer'], sorted(state['optimizer'])
    losses = re.findall(r'\bloss: (\S+)', log)
    assert losses, f'no loss logged:\n{log[-2000:]}'
    assert all(math.isfinite(float(x)) for x in losses), losses
    test = tool('tools/test.py', CONFIG, str(checkpoint), '--work-dir', str(tmp_path / 'test'),
                '--cfg-options', *loaders, *evaluators)
    out = test.stdout + test.stderr
    match = re.search(r'coco/bbox_mAP: (-?[0-9.]+)', out)
    assert match is not None, f'no COCO mAP in the test output:\n{out[-3000:]}'
    assert 0.0 <= float(match.group(1)) <= 1.0
