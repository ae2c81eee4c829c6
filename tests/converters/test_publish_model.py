"""A published checkpoint is weights + inference metadata, loads with plain weights-only
torch.load, and DetInferencer builds the model from it in a process that imported nothing of
ours; the tool refuses what it cannot publish with one line."""
import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer

from mmdet.registry import MODELS
from tests.conftest import REPO

CONFIG = REPO / 'configs/deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py'
TOOL = REPO / 'tools/model_converters/publish_model.py'


@pytest.fixture(scope='module')
def training_checkpoint(tmp_path_factory):
    """What the Runner writes: weights, optimizer, MessageHub logs (HistoryBuffer, numpy),
    and meta with the config text and the dataset's classes and palette."""
    cfg = Config.fromfile(str(CONFIG))
    model = MODELS.build(cfg.model)
    path = tmp_path_factory.mktemp('train') / 'epoch_1.pth'
    classes = ('circle', 'square', 'triangle')
    torch.save({
        'meta': dict(cfg=cfg.pretty_text, epoch=1, iter=100, seed=np.int64(0),
                     dataset_meta=dict(classes=classes, palette=[(1, 2, 3)] * 3)),
        'state_dict': {f'module.{k}': v for k, v in model.state_dict().items()},
        'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-4}]},
        'message_hub': {'log_scalars': {'train/loss': HistoryBuffer([1.0], [1])}},
    }, path)
    return path


def _publish(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def test_publish_keeps_weights_and_meta_only(training_checkpoint, tmp_path):
    proc = _publish(training_checkpoint, tmp_path / 'ddetr.pth')
    assert proc.returncode == 0, proc.stderr
    published = list(tmp_path.glob('ddetr-*.pth'))
    assert len(published) == 1 and list(tmp_path.iterdir()) == published
    data = published[0].read_bytes()
    assert published[0].name == f'ddetr-{hashlib.sha256(data).hexdigest()[:8]}.pth'
    assert str(published[0]) in proc.stdout and 'MiB' in proc.stdout
    # Plain weights-only loading: nothing of ours allow-listed (the file needs nothing).
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(published[0])) == []
    ckpt = torch.load(published[0], weights_only=True)
    assert set(ckpt) == {'state_dict', 'meta'}
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])
    assert ckpt['meta']['dataset_meta']['classes'] == ('circle', 'square', 'triangle')
    assert ckpt['meta']['seed'] == 0 and 'cfg' in ckpt['meta']
    # The training file itself needs our allow-list (HistoryBuffer).
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(training_checkpoint))


def test_publish_refuses_with_one_line(training_checkpoint, tmp_path):
    existing = tmp_path / 'taken.pth'
    existing.write_bytes(b'x')
    proc = _publish(training_checkpoint, existing)
    assert proc.returncode == 1 and proc.stderr.strip().count('\n') == 0
    assert 'exists' in proc.stderr and existing.read_bytes() == b'x'
    torch.save({'w': torch.ones(1)}, tmp_path / 'plain.pth')
    proc = _publish(tmp_path / 'plain.pth', tmp_path / 'out.pth')
    assert proc.returncode == 1 and 'not a training checkpoint' in proc.stderr
    (tmp_path / 'page.pth').write_text('<html>not found</html>')
    proc = _publish(tmp_path / 'page.pth', tmp_path / 'out.pth')
    assert proc.returncode == 1 and 'not a PyTorch checkpoint' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not list(tmp_path.glob('out*'))


FRESH = '''
import sys, torch, numpy as np, cv2
ckpt = torch.load(sys.argv[1], weights_only=True)
assert not [m for m in sys.modules if m.startswith('mmdet_ddetr')]
from mmdet.apis import DetInferencer
cv2.imwrite(sys.argv[2], (np.random.default_rng(0).random((64, 64, 3)) * 255).astype('uint8'))
inferencer = DetInferencer(model=None, weights=sys.argv[1], device='cpu', show_progress=False)
out = inferencer(sys.argv[2], return_datasamples=True)
pred = out['predictions'][0].pred_instances
print('RESULT', type(inferencer.model).__name__, len(pred.scores), inferencer.model.dataset_meta['classes'])
'''


def test_detinferencer_builds_from_the_published_file_alone(training_checkpoint, tmp_path):
    """In a fresh interpreter: plain torch.load, then DetInferencer(weights=) -- what mmdet's
    demo/image_demo.py IMG FILE.pth does -- imports mmdet_ddetr through the stored config."""
    proc = _publish(training_checkpoint, tmp_path / 'ddetr.pth')
    assert proc.returncode == 0, proc.stderr
    published = next(tmp_path.glob('ddetr-*.pth'))
    run = subprocess.run([sys.executable, '-c', FRESH, str(published), str(tmp_path / 'i.png')],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = next(line for line in run.stdout.splitlines() if line.startswith('RESULT'))
    assert result.split()[1] == 'DDETR' and int(result.split()[2]) > 0
    assert "('circle', 'square', 'triangle')" in result
